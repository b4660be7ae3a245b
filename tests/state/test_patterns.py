"""Patterns match the whole value, everywhere; runbook shell commands quote what they
interpolate (issue 20 #6). A trailing newline used to pass ``pattern`` (``re.search`` with
``$``): ``remote_dir=$'//\\n'`` turned ``chown -R 991:991 {{remote_dir}}/synapse`` into
``chown -R 991:991 //`` under sudo."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from elematrix_tui.actions import default_registry
from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.engine.expressions import render_string
from elematrix_tui.engine.loader import load_runbook
from elematrix_tui.engine.model import Param
from elematrix_tui.engine.params import ParamValueError, coerce
from elematrix_tui.stack.values import StackValues

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = runbooks_dir()


def run(elematrix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([elematrix, *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))


@pytest.mark.parametrize("value", ["//\n", "/opt/x\n", "/opt/x\n; rm -rf /"])
def test_a_pattern_matches_the_whole_value(value: str) -> None:
    p = Param(name="remote_dir", pattern="^/[A-Za-z0-9._/-]+$")
    with pytest.raises(ParamValueError, match="must match"):
        coerce(p, value)
    # Also a pattern written without anchors.
    with pytest.raises(ParamValueError):
        coerce(Param(name="d", pattern="/[a-z/]+"), value)


def test_a_block_scalar_in_a_params_file_is_refused_by_the_cli(elematrix: str,
                                                                tmp_path: Path) -> None:
    params = tmp_path / "p.yaml"
    params.write_text("operator_cidr: 203.0.113.7/32\nremote_dir: |\n  /opt/elematrix\n")
    r = run(elematrix, "plan", "poc-ec2", "--offline", "--deployment", "pat",
            "--params", str(params))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "remote_dir" in r.stderr and "Traceback" not in r.stderr
    r = run(elematrix, "plan", "poc-ec2", "--offline", "--deployment", "pat",
            "--set", "operator_cidr=203.0.113.7/32", "--set", "remote_dir=//\n")
    assert r.returncode == 2, r.stdout + r.stderr


def test_a_deployment_name_with_a_newline_is_refused(elematrix: str, tmp_path: Path,
                                                     state_dir: Path) -> None:
    rb = tmp_path / "rb.yaml"
    rb.write_text("runbook: n\nphases:\n  - id: one\n    steps:\n"
                  "      - {id: a, action: local.noop}\n")
    r = run(elematrix, "run", str(rb), "--deployment", "prod\n", "--yes")
    assert r.returncode == 2, r.stdout + r.stderr
    assert not (state_dir / "deployments").exists() or \
        list((state_dir / "deployments").iterdir()) == []


@pytest.mark.parametrize("field,value", [
    ("remote_dir", "/opt/x\n"), ("server_name", "chat.example.org\n"),
    ("public_address", "203.0.113.9\n"), ("aws_region", "us-east-1\n"),
    ("backup_bucket", "my-bucket\n"), ("logo_url", "https://x/logo.png\n"),
    ("log_group_prefix", "/elematrix/x\n")])
def test_the_renderers_own_checks_match_the_whole_value(field: str, value: str) -> None:
    base = {"server_name": "chat.example.org", "public_address": "203.0.113.9"}
    with pytest.raises(ValidationError):
        StackValues.model_validate({**base, field: value})


def test_shell_quote_filter() -> None:
    nasty = "/opt/my dir'; rm -rf / #"
    out = render_string("chown -R 991:991 {{ d | shell_quote }}/synapse", {"d": nasty})
    assert out == f"chown -R 991:991 {shlex.quote(nasty)}/synapse"
    assert shlex.split(str(out))[3] == nasty + "/synapse"


def test_every_interpolation_in_a_bundled_shell_command_is_quoted() -> None:
    expr = re.compile(r"\{\{(.*?)\}\}", re.S)
    checked = 0
    for path in sorted(RUNBOOKS.glob("*.yaml")):
        rb = load_runbook(path, default_registry())
        for _, step, _ in rb.all_steps():
            # compose.exec runs a string command under sh -c in the container.
            if step.action not in ("ssh.run", "compose.exec"):
                continue
            command = step.with_.get("command", "")
            if not isinstance(command, str):
                continue  # an argv list reaches the program as it is: nothing to quote
            for m in expr.finditer(command):
                checked += 1
                assert m.group(1).strip().endswith("| shell_quote"), \
                    f"{path.name}: step {step.id}: {{{{{m.group(1)}}}}} is not shell-quoted"
    # Issue 14: the deploy phase's shell strings became host-fact actions (compose.up,
    # postgres.locale, systemd.install...); the backup and harden's recreate remain.
    assert checked >= 2
    # And the quoting survives YAML: the file still loads as the runbook it was.
    assert yaml.safe_load((RUNBOOKS / "poc-ec2.yaml").read_text())["runbook"] == "poc-ec2"
