"""Secret values, set and generated, never reach the state dir, stdout or stderr."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

RUNBOOK = """
runbook: secrets
params:
  - {name: given, type: secret, help: typed by the operator}
  - {name: made, type: secret, generate: 40, help: generated}
  - {name: out, type: string}
phases:
  - id: one
    steps:
      - id: echo
        action: local.noop
        with:
          log: ["given={{ params.given }} made={{ params.made }}"]
          outputs: {leak: "{{ params.given }}-{{ params.made }}"}
      - id: write
        action: local.write
        with: {path: "{{ params.out }}/f", content: "{{ params.made }}"}
      - id: fail
        action: local.fail
        with: {message: "bad {{ params.given }}", diagnosis: "d {{ params.made }}"}
"""


def test_secrets_absent_everywhere(elematrix: str, tmp_path: Path, state_dir: Path) -> None:
    rb = tmp_path / "rb.yaml"
    rb.write_text(RUNBOOK)
    given = "S3cretGivenValue-42"
    env = dict(os.environ, ELEMATRIX_SECRET_GIVEN=given)
    base = [str(rb), "--deployment", "sec", "--set", f"out={tmp_path / 'out'}"]
    outputs = []
    for cmd in (["plan", *base], ["run", *base, "--yes"]):
        res = subprocess.run([elematrix, *cmd], env=env, capture_output=True, text=True)
        outputs += [res.stdout, res.stderr]
    assert res.returncode == 1  # the last step fails on purpose
    store = json.loads((Path(os.environ["ELEMATRIX_CONFIG_DIR"]) / "secrets.json").read_text())
    made = store["sec"]["made"]
    assert len(made) == 40 and store["sec"]["given"] == given
    assert (Path(os.environ["ELEMATRIX_CONFIG_DIR"]) / "secrets.json").stat().st_mode & 0o77 == 0
    run_id = [x for x in res.stdout.split() if x.startswith("2")][0].rstrip(":")
    for fmt in ("md", "json"):
        rep = subprocess.run([elematrix, "report", run_id, "--format", fmt], env=env,
                             capture_output=True, text=True)
        assert rep.returncode == 0, rep.stderr
        outputs += [rep.stdout, rep.stderr]
    runs = subprocess.run([elematrix, "runs"], env=env, capture_output=True, text=True)
    outputs += [runs.stdout]
    assert "********" in "".join(outputs)
    for text in outputs:
        assert given not in text and made not in text
    # Run again: secrets come from the store, not regenerated.
    subprocess.run([elematrix, "run", *base, "--yes"], env=dict(os.environ),
                   capture_output=True, text=True)
    assert json.loads((Path(os.environ["ELEMATRIX_CONFIG_DIR"]) /
                       "secrets.json").read_text())["sec"]["made"] == made
    for path in state_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert given.encode() not in data and made.encode() not in data, path


def test_no_keyring_backend_says_what_to_do(elematrix: str, tmp_path: Path) -> None:
    rb = tmp_path / "rb.yaml"
    rb.write_text(RUNBOOK)
    env = dict(os.environ, PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")
    env.pop("ELEMATRIX_SECRET_STORE")
    res = subprocess.run([elematrix, "run", str(rb), "--deployment", "sec", "--set", "out=/tmp"],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 2
    assert "ELEMATRIX_SECRET_STORE=file" in res.stderr and "Traceback" not in res.stderr
