"""A cancelled secret prompt leaves the deployment usable (issue 14).

Through the real TUI and the real engine: the engine asks for a secret the form did not
give, the operator cancels the modal, and the next run of the same deployment in the same
process must start (it used to fail with "in use by pid <our own pid>": the lock and the
journal were never released).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Input

from elematrix_tui.engine.journal import Journal
from elematrix_tui.ui import catalog
from elematrix_tui.ui.app import ElematrixApp
from elematrix_tui.ui.screens.modals import SecretModal
from elematrix_tui.ui.screens.run import RunScreen

from .conftest import DATA
from .helpers import shown, wait_for

pytestmark = pytest.mark.anyio


async def test_cancelled_secret_prompt_then_a_new_run_works(state_dir: Path) -> None:
    catalog.write_settings(state_dir, "staging", {"runbook_path": str(DATA / "ui-secret.yaml"),
                                                  "params": {}})
    app = ElematrixApp(state_dir, deployment="staging")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await wait_for(pilot, lambda: not screen.restoring, what="the journal replay")
        await pilot.press("r")
        await wait_for(pilot, lambda: shown(app, SecretModal), what="secret modal")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen and not screen.running,
                       what="the cancelled run to end")
        assert screen.last_exit == 130
        assert not any("in use" in str(n.message) for n in app._notifications)

        await pilot.press("r")
        await wait_for(pilot, lambda: shown(app, SecretModal), what="secret modal again")
        app.screen.query_one("#secret", Input).value = "relay-pw-123456"
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen is screen and not screen.running,
                       what="the second run to end")
        assert screen.last_exit == 0, [str(n.message) for n in app._notifications]
        assert screen.model.steps["step_a"].status == "ok"
    j = Journal.open(state_dir, "staging")
    try:
        assert [r.status for r in j.runs()] == ["passed"]
    finally:
        j.close()
