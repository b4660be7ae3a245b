"""Parameters and secrets across runs, through the real ``elematrix`` command (issue 20:
#5 redactor seeded with every stored secret, #8 validate before storing and never replace
a stored secret silently, and the lower items on --set handling)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.engine.secrets import SecretStore

ROOT = Path(__file__).resolve().parents[2]
RENDER = ROOT / "tests" / "stack" / "data" / "render.yaml"
VERIFY = runbooks_dir() / "verify.yaml"


def run(elematrix: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([elematrix, *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))


def _store() -> dict[str, Any]:
    path = Path(os.environ["ELEMATRIX_CONFIG_DIR"]) / "secrets.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _meta(state_dir: Path, dep: str, key: str) -> Any:
    db = state_dir / "deployments" / dep / "journal.sqlite"
    with sqlite3.connect(db) as c:
        rows = list(c.execute("SELECT value FROM meta WHERE key=?", (key,)))
    return json.loads(rows[0][0]) if rows else None


def test_every_stored_secret_is_masked_even_when_nothing_fetched_it(
        elematrix: str, tmp_path: Path, state_dir: Path) -> None:
    dep = "seeded"
    r = run(elematrix, "run", str(RENDER), "--deployment", dep, "--yes",
            "--set", "server_name=chat.example.org", "--set", "public_address=203.0.113.9")
    assert r.returncode == 0, r.stdout + r.stderr
    password = _store()[dep]["postgres_password"]
    # Another runbook of the same deployment prints the rendered env file; nothing in this
    # run fetches postgres_password.
    rb = tmp_path / "show.yaml"
    rb.write_text("runbook: show\nphases:\n  - id: one\n    steps:\n"
                  "      - id: show\n        action: ssh.run\n"
                  "        with: {host: local, command: 'cat {{ deployment_dir }}/stack/postgres.env'}\n")
    r = run(elematrix, "run", str(rb), "--deployment", dep, "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "POSTGRES_PASSWORD" in r.stdout
    assert password not in r.stdout + r.stderr
    run_id = next(w for w in r.stdout.split() if w[:1] == "2").rstrip(":")
    rep = run(elematrix, "report", run_id, "--format", "json")
    assert rep.returncode == 0 and password not in rep.stdout
    journal = b"".join(p.read_bytes() for p in (state_dir / "deployments" / dep).glob(
        "journal.sqlite*"))
    assert password.encode() not in journal


def test_a_stored_secret_is_never_replaced_silently(elematrix: str, state_dir: Path) -> None:
    dep = "keep"
    SecretStore("file").set(dep, "registration_shared_secret", "generated-by-configure-1234")
    # A run that exits 2 (server_name missing) writes nothing, not even the new secret.
    r = run(elematrix, "run", str(VERIFY), "--deployment", dep, "--yes",
            "--set", "registration_shared_secret=typed-by-the-operator-5678",
            "--set", "base_url=http://127.0.0.1:9")
    assert r.returncode == 2, r.stdout + r.stderr
    assert _store()[dep]["registration_shared_secret"] == "generated-by-configure-1234"
    # Everything valid, but a different value for a stored secret: refused, exit 2.
    args = ["run", str(VERIFY), "--deployment", dep, "--yes",
            "--set", "registration_shared_secret=typed-by-the-operator-5678",
            "--set", "base_url=http://127.0.0.1:9", "--set", "admin_url=http://127.0.0.1:9",
            "--set", "server_name=chat.example.org", "--set", "timeout=1"]
    r = run(elematrix, *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "registration_shared_secret" in r.stderr and "--replace-secret" in r.stderr
    assert "typed-by-the-operator-5678" not in r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert _store()[dep]["registration_shared_secret"] == "generated-by-configure-1234"
    # Asked for explicitly, it is replaced.
    r = run(elematrix, *args, "--replace-secret", "registration_shared_secret")
    assert r.returncode == 1, r.stdout + r.stderr  # nothing answers on port 9
    assert _store()[dep]["registration_shared_secret"] == "typed-by-the-operator-5678"


FAILING = """
runbook: remember
params:
  - {name: value, type: string, default: good}
  - {name: fail, type: bool, default: false}
phases:
  - id: one
    steps:
      - id: show
        action: local.noop
        with: {log: ["value={{ params.value }}"]}
      - id: maybe_fail
        action: local.fail
        when: params.fail
        with: {message: "failed on purpose"}
