"""The engine's questions answered through modals, driven by a scripted fake runner.

The fake runner calls the TUI's Questions from its own thread, exactly as the engine does,
so these tests cover the thread -> modal -> Future -> thread round trip.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, OptionList, ProgressBar, Static

from elematrix_tui.engine import events as ev
from elematrix_tui.ui import catalog
from elematrix_tui.ui.app import ElematrixApp
from elematrix_tui.ui.screens.help import HelpScreen
from elematrix_tui.ui.screens.modals import ApproveModal, ChooseModal, SecretModal
from elematrix_tui.ui.screens.run import RunScreen
from elematrix_tui.ui.widgets.log_pane import LogPane
from elematrix_tui.ui.widgets.phase_tree import PhaseTree
from elematrix_tui.ui.widgets.step_detail import StepDetail

from .conftest import DATA
from .helpers import RUN_ID, FakeFactory, FakeRunner, finished, shown, started, wait_for

pytestmark = pytest.mark.anyio


def open_app(state_dir: Path, factory: FakeFactory, name: str = "staging",
             runbook: str = "ui-long.yaml") -> ElematrixApp:
    catalog.write_settings(state_dir, name, {"runbook_path": str(DATA / runbook),
                                             "params": {"wait": 1}})
    return ElematrixApp(state_dir, deployment=name, runner_factory=factory)


async def test_approve_choose_and_secret_round_trip(state_dir: Path) -> None:
    answers: dict[str, Any] = {}

    def script(r: FakeRunner) -> int:
        r.emit(ev.RunStarted(RUN_ID, runbook="ui-long", deployment="staging"))
        answers["approve"] = r.req.questions.approve("first", "Open port 22 to 203.0.113.7/32?")
        answers["choose"] = r.req.questions.choose("first", "Trust this host key?",
                                                   ["SHA256:abc (ED25519)", "SHA256:def (RSA)"])
        answers["secret"] = r.req.questions.secret("smtp_password", "the SMTP relay password")
        r.emit(ev.RunFinished(RUN_ID, status="passed", exit_code=0))
        return 0

    factory = FakeFactory(script)
    app = open_app(state_dir, factory)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("r")
        await wait_for(pilot, lambda: shown(app, ApproveModal), what="approve modal")
        app.screen.query_one("#who", Input).value = "alice"
        await pilot.press(*"change ticket 42", "enter")
        await wait_for(pilot, lambda: shown(app, ChooseModal), what="choose modal")
        assert app.screen.query_one(OptionList).option_count == 2
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: shown(app, SecretModal), what="secret modal")
        field = app.screen.query_one("#secret", Input)
        assert field.password  # typed secrets are masked on screen
        await pilot.press(*"s3cret-value", "enter")
        screen = app.screen_stack[-1]
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen)
                       and not app.screen.running, what="run to end")
    assert answers == {"approve": (True, "alice", "change ticket 42"),
                       "choose": "SHA256:def (RSA)", "secret": "s3cret-value"}
    assert isinstance(screen, RunScreen)


async def test_quit_refuses_open_question_and_stops_engine(state_dir: Path) -> None:
    got: dict[str, Any] = {}

    def script(r: FakeRunner) -> int:
        r.emit(ev.RunStarted(RUN_ID, runbook="ui-long", deployment="staging"))
        got["choose"] = r.req.questions.choose("first", "Trust?", ["yes"])
        r.cancelled.wait(5)
        r.emit(ev.RunFinished(RUN_ID, status="interrupted", exit_code=130))
        return 130

    factory = FakeFactory(script)
    app = open_app(state_dir, factory)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("r")
        await wait_for(pilot, lambda: shown(app, ChooseModal), what="choose modal")
        # ctrl+c works from inside a modal: the run screen asks, then interrupts.
        await pilot.press("ctrl+c")
        await pilot.pause()
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.is_running, what="exit")
    assert got["choose"] is None
    assert factory.runners[0].cancelled.is_set()
    assert app.return_code == 130


async def test_live_log_filter_progress_pause_and_follow(state_dir: Path) -> None:
    release = threading.Event()

    def script(r: FakeRunner) -> int:
        r.emit(ev.RunStarted(RUN_ID, runbook="ui-long", deployment="staging"))
        r.emit(ev.PhaseStarted(RUN_ID, phase_id="only", title="Wait"))
        r.emit(started("only", "first", "Do the quick part"))
        for i in range(500):
            r.emit(ev.LogLine(RUN_ID, step_id="first", line=f"first {i}"))
        r.emit(ev.Note(RUN_ID, step_id="first", name="aws.call",
                       data={"service": "ec2", "operation": "RunInstances",
                             "request_id": "req-1234"}))
        r.emit(finished("only", "first", outputs={"instance_id": "i-0abc"}))
        r.emit(started("only", "long_wait", "Wait for the slow part"))
        r.emit(ev.LogLine(RUN_ID, step_id="long_wait", line="waiting", stream="stderr"))
        r.emit(ev.Progress(RUN_ID, step_id="long_wait", message="instance pending",
                           elapsed=12.0, done=None, total=None, expected=30.0))
        release.wait(10)
        r.emit(finished("only", "long_wait", status="interrupted"))
        r.emit(ev.PhaseFinished(RUN_ID, phase_id="only", status="paused"))
        r.emit(ev.RunFinished(RUN_ID, status="paused", exit_code=130))
        return 130

    factory = FakeFactory(script)
    app = open_app(state_dir, factory)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("r")
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await wait_for(pilot, lambda: screen.model.steps["long_wait"].progress is not None,
                       what="progress")
        # The detail pane follows the running step and shows a progress bar.
        assert screen.query_one(PhaseTree).selected() == ("step", "long_wait")
        detail = screen.query_one(StepDetail)
        bar = detail.query_one(ProgressBar)
        assert not bar.has_class("hidden") and bar.total == 30.0
        assert "instance pending" in str(detail.query_one("#progress-text", Static).render())
        pane = screen.query_one(LogPane)
        assert pane.total == 501
        # Filter to the first step; the detail shows its AWS request id.
        screen.query_one(PhaseTree).select_id("first")
        await pilot.pause()
        assert "req-1234" in str(detail.query_one("#detail-text", Static).render())
        assert "i-0abc" in str(detail.query_one("#detail-text", Static).render())
        await pilot.press("f")
        assert pane.step_filter == "first"
        from textual.widgets import Log

        log = pane.query_one(Log)
        assert log.line_count == 500 and log.lines[0] == "first 0"
        await pilot.press("f")
        assert pane.step_filter is None and log.line_count == 501
        assert log.lines[-1] == "long_wait │ ! waiting"
        # Pause asks the runner to stop after the current step.
        await pilot.press("p")
        assert factory.runners[0].paused.is_set()
        release.set()
        await wait_for(pilot, lambda: not screen.running, what="run end")
        assert screen.model.status == "paused"
        # r now resumes the paused run instead of starting a new one.
        release.clear()
        await pilot.press("r")
        await wait_for(pilot, lambda: len(factory.runners) == 2, what="second runner")
        assert factory.runners[1].resumed == RUN_ID
        release.set()
        await wait_for(pilot, lambda: not screen.running, what="second run end")


async def test_help_screen_and_command_palette(state_dir: Path) -> None:
    factory = FakeFactory(lambda r: 0)
    app = open_app(state_dir, factory)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, RunScreen)
        # The palette offers the screen's actions; choosing one runs it.
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"run phase")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(factory.requests) == 1, what="palette to run")
        assert factory.requests[0].phases == ["only"]


async def test_engine_error_is_reported_not_raised(state_dir: Path) -> None:
    def script(r: FakeRunner) -> int:
        raise RuntimeError("deployment lock held by pid 4242 [/not markup]")

    app = open_app(state_dir, FakeFactory(script))
    async with app.run_test(size=(100, 32)) as pilot:
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await pilot.press("r")
        await wait_for(pilot, lambda: not screen.running, what="run end")
        assert screen.last_exit == 1
        assert any("lock held by pid 4242" in str(n.message) for n in app._notifications)
