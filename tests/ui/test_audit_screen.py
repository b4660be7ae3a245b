"""The start screen's `a` opens the audit screen of the highlighted deployment: without
Prowler its head says how to install it; `n` runs the native checks (here: a runbook whose
gates check no control, so nothing to judge) and `escape` goes back. The audit against
moto and the real Prowler is tests/aws/test_audit.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Static

from elematrix_tui.ui.app import ElematrixApp
from elematrix_tui.ui.screens.audit import AuditScreen
from elematrix_tui.ui.screens.start import StartScreen
from tests.engine.helpers import make_runner, write_runbook

from .helpers import wait_for
from .test_status_screen import NOOP

pytestmark = pytest.mark.anyio


async def test_audit_screen_from_the_start_screen(state_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELEMATRIX_PROWLER", str(tmp_path / "no-prowler"))
    runner, _ = make_runner(write_runbook(tmp_path, NOOP), state_dir, deployment="staging")
    assert runner.run() == 0
    app = ElematrixApp(state_dir)
    async with app.run_test(size=(110, 32)) as pilot:
        assert isinstance(app.screen, StartScreen)
        await pilot.press("a")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, AuditScreen) and screen.deployment == "staging"
        head = screen.query_one("#audit-head", Static)
        await wait_for(pilot, lambda: "uv tool install prowler" in str(head.render()),
                       what="the install hint")
        await pilot.press("n")
        await wait_for(pilot, lambda: "by native" in str(head.render()), what="native audit")
        assert "nothing unexplained" in str(head.render())
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, StartScreen)
