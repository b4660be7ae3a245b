"""A layout that fits (issue 17, item 2): 80x24 and 160x50 snapshots, toasts off the log,
the banner in one line, descriptions reflowed.

Update after an intended change: ``pytest tests/ui/test_layout_fits.py --snapshot-update``,
then look at the SVGs in ``tests/ui/__snapshots__/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets._toast import Toast

from elematrix_tui.engine import events as ev
from elematrix_tui.ui.format import reflow
from elematrix_tui.ui.screens.modals import ConfirmModal
from elematrix_tui.ui.screens.run import RunScreen
from elematrix_tui.ui.widgets.log_pane import LogPane

from .helpers import RUN_ID, FakeRunner, shown, wait_for
from .test_snapshots import _only_test_runbooks, app_for, mid_run_script, no_blink

__all__ = ["_only_test_runbooks"]  # the fixture, autouse here too

SIZES = [(80, 24), (160, 50)]


def many_changes_script(r: FakeRunner) -> int:
    r.emit(ev.RunStarted(RUN_ID, runbook="ui-destructive", deployment="prod-eu"))
    r.emit(ev.PhaseStarted(RUN_ID, phase_id="teardown", title="Tear down"))
    r.req.questions.confirm("remove_everything", "EC2 instance",
                            [f"create resource number {i} with a longish description"
                             for i in range(25)], destructive=False, type_to_confirm=None)
    return 130


@pytest.mark.parametrize("size", SIZES)
def test_run_screen_fits(snap_compare: Any, state_dir: Path, size: tuple[int, int]) -> None:
    app = app_for(state_dir, mid_run_script, "staging", "ui-long.yaml")

    async def run(pilot: Pilot[Any]) -> None:
        await pilot.press("r")
        screen = pilot.app.screen
        assert isinstance(screen, RunScreen)
        await wait_for(pilot, lambda: screen.model.steps["long_wait"].progress is not None,
                       what="progress")

    assert snap_compare(app, terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_confirmation_fits(snap_compare: Any, state_dir: Path, size: tuple[int, int]) -> None:
    app = app_for(state_dir, many_changes_script, "prod-eu", "ui-destructive.yaml")

    async def run(pilot: Pilot[Any]) -> None:
        await pilot.press("r")
        await wait_for(pilot, lambda: shown(pilot.app, ConfirmModal), what="confirm modal")
        no_blink(pilot)
        await pilot.pause()
        modal = pilot.app.screen
        for bid in ("#yes", "#no", "#keys"):
            region = modal.query_one(bid).region
            dialog = modal.query_one("#dialog").region
            # Whole and inside the dialog (a region past its border is clipped, unseen).
            assert region.height >= 1 and dialog.contains_region(region), (bid, region, dialog)

    assert snap_compare(app, terminal_size=size, run_before=run)


@pytest.mark.anyio
async def test_toasts_never_cover_the_logs_last_lines(state_dir: Path) -> None:
    app = app_for(state_dir, mid_run_script, "staging", "ui-long.yaml")
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await pilot.press("r")
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await wait_for(pilot, lambda: screen.model.steps["long_wait"].progress is not None,
                       what="progress")
        for i in range(3):
            app.notify(f"notification number {i} with enough words to wrap a little")
        await pilot.pause(0.3)
        log = screen.query_one(LogPane).region
        last_lines = log.intersection(log.translate((0, log.height - 4)))  # its last 4 rows
        toasts = [t.region for t in app.screen.query(Toast)] or [
            t.region for t in app.query(Toast)]
        assert toasts
        for region in toasts:
            assert not region.overlaps(last_lines), (region, last_lines)


def test_descriptions_are_reflowed() -> None:
    text = ("Idempotent: every step finds its resource by the deployment tag (or a name\n"
            "derived from the deployment) and creates it only when it is missing.\n"
            "\n"
            "Second paragraph\nstill second.\n"
            "- a list item\n- another\n")
    assert reflow(text) == (
        "Idempotent: every step finds its resource by the deployment tag (or a name "
        "derived from the deployment) and creates it only when it is missing.\n"
        "\n"
        "Second paragraph still second.\n- a list item\n- another")
