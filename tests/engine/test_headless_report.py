"""Headless that reports (issue 17, item 4): progress for every wait, and ``--json``.

The real ``elematrix`` command; the JSON lines must parse back into the engine's events
(``engine.events.parse_event``) and hold no secret.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

from elematrix_tui.engine import events as ev
from elematrix_tui.headless import Printer

SECRET = "s3cr3t-Value-that-must-not-leak-42"

RUNBOOK = """
runbook: jsonl
params:
  - {name: token, type: secret, help: a secret that must never be printed}
phases:
  - id: one
    steps:
      - id: uses_secret
        action: local.noop
        with: {outputs: {echo: "{{ params.token }}"}}
      - id: waits
        action: local.sleep
        expected_duration: 5
        with: {seconds: 1.2}
      - id: says_secret
        action: local.fail
        on_failure: continue
        with: {message: "the token is {{ params.token }}"}
"""


def _run(elematrix: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    rb = tmp_path / "jsonl.yaml"
    rb.write_text(RUNBOOK)
    env = {**os.environ, "ELEMATRIX_SECRET_TOKEN": SECRET}
    return subprocess.run([elematrix, "run", str(rb), "--deployment", "jl", "--yes", *args],
                          capture_output=True, text=True, timeout=60, env=env)


def test_json_lines_parse_and_hold_no_secret(elematrix: str, tmp_path: Path) -> None:
    res = _run(elematrix, tmp_path, "--json")
    assert res.returncode in (0, 1), res.stderr
    lines = res.stdout.splitlines()
    assert lines, res.stderr
    events = []
    for line in lines:
        data = json.loads(line)  # every line is one JSON object
        event = ev.parse_event(data)
        assert event is not None, line
        events.append(event)
    kinds = [e.kind for e in events]
    assert kinds[0] == "run.started" and kinds[-1] == "run.finished"
    assert "progress" in kinds and "step.finished" in kinds
    assert SECRET not in res.stdout and SECRET not in res.stderr
    said = next(e for e in events if isinstance(e, ev.StepFinished)
                and e.step_id == "says_secret")
    assert "the token is" in said.message  # the line is there, its secret masked


def test_plain_progress_lines_when_not_a_terminal(elematrix: str, tmp_path: Path) -> None:
    res = _run(elematrix, tmp_path)
    assert SECRET not in res.stdout + res.stderr
    waits = [ln for ln in res.stdout.splitlines() if ln.startswith("   ~ waits")]
    assert waits, res.stdout
    # Elapsed, expected and how many checks, as a plain line (no cursor codes in a pipe).
    assert "/ ~5s" in waits[0] and "1 check" in waits[0]
    assert "\r" not in res.stdout and "\x1b[" not in res.stdout


def test_progress_redrawn_in_place_on_a_terminal() -> None:
    out = io.StringIO()
    printer = Printer(stream=out, tty=True)
    rid = "r1"
    printer(ev.RunStarted(rid, runbook="rb", deployment="d"))
    printer(ev.StepStarted(rid, phase_id="p", step_id="wait_ok", title="", action="aws.wait",
                           attempt=2))
    printer.TTY_EVERY = 0.0
    for n in range(3):
        printer(ev.Progress(rid, step_id="wait_ok", message="pending", elapsed=10.0 * n,
                            expected=180.0))
    printer(ev.StepFinished(rid, phase_id="p", step_id="wait_ok", status="ok", attempt=2,
                            duration=21.0))
    text = out.getvalue()
    assert text.count("\r\x1b[2K") == 3
    assert "~ wait_ok 20s / ~3m · 3 checks · attempt 2: pending" in text
    # The finished step starts on a line of its own, after the progress line.
    assert "pending\n[ok] wait_ok" in text