"""


def test_a_failed_run_does_not_remember_its_set_values(elematrix: str, tmp_path: Path,
                                                        state_dir: Path) -> None:
    rb = tmp_path / "rb.yaml"
    rb.write_text(FAILING)
    r = run(elematrix, "run", str(rb), "--deployment", "rem", "--yes", "--set", "value=bad",
            "--set", "fail=true")
    assert r.returncode == 1
    r = run(elematrix, "run", str(rb), "--deployment", "rem", "--yes")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "value=good" in r.stdout
    # A passing run remembers.
    assert run(elematrix, "run", str(rb), "--deployment", "rem", "--yes",
               "--set", "value=kept").returncode == 0
    r = run(elematrix, "run", str(rb), "--deployment", "rem", "--yes")
    assert "value=kept" in r.stdout


def test_plan_refuses_unknown_set_keys(elematrix: str, tmp_path: Path) -> None:
    rb = tmp_path / "rb.yaml"
    rb.write_text(FAILING)
    r = run(elematrix, "plan", str(rb), "--deployment", "pl", "--set", "valeu=typo")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "unknown parameter 'valeu'" in r.stderr


def test_resume_set_warns_records_and_reports_the_value_used(elematrix: str,
                                                             tmp_path: Path) -> None:
    rb = tmp_path / "rb.yaml"
    rb.write_text(FAILING)
    r = run(elematrix, "run", str(rb), "--deployment", "res", "--yes", "--set", "value=first",
            "--set", "fail=true")
    assert r.returncode == 1
    r = run(elematrix, "resume", "--deployment", "res", "--yes", "--set", "value=second",
            "--set", "fail=false")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "value" in r.stdout and "first" in r.stdout and "second" in r.stdout
    assert "changed" in r.stdout.lower()
    run_id = next(w for w in r.stdout.split() if w[:1] == "2").rstrip(":")
    rep = json.loads(run(elematrix, "report", run_id, "--format", "json").stdout)
    assert "second" in json.dumps(rep) and '"first"' not in json.dumps(rep.get("params", {}))


def test_a_run_that_exits_2_leaves_no_trace_of_a_new_deployment(
        elematrix: str, tmp_path: Path, state_dir: Path) -> None:
    rb = tmp_path / "rb.yaml"
    rb.write_text(FAILING)
    r = run(elematrix, "run", str(rb), "--deployment", "fresh", "--yes", "--set", "fail=maybe")
    assert r.returncode == 2, r.stdout + r.stderr
    assert not (state_dir / "deployments" / "fresh").exists()
    assert _store().get("fresh") is None


SHORT = """
runbook: short
params:
  - {name: pin, type: secret, help: a short secret}
phases:
  - id: one
    steps:
      - id: show
        action: local.noop
        with:
          log: ["pin={{ params.pin }}", "quoted '{{ params.pin }}'", "word x{{ params.pin }}9"]
          outputs: {pin: "{{ params.pin }}"}
"""


def test_a_short_secret_is_masked_where_it_stands_as_a_word(elematrix: str,
                                                            tmp_path: Path) -> None:
    rb = tmp_path / "rb.yaml"
    rb.write_text(SHORT)
    env = dict(os.environ, ELEMATRIX_SECRET_PIN="k7Q")
    r = subprocess.run([elematrix, "run", str(rb), "--deployment", "short", "--yes"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "pin=********" in r.stdout and "quoted '********'" in r.stdout
    # Inside a longer word it is not the secret on its own: left alone, the log readable.
    assert "word xk7Q9" in r.stdout
    assert "=k7Q" not in r.stdout and "'k7Q'" not in r.stdout


def test_a_mapping_or_list_in_a_params_file_gets_a_readable_message(
        elematrix: str, tmp_path: Path) -> None:
    params = tmp_path / "p.yaml"
    for text, words in (("operator_cidr:\n  a: b\n", "a mapping"),
                        ("operator_cidr: [203.0.113.7/32]\n", "a list")):
        params.write_text(text)
        r = run(elematrix, "plan", "poc-ec2", "--offline", "--deployment", "lst",
                "--params", str(params))
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"{params}:" in r.stderr and "operator_cidr" in r.stderr and words in r.stderr
        assert "Loc" not in r.stderr
