"""The TUI's secret field says "stored: type to replace": a typed secret is the explicit
replace the engine now requires (issue 20 #8), while the headless CLI needs
--replace-secret. Real engine runner, built by the TUI's own factory."""

from __future__ import annotations

from pathlib import Path

from elematrix_tui.actions import default_registry
from elematrix_tui.engine.loader import load_runbook
from elematrix_tui.engine.secrets import SecretStore
from elematrix_tui.engine.standalone import AutoQuestions
from elematrix_tui.ui.bridge import RunRequest, engine_runner_factory

RUNBOOK = """
runbook: typed
params:
  - {name: token, type: secret, help: typed}
phases:
  - id: one
    steps:
      - {id: a, action: local.noop}
"""


def test_a_secret_typed_in_the_tui_replaces_the_stored_one(tmp_path: Path,
                                                            state_dir: Path) -> None:
    path = tmp_path / "rb.yaml"
    path.write_text(RUNBOOK)
    rb = load_runbook(path, default_registry())
    store = SecretStore("file")
    store.set("tui", "token", "the-old-stored-token")
    runner = engine_runner_factory(RunRequest(
        runbook=rb, runbook_path=path, deployment="tui", state_dir=state_dir,
        params={"token": "the-new-typed-token"}, questions=AutoQuestions(), sinks=[]))
    assert runner.run() == 0
    assert store.get("tui", "token") == "the-new-typed-token"
    # Left empty, the stored one is kept.
    runner = engine_runner_factory(RunRequest(
        runbook=rb, runbook_path=path, deployment="tui", state_dir=state_dir, params={},
        questions=AutoQuestions(), sinks=[]))
    assert runner.run() == 0
    assert store.get("tui", "token") == "the-new-typed-token"
