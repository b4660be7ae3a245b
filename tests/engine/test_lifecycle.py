"""The runner's lifecycle: whatever ends a run, the deployment's lock and journal are let go.

A cancelled prompt (``PromptCancelled`` from the Questions interface, as the TUI's secret
modal raises it) ends the run as interrupted and resumable; the next run of the same
deployment in the same process works.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from elematrix_tui.engine import events as ev
from elematrix_tui.engine.errors import PromptCancelled
from elematrix_tui.engine.journal import Journal
from elematrix_tui.engine.lock import DeploymentLock
from elematrix_tui.engine.paths import deployment_dir
from elematrix_tui.engine.secrets import SecretStore
from elematrix_tui.engine.standalone import AutoQuestions

from .helpers import make_runner, write_runbook

SECRET_RB = """
runbook: t
params:
  - {name: relay_password, type: secret, help: the relay password}
phases:
  - id: one
    steps:
      - {id: a, action: local.noop, with: {outputs: {n: 1}}}
      - {id: wait, action: local.sleep, with: {seconds: 20}}
      - {id: b, action: local.noop}
"""


class CancelSecret(AutoQuestions):
    """Answers like the TUI when the operator presses Escape on the secret modal."""

    def secret(self, name: str, help: str) -> str:
        raise PromptCancelled(f"no value given for secret {name!r}")


class GiveSecret(AutoQuestions):
    def secret(self, name: str, help: str) -> str:
        return "relay-pw-123456"


def test_cancelled_prompt_on_a_new_run_leaves_the_deployment_usable(
        tmp_path: Path, state_dir: Path) -> None:
    rb = write_runbook(tmp_path, SECRET_RB.replace("seconds: 20", "seconds: 0.01"))
    runner, sink = make_runner(rb, state_dir)
    runner.questions = CancelSecret()
    assert runner.run() == 130
    assert [e.status for e in sink.of(ev.RunFinished)] == ["interrupted"]
    assert not DeploymentLock(deployment_dir(state_dir, "test") / "lock").is_held()
    # Nothing ran and nothing is kept for a deployment this run created.
    assert not Journal.exists(state_dir, "test")

    runner, sink = make_runner(rb, state_dir)
    runner.questions = GiveSecret()
    assert runner.run() == 0
    assert sink.statuses() == {"a": "ok", "wait": "ok", "b": "ok"}


def test_cancelled_prompt_on_resume_is_an_interrupted_resumable_run(
        tmp_path: Path, state_dir: Path) -> None:
    rb = write_runbook(tmp_path, SECRET_RB)
    runner, _ = make_runner(rb, state_dir)
    runner.questions = GiveSecret()
    threading.Timer(0.4, runner.cancel).start()
    assert runner.run() == 130
    run_id = runner.run_id
    SecretStore().delete("test", "relay_password")  # so resume must ask again

    rb.write_text(rb.read_text().replace("seconds: 20", "seconds: 0.01"))
    runner, _ = make_runner(rb, state_dir)
    runner.questions = CancelSecret()
    assert runner.resume(run_id) == 130
    with Journal.open(state_dir, "test") as j:
        row = j.run(run_id)
        assert row is not None and row.status == "interrupted"
        assert "cancelled by the operator" in (row.message or "")

    runner, sink = make_runner(rb, state_dir)
    runner.questions = GiveSecret()
    assert runner.resume(run_id) == 0
    assert [e.step_id for e in sink.of(ev.StepFinished) if e.restored] == ["a"]


def test_an_unexpected_error_releases_the_lock_and_records_a_failed_run(
        tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rb = write_runbook(tmp_path, SECRET_RB.replace("seconds: 20", "seconds: 0.01"))
    runner, _ = make_runner(rb, state_dir)
    runner.questions = GiveSecret()

    def boom(*_: object) -> None:
        raise RuntimeError("a defect")

    monkeypatch.setattr(runner, "_run_phases", boom)
    with pytest.raises(RuntimeError):
        runner.run()
    with Journal.open(state_dir, "test") as j:
        assert [r.status for r in j.runs()] == ["failed"]
    runner, _ = make_runner(rb, state_dir)
    assert runner.run() == 0
