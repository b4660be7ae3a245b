"""Issue 20 item 13 in the TUI: host output with escape sequences, through the real engine.

The run screen runs ``esc.yaml`` (local actions only) under Textual's Pilot; the log pane,
the step detail (diagnosis, fix, message) and the phase tree must hold no control
character: they show ``\\x1b`` instead of sending ESC to the terminal.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from textual.widgets import Log, Static

from elematrix_tui.ui import catalog
from elematrix_tui.ui.app import ElematrixApp
from elematrix_tui.ui.screens.run import RunScreen
from elematrix_tui.ui.widgets.phase_tree import PhaseTree

from ..ui.helpers import wait_for
from .conftest import HERE

pytestmark = pytest.mark.anyio
BAD = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


async def test_tui_log_and_detail_never_carry_control_characters(state_dir: Path) -> None:
    catalog.write_settings(state_dir, "esc", {"runbook_path": str(HERE / "esc.yaml"),
                                              "params": {}})
    app = ElematrixApp(state_dir, deployment="esc")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await wait_for(pilot, lambda: not screen.restoring, what="the journal replay")
        await pilot.press("r")
        await wait_for(pilot, lambda: screen.model.status in ("passed", "failed")
                       and not screen.running, what="the run to end")
        log = screen.query_one("#log", Log)
        text = "\n".join(log.lines)
        assert "\\x1b[2K" in text and "\\x9b31m" in text, text
        assert not BAD.search(text), [m.group() for m in BAD.finditer(text)]
        tree = screen.query_one(PhaseTree)
        tree.select_id("evil_fail")
        await pilot.pause()
        detail = str(screen.query_one("#detail-text", Static).render())
        assert "why\\x1b]8;;http://x\\x07" in detail, detail
        assert not BAD.search(detail), [m.group() for m in BAD.finditer(detail)]
        # Toasts carry engine text too (a failed step's label, an engine error).
        screen.notify("engine says \x1b[2J\rdone", markup=False)
        await pilot.pause()
        shown = [str(n.message) for n in app._notifications]
        assert any("\\x1b[2J\\x0ddone" in m for m in shown), shown
        assert not any(BAD.search(m) for m in shown), shown


@pytest.mark.timeout(60)
def test_start_screen_listing_survives_an_alias_bomb(tmp_path: Path) -> None:
    """The start screen reads every file in the runbook folder: a billion-laughs file there
    is listed as invalid, not expanded (the engine's bounded loader)."""
    from elematrix_tui.ui.catalog import list_runbooks

    from .test_bombs import LAUGHS

    (tmp_path / "lol.yaml").write_text("{" + LAUGHS.replace("\n", ", ").replace(
        "runbook: lol, ", "").rstrip(", ") + ", runbook: lol}\n")
    (tmp_path / "inline.yaml").write_text(
        "runbook: inline\ntitle: [&a [x, x, x, x, x, x, x, x, x, x], &b [*a, *a, *a, *a, *a, "
        "*a, *a, *a, *a, *a], &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b], &d [*c, *c, *c, *c,"
        " *c, *c, *c, *c, *c, *c], &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d], &f [*e, *e, *e,"
        " *e, *e, *e, *e, *e, *e, *e], &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]]\n")
    entries = {e.path.name: e for e in list_runbooks(tmp_path)}
    assert entries["lol.yaml"].title == "(not valid YAML)"
    assert len(entries["inline.yaml"].title) <= 200
