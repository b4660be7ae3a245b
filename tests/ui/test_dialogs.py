"""Dialogs an operator can drive blind (issue 17, item 1): keys, the focused answer, decline.

The modals are pushed in a bare app (their own keys, no engine), then a declined
confirmation goes through the real engine: it is "declined" everywhere, never "failed".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.widgets import Button, Static

from elematrix_tui.engine.journal import Journal
from elematrix_tui.engine.report import build_report
from elematrix_tui.ui import catalog
from elematrix_tui.ui.app import ElematrixApp
from elematrix_tui.ui.screens.modals import ConfirmModal, YesNoModal
from elematrix_tui.ui.screens.run import RunScreen

from .conftest import DATA
from .helpers import shown, wait_for

pytestmark = pytest.mark.anyio


class Host(App[None]):
    """Pushes one modal and keeps its answer."""

    def __init__(self, modal: Any) -> None:
        super().__init__()
        self.modal = modal
        self.answers: list[Any] = []

    def on_mount(self) -> None:
        self.push_screen(self.modal, self.answers.append)


def hint(modal: Any) -> str:
    return str(modal.query_one("#keys", Static).render())


def confirm(destructive: bool = False, n: int = 3) -> ConfirmModal:
    return ConfirmModal("ec2", "EC2 instance", [f"create thing {i}" for i in range(n)],
                        destructive=destructive,
                        type_to_confirm="prod-eu" if destructive else None)


async def test_enter_answers_the_focused_button_and_the_hint_says_which() -> None:
    app = Host(confirm())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        modal = app.screen
        assert isinstance(modal.focused, Button) and modal.focused.id == "no"
        assert "y go ahead" in hint(modal) and "n/esc cancel" in hint(modal)
        assert "enter: Cancel" in hint(modal)
        # Tab goes from answer to answer (the list of changes is no Tab stop).
        await pilot.press("tab")
        await pilot.pause()
        assert isinstance(modal.focused, Button) and modal.focused.id == "yes"
        assert "enter: Go ahead" in hint(modal)
        await pilot.press("shift+tab")
        await pilot.pause()
        assert "enter: Cancel" in hint(modal)
        await pilot.press("enter")
        await pilot.pause()
    assert app.answers == [False]


@pytest.mark.parametrize(("key", "answer"), [("y", True), ("n", False), ("escape", False)])
async def test_y_and_n_answer_without_looking(key: str, answer: bool) -> None:
    app = Host(confirm())
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press(key)
        await pilot.pause()
    assert app.answers == [answer]


async def test_destructive_still_needs_the_typed_name() -> None:
    app = Host(confirm(destructive=True))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        modal = app.screen
        assert "type the name" in hint(modal)
        await pilot.press("escape")
        await pilot.pause()
    assert app.answers == [False]
    app = Host(confirm(destructive=True))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("tab")  # off the field: y must still not go ahead
        await pilot.pause()
        assert not isinstance(app.screen.focused, type(None))
        await pilot.press("y")
        await pilot.pause()
        assert app.answers == []
        await pilot.press("escape")
        await pilot.pause()
    assert app.answers == [False]
    app = Host(confirm(destructive=True))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press(*"prod-eu", "enter")
        await pilot.pause()
    assert app.answers == [True]


@pytest.mark.parametrize("size", [(80, 24), (160, 50)])
async def test_confirm_buttons_on_screen_with_many_changes(size: tuple[int, int]) -> None:
    app = Host(confirm(n=40))
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        await pilot.pause()
        modal = app.screen
        width, height = size
        dialog = modal.query_one("#dialog").region
        assert dialog.bottom <= height and dialog.right <= width
        for bid in ("yes", "no"):
            region = modal.query_one(f"#{bid}", Button).region
            assert region.height == 3 and dialog.contains_region(region), (bid, region, dialog)
        keys = modal.query_one("#keys", Static).region
        assert keys.height == 1 and dialog.contains_region(keys), (keys, dialog)


async def test_yes_no_modal_keys() -> None:
    app = Host(YesNoModal("Quit?", "A step runs.", yes="Quit", no="Stay"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert "y Quit" in hint(app.screen) and "enter: Stay" in hint(app.screen)
        await pilot.press("enter")
        await pilot.pause()
    assert app.answers == [False]


async def test_declined_confirmation_is_declined_everywhere(state_dir: Path) -> None:
    catalog.write_settings(state_dir, "prod-eu", {
        "runbook_path": str(DATA / "ui-destructive.yaml"), "params": {}})
    app = ElematrixApp(state_dir, deployment="prod-eu")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await pilot.press("r")
        await wait_for(pilot, lambda: shown(app, ConfirmModal), what="confirm modal")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not screen.running, what="run to stop")
        assert screen.last_exit == 130
        assert screen.model.status == "declined"
        assert screen.model.steps["remove_everything"].status == "declined"
        phase = screen.model.phase("teardown")
        assert phase is not None and phase.state == "ready"
        run_id = screen.model.run_id
    assert not (state_dir / "deployments/prod-eu/gone.txt").exists()
    assert run_id
    with Journal.open(state_dir, "prod-eu") as j:
        report = build_report(j, run_id)
    assert "declined" in report and "failed" not in report.lower()
