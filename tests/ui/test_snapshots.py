"""Snapshot tests (pytest-textual-snapshot): start screen, form, run screen mid-run, failed
gate, confirm modal. Deterministic: fixed sizes, a fake runner with a fixed run id, frozen
durations (conftest), no clocks or host names on these screens, no cursor blink.

Update after an intended change: ``pytest tests/ui/test_snapshots.py --snapshot-update``,
then look at the SVGs in ``tests/ui/__snapshots__/``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from elematrix_tui.engine import events as ev
from elematrix_tui.engine.journal import Journal, RunRow
from elematrix_tui.ui import catalog
from elematrix_tui.ui.app import ElematrixApp
from elematrix_tui.ui.screens.modals import ConfirmModal
from elematrix_tui.ui.screens.run import RunScreen

from .conftest import DATA
from .helpers import RUN_ID, FakeFactory, FakeRunner, finished, shown, started, wait_for


@pytest.fixture(autouse=True)
def _only_test_runbooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bundled runbooks change as the product grows: list three fixed test ones here."""
    original = catalog.list_runbooks
    keep = {"ui-flow", "ui-long", "ui-destructive"}
    monkeypatch.setattr(catalog, "list_runbooks", lambda user_dir=None: [
        r for r in original(user_dir) if r.source == "user" and r.name in keep])


def no_blink(pilot: Pilot[Any]) -> None:
    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False


def mid_run_script(r: FakeRunner) -> int:
    r.emit(ev.RunStarted(RUN_ID, runbook="ui-long", deployment="staging"))
    r.emit(ev.PhaseStarted(RUN_ID, phase_id="only", title="Wait for something slow"))
    r.emit(started("only", "first", "Do the quick part", inputs={"token": "********"}))
    for i in range(30):
        r.emit(ev.LogLine(RUN_ID, step_id="first", line=f"provisioning line {i}"))
    r.emit(ev.Note(RUN_ID, step_id="first", name="aws.call",
                   data={"service": "ec2", "operation": "RunInstances",
                         "request_id": "req-0a1b2c"}))
    r.emit(finished("only", "first", outputs={"instance_id": "i-0123456789abcdef0"}))
    r.emit(started("only", "long_wait", "Wait for the slow part",
                   inputs={"seconds": 30, "lines": 2}))
    r.emit(ev.LogLine(RUN_ID, step_id="long_wait", line="instance is pending"))
    r.emit(ev.Progress(RUN_ID, step_id="long_wait", message="waiting for running state",
                       elapsed=12.0, expected=30.0))
    r.cancelled.wait(30)
    return 130


def concurrent_script(r: FakeRunner) -> int:
    """Three steps of one phase running at once (needs:, engine/schedule.py)."""
    r.emit(ev.RunStarted(RUN_ID, runbook="ui-long", deployment="staging"))
    r.emit(ev.PhaseStarted(RUN_ID, phase_id="only", title="Wait for something slow"))
    for step, title in (("first", "Do the quick part"), ("long_wait", "Wait for the slow part"),
                        ("last", "Finish")):
        r.emit(started("only", step, title))
        r.emit(ev.LogLine(RUN_ID, step_id=step, line=f"{step} is under way"))
    r.emit(ev.Progress(RUN_ID, step_id="long_wait", message="waiting for running state",
                       elapsed=12.0, expected=30.0))
    r.cancelled.wait(30)
    return 130


def gate_fail_script(r: FakeRunner) -> int:
    r.emit(ev.RunStarted(RUN_ID, runbook="ui-long", deployment="staging"))
    r.emit(ev.PhaseStarted(RUN_ID, phase_id="only", title="Wait for something slow"))
    for step in ("first", "long_wait", "last"):
        r.emit(started("only", step, step))
        r.emit(finished("only", step))
    r.emit(started("only", "all_done", "Everything finished", gate=True))
    r.emit(finished("only", "all_done", status="failed", gate=True,
                    message="GET http://127.0.0.1/_matrix/client/versions: 502",
                    diagnosis="nginx answers but Synapse does not: the synapse container "
                              "is restarting (database password mismatch)",
                    fix="run 'docker compose logs synapse' on the instance, fix "
                        ".env POSTGRES_PASSWORD, then re-run the gate (e)"))
    r.emit(ev.GateResult(RUN_ID, phase_id="only", gate_id="all_done", passed=False))
    r.emit(ev.PhaseFinished(RUN_ID, phase_id="only", status="failed"))
    r.emit(ev.RunFinished(RUN_ID, status="failed", exit_code=1))
    return 1


