"""`elematrix run runbooks/verify.yaml` from the real command line against the real stack."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from elematrix_tui.actions.matrix_checks import CHECK_NAMES
from elematrix_tui.bundled import runbooks_dir
from tests.support.services import MatrixStack

pytestmark = pytest.mark.services

RUNBOOK = runbooks_dir() / "verify.yaml"


def _run(elematrix: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([elematrix, *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


def _sets(stack: MatrixStack, base_url: str | None = None) -> list[str]:
    return ["--set", f"base_url={base_url or stack.base_url}",
            "--set", f"server_name={stack.server_name}",
            "--set", f"admin_url={stack.admin_url}",
            "--set", f"registration_shared_secret={stack.registration_shared_secret}",
            "--set", "timeout=10"]


def _run_id(stdout: str) -> str:
    for line in stdout.splitlines():
        if line.startswith("run ") and ":" in line:
            return line.split()[1].rstrip(":")
    raise AssertionError(f"no run id in:\n{stdout}")


def test_verify_runbook_passes_from_the_command_line(elematrix: str,
                                                     matrix_stack: MatrixStack) -> None:
    r = _run(elematrix, "run", str(RUNBOOK), "--yes", "--deployment", "verify-t",
             *_sets(matrix_stack))
    assert r.returncode == 0, r.stdout + r.stderr
    for name in CHECK_NAMES:
        assert f"[PASS] {name}" in r.stdout
    secret = matrix_stack.registration_shared_secret
    assert secret not in r.stdout + r.stderr
    run_id = _run_id(r.stdout)
    rep = _run(elematrix, "report", run_id, "--format", "md")
    assert rep.returncode == 0, rep.stderr
    for name in CHECK_NAMES:
        assert f"| {name} | passed |" in rep.stdout
    assert secret not in rep.stdout
    js = _run(elematrix, "report", run_id, "--format", "json")
    data = json.loads(js.stdout)
    noted = [n.get("check") for n in data["notes"] if n.get("name") == "gate.check"]
    assert noted == list(CHECK_NAMES)
    assert secret not in js.stdout


def test_verify_runbook_fails_with_the_diagnosis(elematrix: str,
                                                 matrix_stack: MatrixStack) -> None:
    base, _ = matrix_stack.nginx_variant("cli-redirect",
                                         extra="return 301 https://$host$request_uri;")
    r = _run(elematrix, "run", str(RUNBOOK), "--yes", "--deployment", "verify-bad",
             *_sets(matrix_stack, base))
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "[FAIL] discovery" in out
    assert "HTTPS redirect left in nginx" in out
    rep = _run(elematrix, "report", _run_id(r.stdout), "--format", "md")
    assert "| discovery | FAILED |" in rep.stdout
    assert "HTTPS redirect left in nginx" in rep.stdout


def test_bootstrap_then_gate_on_the_stored_admin_token(elematrix: str,
                                                       matrix_stack: MatrixStack) -> None:
    """Through the real runner and secret store: bootstrap stores the admin token, the
    gate (given no secret) uses it; a second run creates nothing."""
    runbook = Path(__file__).parent / "data" / "bootstrap-then-verify.yaml"
    args = ["run", str(runbook), "--yes", "--deployment", "boot-t",
            "--set", f"base_url={matrix_stack.base_url}",
            "--set", f"server_name={matrix_stack.server_name}",
            "--set", f"admin_url={matrix_stack.admin_url}",
            "--set", "admin_user=cli-admin",
            "--set", f"registration_shared_secret={matrix_stack.registration_shared_secret}"]
    outputs = []
    for _ in range(2):
        r = _run(elematrix, *args)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "temporary admin" not in r.stdout  # the stored admin token was used
        data = json.loads(_run(elematrix, "report", _run_id(r.stdout), "--format",
                               "json").stdout)
        step = next(s for s in data["steps"] if s["step"] == "matrix_admin")
        outputs.append(step["outputs"])
        text = json.dumps(data) + r.stdout + r.stderr
        # Every secret of the deployment (admin password and token, registration token,
        # shared secret) is in the 0600 store, and none of them in the output or report.
        store = json.loads((Path(os.environ["ELEMATRIX_CONFIG_DIR"]) / "secrets.json")
                           .read_text())["boot-t"]
        assert {"matrix_admin_password", "matrix_admin_token",
                "matrix_registration_token"} <= set(store)
        for value in store.values():
            assert value not in text
    first, second = outputs
    assert first["admin_user_id"] == f"@cli-admin:{matrix_stack.server_name}"
    assert set(first["created"]) == {"admin", "registration_token",
                                     f"#welcome:{matrix_stack.server_name}",
                                     f"#news:{matrix_stack.server_name}"}
    assert second["rooms"] == first["rooms"]
    assert second.get("created", []) == []
