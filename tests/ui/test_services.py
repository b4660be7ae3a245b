"""Screens get what they need injected (ui/services.py): a start screen runs in a plain
Textual app, with its own session and flows, and no ElematrixApp at all."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.app import App

from elematrix_tui.ui import catalog
from elematrix_tui.ui.screens.start import StartScreen
from elematrix_tui.ui.services import Session, StartActions

from .conftest import DATA
from .helpers import wait_for

pytestmark = pytest.mark.anyio


async def test_the_start_screen_needs_only_its_session_and_flows(state_dir: Path) -> None:
    catalog.write_settings(state_dir, "given", {"runbook_path": str(DATA / "ui-flow.yaml"),
                                                "params": {}})
    new: list[Path | None] = []
    opened: list[str] = []
    session = Session(state_dir=state_dir, practice=True,
                      notices=["Practice: emulated", "a notice of this session"])
    screen = StartScreen(session, StartActions(new_deployment=new.append,
                                               open_deployment=lambda e: opened.append(e.name)))

    class Plain(App[None]):
        def on_mount(self) -> None:
            self.push_screen(screen)

    app = Plain()
    async with app.run_test(size=(110, 36)) as pilot:
        await wait_for(pilot, lambda: app.screen is screen, what="start screen")
        banner = str(screen.query_one("#banner").render())
        assert "PRACTICE" in banner and "1 note for this session" in banner
        assert "Practice: emulated" not in banner  # the practice line says it already
        # Every notice in full is on the help screen.
        from elematrix_tui.ui.screens.banner import notices_markdown
        assert "a notice of this session" in notices_markdown(session)
        assert [d.name for d in screen.deployments] == ["given"]
        await pilot.press("enter")
        await wait_for(pilot, lambda: opened == ["given"], what="open flow called")
        screen.query_one("#runbooks").focus()
        await pilot.press("n")
        await wait_for(pilot, lambda: len(new) == 1, what="new-deployment flow called")
        assert new[0] in [r.path for r in screen.runbooks]


async def test_the_start_screen_offers_upgrade_and_restore(state_dir: Path) -> None:
    from elematrix_tui.bundled import runbooks_dir

    catalog.write_settings(state_dir, "given", {"runbook_path": str(DATA / "ui-flow.yaml"),
                                                "params": {}})
    opened: list[catalog.DeploymentEntry] = []
    screen = StartScreen(Session(state_dir=state_dir),
                         StartActions(new_deployment=lambda p: None,
                                      open_deployment=opened.append))

    class Plain(App[None]):
        def on_mount(self) -> None:
            self.push_screen(screen)

    app = Plain()
    async with app.run_test(size=(110, 36)) as pilot:
        await wait_for(pilot, lambda: app.screen is screen, what="start screen")
        footer = " ".join(b.description for b in screen.BINDINGS if hasattr(b, "description"))
        assert "Upgrade" in footer and "Restore a backup" in footer and "Status" in footer
        await pilot.press("u")
        await wait_for(pilot, lambda: len(opened) == 1, what="upgrade opened")
        await pilot.press("b")
        await wait_for(pilot, lambda: len(opened) == 2, what="restore opened")
    assert [(e.name, e.runbook, e.runbook_path) for e in opened] == [
        ("given", "upgrade", runbooks_dir() / "upgrade.yaml"),
        ("given", "restore", runbooks_dir() / "restore.yaml")]