def confirm_script(r: FakeRunner) -> int:
    r.emit(ev.RunStarted(RUN_ID, runbook="ui-destructive", deployment="prod-eu"))
    r.emit(ev.PhaseStarted(RUN_ID, phase_id="teardown", title="Tear down"))
    r.req.questions.confirm("remove_everything", "Remove everything",
                            ["terminate instance i-0123456789abcdef0",
                             "release Elastic IP 198.51.100.7",
                             "delete security group sg-0abc (port 22 from 203.0.113.7/32)"],
                            destructive=True, type_to_confirm=None)
    return 130


def app_for(state_dir: Path, script: Any, name: str, runbook: str) -> ElematrixApp:
    catalog.write_settings(state_dir, name, {"runbook_path": str(DATA / runbook),
                                             "params": {"wait": 30}})
    return ElematrixApp(state_dir, deployment=name, runner_factory=FakeFactory(script))


def test_start_screen(snap_compare: Any, state_dir: Path) -> None:
    catalog.write_settings(state_dir, "staging", {"runbook_name": "ui-flow"})
    catalog.write_settings(state_dir, "prod-eu", {"runbook_name": "ui-long",
                                                  "runbook_path": str(DATA / "ui-long.yaml")})
    j = Journal.open(state_dir, "prod-eu")
    j.add_run(RunRow(RUN_ID, "ui-long", str(DATA / "ui-long.yaml"), "", {}, None,
                     "interrupted", 1_700_000_000.0, None, 130, None, None, None, None))
    j.close()
    assert snap_compare(ElematrixApp(state_dir), terminal_size=(80, 24))


def test_parameter_form_with_errors(snap_compare: Any, state_dir: Path) -> None:
    async def fill(pilot: Pilot[Any]) -> None:
        app = pilot.app
        assert isinstance(app, ElematrixApp)
        await wait_for(pilot, lambda: app.screen.query("#in-operator_cidr").first() is not None,
                       what="form")
        no_blink(pilot)
        app.screen.query_one("#in-operator_cidr", Input).value = "203.0.113.7"
        await pilot.press("ctrl+s")
        await pilot.pause()
        app.clear_notifications()

    app = ElematrixApp(state_dir, runbook=DATA / "ui-flow.yaml")

    async def to_form(pilot: Pilot[Any]) -> None:
        await pilot.pause()
        no_blink(pilot)
        pilot.app.screen.query_one("#name", Input).value = "staging"
        await pilot.press("ctrl+s")
        await fill(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=to_form)


def test_run_screen_mid_run(snap_compare: Any, state_dir: Path) -> None:
    app = app_for(state_dir, mid_run_script, "staging", "ui-long.yaml")

    async def run(pilot: Pilot[Any]) -> None:
        await pilot.press("r")
        screen = pilot.app.screen
        assert isinstance(screen, RunScreen)
        await wait_for(pilot, lambda: screen.model.steps["long_wait"].progress is not None,
                       what="progress")

    assert snap_compare(app, terminal_size=(100, 30), run_before=run)


def test_run_screen_concurrent_steps(snap_compare: Any, state_dir: Path) -> None:
    app = app_for(state_dir, concurrent_script, "staging", "ui-long.yaml")

    async def run(pilot: Pilot[Any]) -> None:
        await pilot.press("r")
        screen = pilot.app.screen
        assert isinstance(screen, RunScreen)
        await wait_for(pilot, lambda: screen.model.steps["long_wait"].progress is not None
                       and len(screen.model.running) == 3, what="three steps running")
        assert "3 steps at once: first, long_wait, last" in screen._head()

    assert snap_compare(app, terminal_size=(100, 30), run_before=run)


def test_failed_gate(snap_compare: Any, state_dir: Path) -> None:
    app = app_for(state_dir, gate_fail_script, "staging", "ui-long.yaml")

    async def run(pilot: Pilot[Any]) -> None:
        await pilot.press("r")
        screen = pilot.app.screen
        assert isinstance(screen, RunScreen)
        await wait_for(pilot, lambda: not screen.running, what="run end")
        pilot.app.clear_notifications()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run)


def test_confirm_modal(snap_compare: Any, state_dir: Path) -> None:
    app = app_for(state_dir, confirm_script, "prod-eu", "ui-destructive.yaml")
    done = threading.Event()

    async def run(pilot: Pilot[Any]) -> None:
        await pilot.press("r")
        await wait_for(pilot, lambda: shown(pilot.app, ConfirmModal),
                       what="confirm modal")
        no_blink(pilot)
        await pilot.press(*"prod")
        done.set()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run)
    assert done.is_set()
