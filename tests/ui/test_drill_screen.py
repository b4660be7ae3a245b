"""The start screen's `D` runs the restore drill of the highlighted deployment: a
confirmation says what it creates, costs and tears down; cancel runs nothing; confirm runs
the drill (``drill.drill_outcome``, stubbed here: the real drill is proven on the rehearsal,
tests/rehearsal/test_restore_runbook.py) in a thread on a screen that shows its lines live,
its verdict with RPO/RTO, and on failure the teardown command. Also: ``run_headless``'s
``lines`` callback gets a run's whole output and the terminal gets none of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Log, Static

from elematrix_tui import drill
from elematrix_tui.engine.runner import RunOptions
from elematrix_tui.headless import run_headless
from elematrix_tui.ui.app import ElematrixApp
from elematrix_tui.ui.screens.drill import DrillScreen
from elematrix_tui.ui.screens.modals import YesNoModal
from elematrix_tui.ui.screens.start import StartScreen
from tests.engine.helpers import make_runner, write_runbook

from .helpers import shown, wait_for
from .test_status_screen import NOOP

pytestmark = pytest.mark.anyio


def _deployed(state_dir: Path, tmp_path: Path) -> None:
    runner, _ = make_runner(write_runbook(tmp_path, NOOP), state_dir, deployment="staging")
    assert runner.run() == 0


class _Stub:
    """Stands in for the drill: says a few lines through the request's callback, as the
    real one does (drill.py ``say`` and run_headless's printer), and returns ``outcome``."""

    def __init__(self, outcome: drill.DrillOutcome) -> None:
        self.outcome = outcome
        self.requests: list[drill.DrillRequest] = []

    def __call__(self, req: drill.DrillRequest) -> drill.DrillOutcome:
        self.requests.append(req)
        assert req.lines is not None, "the TUI must pass a lines callback"
        req.lines("drill: deploying staging-drill (poc-ec2 infra, configure, deploy)")
        req.lines("  ✓ preflight ok")
        req.lines("drill: tearing staging-drill down (teardown, bucket included)")
        return self.outcome


async def test_cancel_runs_nothing(state_dir: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    _deployed(state_dir, tmp_path)
    stub = _Stub(drill.DrillOutcome(0, "staging-drill"))
    monkeypatch.setattr(drill, "drill_outcome", stub)
    app = ElematrixApp(state_dir)
    async with app.run_test(size=(110, 32)) as pilot:
        assert isinstance(app.screen, StartScreen)
        await pilot.press("D")
        await wait_for(pilot, lambda: shown(app, YesNoModal), what="the confirmation")
        text = " ".join(str(s.render()) for s in app.screen.query(Static))
        for said in ("staging-drill", "costs money on AWS", "tears staging-drill down",
                     "staging itself is never touched"):
            assert said in text, said
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, StartScreen)
    assert stub.requests == []


async def _run(state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               outcome: drill.DrillOutcome) -> tuple[_Stub, str, list[str]]:
    _deployed(state_dir, tmp_path)
    stub = _Stub(outcome)
    monkeypatch.setattr(drill, "drill_outcome", stub)
    app = ElematrixApp(state_dir)
    async with app.run_test(size=(110, 32)) as pilot:
        await pilot.press("D")
        await wait_for(pilot, lambda: shown(app, YesNoModal), what="the confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, DrillScreen), what="drill screen")
        screen = app.screen
        assert isinstance(screen, DrillScreen)
        await wait_for(pilot, lambda: not screen.running, what="the verdict")
        head = str(screen.query_one("#drill-head", Static).render())
        verdict = str(screen.query_one("#drill-verdict", Static).render())
        log = [str(x) for x in screen.query_one(Log).lines]
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, StartScreen)
    assert len(stub.requests) == 1
    req = stub.requests[0]
    assert (req.source, req.state_dir, dict(req.sets), req.assume_yes) == \
        ("staging", state_dir, {}, True)
    return stub, head + "\n" + verdict, log


async def test_a_passed_drill_shows_its_lines_and_rpo_rto(
        state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ok = drill.DrillOutcome(0, "staging-drill", {"deploy": 0, "restore": 0, "teardown": 0},
                            backup="backups/2026-12-01T10-00-00Z", rpo_s=61.0, rto_s=12.34,
                            torn_down=True)
    _, shown_text, log = await _run(state_dir, tmp_path, monkeypatch, ok)
    assert "passed (deploy passed, restore passed, teardown passed)" in shown_text
    assert "backup backups/2026-12-01T10-00-00Z: RPO 61 s, RTO 12.3 s" in shown_text
    assert "staging: unchanged" in shown_text
    assert drill.teardown_command("staging-drill") not in shown_text
    assert any("deploying staging-drill" in x for x in log)
    assert any("✓ preflight ok" in x for x in log)
    assert any("tearing staging-drill down" in x for x in log)


async def test_a_failed_drill_shows_the_teardown_command(
        state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = drill.DrillOutcome(1, "staging-drill", {"deploy": 0, "restore": 1, "teardown": 1},
                             torn_down=False)
    _, shown_text, _ = await _run(state_dir, tmp_path, monkeypatch, bad)
    assert "failed (deploy passed, restore failed, teardown failed)" in shown_text
    assert "may still exist on AWS" in shown_text
    assert drill.teardown_command("staging-drill") in shown_text


def test_run_headless_sends_every_line_to_the_callback(
        state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from elematrix_tui.actions import default_registry
    from elematrix_tui.engine.loader import load_runbook

    path = write_runbook(tmp_path, NOOP)
    got: list[str] = []
    code = run_headless(load_runbook(path, default_registry()), deployment="staging",
                        state_dir=state_dir, params={}, runbook_path=path,
                        options=RunOptions(assume_yes=True), lines=got.append)
    assert code == 0
    assert capsys.readouterr() == ("", "")
    assert got and all("\n" not in x for x in got)
    assert any("s" in x and "ok" in x for x in got)


async def test_quitting_during_a_drill_lets_it_finish_on_stderr(
        state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """ctrl+c leaves the UI, not the drill: its thread never waits on the gone app (it
    would hang a drill before its teardown), and its last lines reach stderr."""
    import threading

    _deployed(state_dir, tmp_path)
    go, done = threading.Event(), threading.Event()

    def slow(req: drill.DrillRequest) -> drill.DrillOutcome:
        assert req.lines is not None
        req.lines("drill: deploying staging-drill")
        assert go.wait(10)
        req.lines("drill: tearing staging-drill down (after the UI left)")
        done.set()
        return drill.DrillOutcome(0, "staging-drill", {"teardown": 0}, torn_down=True)

    monkeypatch.setattr(drill, "drill_outcome", slow)
    app = ElematrixApp(state_dir)
    async with app.run_test(size=(110, 32)) as pilot:
        await pilot.press("D")
        await wait_for(pilot, lambda: shown(app, YesNoModal), what="the confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, DrillScreen), what="drill screen")
        screen = app.screen
        await wait_for(pilot, lambda: any("deploying" in str(x)
                                          for x in screen.query_one(Log).lines),
                       what="the first line")
        await pilot.press("escape")  # refused while it runs
        await pilot.pause()
        assert app.screen is screen
        await pilot.press("ctrl+c")
        await pilot.pause()
    go.set()
    assert done.wait(10), "the drill thread hung after the app left"
    assert "tearing staging-drill down (after the UI left)" in capsys.readouterr().err
