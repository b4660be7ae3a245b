"""Issue 20 item 4 (containment) and the non-JSON policy item, through the real CLI.

Asset paths stay in the bundled assets directory; renderings and upload sources stay in
the deployment directory. A literal escape is a located validate error (exit 2, nothing
run); one that only appears once an expression is rendered fails its step at run time
before anything is read or written.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from elematrix_tui.actions.aws_kinds import asset_json, asset_text
from elematrix_tui.engine.action import ActionFailed
from elematrix_tui.engine.containment import PathEscape, deployment_path

from .conftest import cli

ESCAPES = """runbook: escapes
params: []
phases:
  - id: one
    steps:
      - id: role
        action: aws.ensure
        with: {kind: iam_role, name: r, spec: {trust_policy: ../../../../etc/passwd}}
      - id: inline
        action: aws.ensure
        with: {kind: iam_role, name: r2, spec: {inline_policies: {x: /etc/hostname}}}
      - id: param
        action: aws.ensure
        with: {kind: ssm_parameter, name: p, spec: {asset: ~/.config/elematrix/secrets.json}}
      - id: instance
        action: aws.ensure
        with: {kind: instance, name: i, spec: {image_id: ami-1, security_group_ids: [sg-1],
               user_data: aws/../../../../../root/.ssh/id_ed25519}}
      - id: render
        action: stack.render
        with: {server_name: chat.example.org, public_address: 192.0.2.1, out_dir: ../../..}
      - id: upload
        action: ssh.upload
        with: {host: local, source: ../../../.ssh, dest: /tmp/elematrix-never}
      - id: notjson
        action: aws.ensure
        with: {kind: iam_role, name: r3, spec: {trust_policy: cloud-init/user-data.yaml}}
"""


def test_literal_escapes_are_located_validate_errors(elematrix: str, tmp_path: Path) -> None:
    path = tmp_path / "escapes.yaml"
    path.write_text(ESCAPES)
    res = cli(elematrix, "validate", str(path))
    assert res.returncode == 2, res.stdout
    assert "Traceback" not in res.stderr
    lines = res.stderr.splitlines()

    def error_of(step: str) -> str:
        hits = [ln for ln in lines if f"step {step!r}" in ln]
        assert hits, (step, res.stderr)
        assert hits[0].startswith(f"{path}:"), hits[0]
        return hits[0] + "\n" + "\n".join(lines[lines.index(hits[0]) + 1:][:3])

    assert "leaves the bundled assets directory" in error_of("role")
    assert "not an absolute path" in error_of("inline")
    assert "not an absolute path" in error_of("param")
    assert "leaves the bundled assets directory" in error_of("instance")
    assert "leaves the deployment directory" in error_of("render")
    assert "leaves the deployment directory" in error_of("upload")
    assert "is not JSON (asset line" in error_of("notjson")


RUNTIME = """runbook: runtime-escape
params:
  - {name: src, type: string}
phases:
  - id: one
    steps:
      - id: upload
        action: ssh.upload
        with: {host: local, source: "{{ params.src }}", dest: "%s"}
"""


def test_rendered_escape_fails_the_step_and_copies_nothing(elematrix: str,
                                                           tmp_path: Path) -> None:
    secret_dir = tmp_path / "home" / ".ssh"
    secret_dir.mkdir(parents=True)
    (secret_dir / "id_ed25519").write_text("PRIVATE")
    dest = tmp_path / "dest"
    path = tmp_path / "rt.yaml"
    path.write_text(RUNTIME % dest)
    assert cli(elematrix, "validate", str(path)).returncode == 0
    res = cli(elematrix, "run", str(path), "--deployment", "rt", "--yes", "--set",
              f"src={secret_dir}")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "outside the deployment directory" in res.stdout, res.stdout
    assert not dest.exists()
    res = cli(elematrix, "plan", str(path), "--deployment", "rt", "--set", "src=../../x")
    assert res.returncode == 0, res.stderr
    assert "REFUSED at run time: source: '../../x' leaves the deployment directory" in res.stdout


def test_a_link_inside_the_deployment_dir_cannot_lead_out(tmp_path: Path) -> None:
    ddir = tmp_path / "dep"
    ddir.mkdir()
    (ddir / "stack").symlink_to(Path.home())
    with pytest.raises(PathEscape, match="outside the deployment directory"):
        deployment_path(ddir, "stack", what="source")
    with pytest.raises(PathEscape):
        deployment_path(ddir, str(tmp_path), what="source")
    assert deployment_path(ddir, str(ddir / "x"), what="source") == (ddir / "x").resolve()


def test_assets_are_read_only_from_the_assets_dir() -> None:
    with pytest.raises(PathEscape):
        asset_text("../../../../../../etc/hostname")
    with pytest.raises(PathEscape):
        asset_text(os.path.abspath("/etc/hostname"))
    assert "Version" in asset_text("aws/ec2-trust-policy.json")


def test_non_json_policy_and_quote_injection_are_operator_errors() -> None:
    with pytest.raises(ActionFailed, match=r"cloud-init/user-data.yaml:1:1: not JSON"):
        asset_json("cloud-init/user-data.yaml")
    # A quote in a variable stays inside its JSON string: no statement can be added.
    doc = asset_json("aws/backup-role-policy.json",
                     {"bucket_arn": 'arn:aws:s3:::b", "Action": "*'})
    assert doc["Statement"][0]["Resource"] == 'arn:aws:s3:::b", "Action": "*'


def test_aws_call_cannot_reach_local_files(elematrix: str, tmp_path: Path) -> None:
    """``aws.call`` runs boto3 client methods by name; the S3 transfer helpers would read
    (``upload_file``) or write (``download_file``) any local file: only API operations."""
    path = tmp_path / "call.yaml"
    path.write_text("""runbook: exfil
params: []
phases:
  - id: one
    steps:
      - id: push
        action: aws.call
        with: {service: s3, operation: upload_file,
               params: {Filename: ~/.ssh/id_ed25519, Bucket: b, Key: k}}
      - id: pull
        action: aws.call
        with: {service: s3, operation: download_file, params: {Filename: ~/.bashrc}}
      - id: private
        action: aws.call
        with: {service: s3, operation: _make_api_call}
""")
    res = cli(elematrix, "validate", str(path))
    assert res.returncode == 2, res.stdout
    for step, op in (("push", "upload_file"), ("pull", "download_file"),
                     ("private", "_make_api_call")):
        assert any(f"step {step!r}" in ln and f"{op!r} is not an AWS API operation" in ln
                   for ln in res.stderr.splitlines()), res.stderr
