"""The permanent lock records the value that was used, not the run's --set (issue 20 #12).

In poc-ec2 configure chooses the server name (steps.server_name) and renders the stack
with it; Synapse starts with it in deploy. A deploy run given another --set server_name
used to lock that other name, so neither name could run again."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from elematrix_tui.actions import default_registry
from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.engine.loader import load_runbook

ROOT = Path(__file__).resolve().parents[2]

RUNBOOK = """
runbook: perm
params:
  - {name: server_name, type: string, required: false, permanent: true}
phases:
  - id: configure
    steps:
      - id: choose
        action: local.noop
        with: {outputs: {server_name: "{{ params.server_name or 'fallback.example' }}"}}
  - id: deploy
    steps:
      - id: start
        action: local.noop
        with: {log: ["starting with {{ steps.choose.server_name }}"]}
        locks: {server_name: "{{ steps.choose.server_name }}"}
"""


def run(elematrix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([elematrix, *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ))


def test_the_lock_records_what_was_used(elematrix: str, tmp_path: Path) -> None:
    rb = tmp_path / "perm.yaml"
    rb.write_text(RUNBOOK)
    base = ["run", str(rb), "--deployment", "perm", "--yes"]
    assert run(elematrix, *base, "--phase", "configure",
               "--set", "server_name=chosen.example").returncode == 0
    r = run(elematrix, *base, "--phase", "deploy", "--set", "server_name=other.example")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "starting with chosen.example" in r.stdout
    # The name in use is the permanent one; the deploy run's --set is refused from now on.
    r = run(elematrix, *base, "--phase", "deploy", "--set", "server_name=chosen.example")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(elematrix, *base, "--phase", "deploy", "--set", "server_name=other.example")
    assert r.returncode == 2 and "'chosen.example'" in r.stderr


def test_poc_ec2_locks_the_server_name_configure_chose() -> None:
    rb = load_runbook(runbooks_dir() / "poc-ec2.yaml", default_registry())
    locking = [s for _, s, _ in rb.all_steps() if s.locks]
    assert [s.id for s in locking] == ["start_synapse"]
    assert locking[0].locks == {"server_name": "{{ steps.server_name.server_name }}"}


def test_a_bad_lock_expression_is_a_located_error(elematrix: str, tmp_path: Path) -> None:
    rb = tmp_path / "bad.yaml"
    rb.write_text(RUNBOOK.replace("steps.choose.server_name }}\"}", "steps.nope.x }}\"}"))
    r = run(elematrix, "validate", str(rb))
    assert r.returncode == 2
    assert f"{rb}:" in r.stderr and "steps.nope does not exist" in r.stderr
