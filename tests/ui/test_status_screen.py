"""The start screen's `d` opens the status screen of the highlighted deployment; it shows
the engine's status (engine/status.py) and `escape` goes back. The live checks themselves
are proven on the rehearsal (tests/rehearsal/test_status.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Static

from elematrix_tui.ui.app import ElematrixApp
from elematrix_tui.ui.screens.start import StartScreen
from elematrix_tui.ui.screens.status import StatusScreen
from tests.engine.helpers import make_runner, write_runbook

from .helpers import wait_for

pytestmark = pytest.mark.anyio

NOOP = """
runbook: tiny
title: one noop
version: 1
phases:
  - id: p
    title: p
    steps:
      - id: s
        title: s
        action: local.noop
    gates:
      - id: g
        title: g
        action: local.noop
"""


async def test_status_screen_from_the_start_screen(state_dir: Path, tmp_path: Path) -> None:
    runner, _ = make_runner(write_runbook(tmp_path, NOOP), state_dir, deployment="staging")
    assert runner.run() == 0
    app = ElematrixApp(state_dir)
    async with app.run_test(size=(110, 32)) as pilot:
        assert isinstance(app.screen, StartScreen)
        await pilot.press("d")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, StatusScreen) and screen.deployment == "staging"
        head = screen.query_one("#status-head", Static)
        await wait_for(pilot, lambda: "against tiny: 0 ok, 0 drifted" in str(head.render()),
                       what="the status")
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, StartScreen)


async def test_a_failure_that_looks_like_markup_is_shown_as_text(state_dir: Path,
                                                                tmp_path: Path) -> None:
    """The status screen showed a failure's text as rich markup (the audit screen escaped
    it): a runbook path with ``[/`` in it broke the head instead of saying why."""
    bad = tmp_path / "[/b]gone.yaml"
    runner, _ = make_runner(write_runbook(tmp_path, NOOP), state_dir, deployment="staging")
    assert runner.run() == 0
    app = ElematrixApp(state_dir)
    async with app.run_test(size=(110, 32)) as pilot:
        app.push_screen(StatusScreen(state_dir, "staging", bad))
        await pilot.pause()
        head = app.screen.query_one("#status-head", Static)
        await wait_for(pilot, lambda: "cannot check" in str(head.render()), what="the failure")
        assert "[/b]gone.yaml" in str(head.render())
