"""The operator's flows through the real engine: new deployment, form, run, gate, confirm, resume.

Actions are ``local.*`` (no network). Every test gets its own state and config dir.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Button, Collapsible, Input, Select, Static

from elematrix_tui.ui import catalog
from elematrix_tui.ui.app import ElematrixApp
from elematrix_tui.ui.screens.help import HelpScreen
from elematrix_tui.ui.screens.modals import ConfirmModal, YesNoModal
from elematrix_tui.ui.screens.new_deployment import NewDeploymentScreen
from elematrix_tui.ui.screens.params import ParamFormScreen
from elematrix_tui.ui.screens.run import RunScreen
from elematrix_tui.ui.screens.start import StartScreen
from elematrix_tui.ui.widgets.gate_panel import GatePanel
from elematrix_tui.ui.widgets.log_pane import LogPane
from elematrix_tui.ui.widgets.phase_tree import PhaseTree

from .conftest import DATA
from .helpers import shown, wait_for

pytestmark = pytest.mark.anyio


def text_of(widget: Static) -> str:
    return str(widget.render())


def run_screen(app: ElematrixApp) -> RunScreen:
    assert isinstance(app.screen, RunScreen), type(app.screen).__name__
    return app.screen


async def test_new_deployment_form_run_gate_rerun_confirm(state_dir: Path) -> None:
    app = ElematrixApp(state_dir)
    async with app.run_test(size=(100, 32)) as pilot:
        assert isinstance(app.screen, StartScreen)
        await pilot.press("n")
        assert isinstance(app.screen, NewDeploymentScreen)

        # A bad name is refused with the rule, and the screen stays.
        await pilot.press(*"Bad", "ctrl+s")
        assert isinstance(app.screen, NewDeploymentScreen)
        assert "lower-case" in text_of(app.screen.query_one("#err-name", Static))
        app.screen.query_one("#name", Input).value = "staging"
        app.screen.query_one("#runbook", Select).value = str(DATA / "ui-flow.yaml")
        await pilot.press("ctrl+s")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, ParamFormScreen)
        await wait_for(pilot, lambda: len(form.query(".p-error")) == 6, what="the form")

        # Empty required fields and malformed values show inline errors and block submit.
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, ParamFormScreen)
        errors = {n: text_of(form.query_one(f"#err-{n}", Static))
                  for n in ("server_name", "operator_cidr", "admin_email")}
        assert all("required" in e for e in errors.values()), errors
        form.query_one("#in-operator_cidr", Input).value = "203.0.113.7"
        form.query_one("#in-admin_email", Input).value = "not-an-address"
        form.query_one("#in-workers", Input).value = "99"
        await pilot.pause()
        assert "prefix length" in text_of(form.query_one("#err-operator_cidr", Static))
        assert "e-mail" in text_of(form.query_one("#err-admin_email", Static))
        assert "at most 8" in text_of(form.query_one("#err-workers", Static))
        # The permanent parameter says why it can never change.
        assert "baked into every Matrix user id" in str(
            form.query_one("#field-server_name .p-warn", Static).render())

        form.query_one("#in-server_name", Input).value = "example.org"
        form.query_one("#in-operator_cidr", Input).value = "203.0.113.7/32"
        form.query_one("#in-admin_email", Input).value = "ops@example.org"
        form.query_one("#in-workers", Input).value = "3"
        # The generated secret has a default (its generator): it is in "advanced".
        form.query_one("#advanced", Collapsible).collapsed = False
        await pilot.pause()
        form.query_one("#gen-admin_password").scroll_visible(animate=False)
        await pilot.pause()
        await pilot.click("#gen-admin_password")
        await pilot.pause()
        secret = form.query_one("#in-admin_password", Input).value
        assert len(secret) == 24
        await pilot.press("ctrl+s")
        await pilot.pause()
        screen = run_screen(app)
        # Remembered in the journal (the one parameter store), never in a tui.json.
        assert not (state_dir / "deployments/staging/tui.json").exists()
        settings = catalog.read_settings(state_dir, "staging")
        assert settings["params"]["server_name"] == "example.org"
        assert settings["params"]["workers"] == 3
        assert settings["aws_region"] == "us-east-1"
        assert secret not in json.dumps(settings)

        # Run the first phase: the gate fails and shows its diagnosis and fix.
        await pilot.press("r")
        await wait_for(pilot, lambda: screen.model.status == "failed" and not screen.running,
                       what="first phase to fail at its gate")
        steps = screen.model.steps
        assert steps["say_hello"].status == "ok"
        assert steps["say_hello"].outputs == {"greeting": "hi"}
        assert steps["marker_present"].status == "failed"
        gates = text_of(screen.query_one(GatePanel))
        assert "Diagnosis: the operator has not created the marker file yet" in gates
        assert "Fix: create the marker file, then re-run" in gates
        assert screen.model.phase("change").state == "locked"  # type: ignore[union-attr]
        assert "checking the workstation" in "\n".join(
            line for _, _, line in screen.query_one(LogPane).kept)
        # The secret reached the engine (secret store) but never the screen.
        assert secret not in "\n".join(ln for _, _, ln in screen.query_one(LogPane).kept)

        # Fix it, re-run: the failed run continues; finished steps are restored, not re-run.
        (state_dir / "deployments/staging/marker").write_text("fixed\n")
        await pilot.press("e")
        await wait_for(pilot, lambda: screen.model.status == "passed" and not screen.running,
                       what="re-run to pass")
        assert steps["marker_present"].status == "ok"
        assert steps["say_hello"].restored
        assert screen.model.phase("prepare").state == "passed"  # type: ignore[union-attr]
        assert screen.model.phase("change").state == "ready"  # type: ignore[union-attr]

        # The next phase has a confirm step: the modal shows what will change.
        screen.query_one(PhaseTree).select_id("change")
        await pilot.press("r")
        await wait_for(pilot, lambda: shown(app, ConfirmModal), what="confirm modal")
        modal = app.screen
        assert isinstance(modal, ConfirmModal)
        assert any("config.txt" in c for c in modal.changes)
        await pilot.click("#yes")
        await wait_for(pilot, lambda: screen.model.status == "passed" and not screen.running,
                       what="second phase to pass")
        assert (state_dir / "deployments/staging/config.txt").read_text() == \
            "server example.org\n"
        assert screen.model.phase("change").state == "passed"  # type: ignore[union-attr]

        # Report export writes Markdown next to the journal and says where.
        await pilot.press("x")
        reports = list((state_dir / "deployments/staging/reports").glob("*.md"))
        assert len(reports) == 1
        assert secret not in reports[0].read_text()


async def test_destructive_confirm_needs_the_deployment_name(state_dir: Path) -> None:
    catalog.write_settings(state_dir, "prod-eu", {
        "runbook_path": str(DATA / "ui-destructive.yaml"), "params": {}})
    app = ElematrixApp(state_dir, deployment="prod-eu")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = run_screen(app)
        await pilot.press("r")
        await wait_for(pilot, lambda: shown(app, ConfirmModal), what="confirm modal")
        modal = app.screen
        assert isinstance(modal, ConfirmModal) and modal.destructive
        go = modal.query_one("#yes", Button)
        assert go.disabled
        await pilot.press(*"prod")
        assert go.disabled
        await pilot.press(*"-eu")
        await pilot.pause()
        assert not go.disabled
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.model.status == "passed" and not screen.running,
                       what="destructive step to run")
        assert (state_dir / "deployments/prod-eu/gone.txt").exists()


async def test_declined_confirm_changes_nothing(state_dir: Path) -> None:
    catalog.write_settings(state_dir, "prod-eu", {
        "runbook_path": str(DATA / "ui-destructive.yaml"), "params": {}})
    app = ElematrixApp(state_dir, deployment="prod-eu")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = run_screen(app)
        await pilot.press("r")
        await wait_for(pilot, lambda: shown(app, ConfirmModal), what="confirm modal")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not screen.running, what="run to stop")
        assert screen.last_exit == 130  # declined: resumable (docs/tui.md)
        assert not (state_dir / "deployments/prod-eu/gone.txt").exists()


async def test_quit_while_running_then_restart_resumes(state_dir: Path) -> None:
    catalog.write_settings(state_dir, "longrun", {
        "runbook_name": "ui-long", "runbook_path": str(DATA / "ui-long.yaml"),
        "params": {"wait": 30}})
    app = ElematrixApp(state_dir, deployment="longrun")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = run_screen(app)
        await pilot.press("r")
        await wait_for(pilot, lambda: screen.model.steps["long_wait"].status == "running",
                       what="the long step to start")
        await wait_for(pilot, lambda: screen.model.steps["long_wait"].progress is not None,
                       what="a progress report")
        await pilot.press("q")
        await pilot.pause()
        assert isinstance(app.screen, YesNoModal)
        await pilot.press("y")
        await wait_for(pilot, lambda: not app.is_running, timeout=15, what="the app to exit")
    assert app.return_code == 130

    # Make the wait short for the resumed run (the operator's params win over the journal's).
    settings = catalog.read_settings(state_dir, "longrun")
    settings["params"]["wait"] = 0
    catalog.write_settings(state_dir, "longrun", settings)

    app2 = ElematrixApp(state_dir)
    async with app2.run_test(size=(100, 32)) as pilot:
        start = app2.screen
        assert isinstance(start, StartScreen)
        assert start.deployments[0].interrupted_run is not None
        assert "Interrupted runs: longrun" in text_of(start.query_one("#resume-hint", Static))
        await pilot.press("enter")
        await pilot.pause()
        screen = run_screen(app2)
        await wait_for(pilot, lambda: not screen.restoring, what="the journal replay")
        # The screen is restored from the journal before anything runs again.
        assert screen.resume_run == start.deployments[0].interrupted_run
        assert screen.model.steps["first"].status == "ok"
        assert screen.model.steps["first"].outputs == {"instance_id": "i-0123456789abcdef0"}
        assert screen.model.steps["long_wait"].status == "interrupted"
        assert screen.model.steps["last"].status == "pending"
        kept = [line for _, _, line in screen.query_one(LogPane).kept]
        assert "quick part done" in kept
        assert "interrupted" in text_of(screen.query_one("#run-head", Static))
        await pilot.press("r")
        await wait_for(pilot, lambda: screen.model.status == "passed" and not screen.running,
                       what="the resumed run to pass")
        assert screen.model.steps["first"].restored
        assert screen.model.steps["last"].status == "ok"
        assert screen.model.run_id == start.deployments[0].interrupted_run


@pytest.mark.parametrize("size", [(80, 24), (200, 60)])
async def test_run_screen_fits_small_and_large_terminals(state_dir: Path,
                                                         size: tuple[int, int]) -> None:
    catalog.write_settings(state_dir, "longrun", {
        "runbook_path": str(DATA / "ui-long.yaml"), "params": {"wait": 0}})
    app = ElematrixApp(state_dir, deployment="longrun")
    async with app.run_test(size=size) as pilot:
        screen = run_screen(app)
        await pilot.press("r")
        await wait_for(pilot, lambda: screen.model.status == "passed" and not screen.running,
                       what="run to pass")
        log = screen.query_one(LogPane)
        tree = screen.query_one(PhaseTree)
        assert log.size.height >= 8 and tree.size.height >= 6
        assert log.region.right <= size[0] and log.region.bottom <= size[1]
        if size[0] >= 200:
            assert log.size.width >= 100  # a big terminal gives the log the room


async def test_practice_entry_opens_the_run_screen_with_notices(state_dir: Path) -> None:
    params = {"server_name": "practice.test", "operator_cidr": "127.0.0.1/32",
              "admin_email": "ops@practice.test"}
    app = ElematrixApp(state_dir, runbook=DATA / "ui-flow.yaml", deployment="practice",
                       params=params, practice=True, phases=["prepare"],
                       notices=["Practice: AWS is an emulator on 127.0.0.1 (moto).",
                                "No Docker engine here: only the prepare phase runs."])
    async with app.run_test(size=(100, 32)) as pilot:
        screen = run_screen(app)
        banner = text_of(screen.query_one("#banner", Static))
        # One line that fits (issue 17): the notice itself is on the help screen.
        assert "PRACTICE" in banner and "1 note for this session: ? shows it" in banner
        assert "only the prepare phase runs" not in banner
        assert not app._notifications  # notices are not toasted over the log
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        notes = app.screen.session_notes
        assert "only the prepare phase runs" in notes and "Practice: AWS" in notes
        await pilot.press("escape")
        await pilot.pause()
        assert screen.params["server_name"] == "practice.test"
        # A phase outside this session's phases is refused with the reason.
        await wait_for(pilot, lambda: not screen.restoring, what="the journal replay")
        screen.model.passed.add("prepare")
        screen.model.recompute_locks()
        screen.query_one(PhaseTree).select_id("change")
        await pilot.press("r")
        await pilot.pause()
        assert not screen.running
        assert any("cannot run in this session" in str(n.message) for n in app._notifications)


async def test_run_one_step_and_skip_a_skippable_one(state_dir: Path) -> None:
    catalog.write_settings(state_dir, "steps", {"runbook_path": str(DATA / "ui-steps.yaml"),
                                                "params": {}})
    app = ElematrixApp(state_dir, deployment="steps")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = run_screen(app)
        await wait_for(pilot, lambda: not screen.restoring, what="the journal replay")
        tree = screen.query_one(PhaseTree)
        tree.select_id("step_b")
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.last_exit is not None and not screen.running,
                       what="one step to run")
        steps = screen.model.steps
        assert steps["step_b"].status == "ok"
        assert steps["step_a"].status == "pending" and steps["optional_c"].status == "pending"
        # Skipping is refused where the runbook does not allow it...
        tree.select_id("step_a")
        await pilot.press("k")
        assert not screen.running
        assert any("does not allow skipping" in str(n.message) for n in app._notifications)
        # ...and recorded where it does.
        tree.select_id("optional_c")
        await pilot.press("k")
        await wait_for(pilot, lambda: screen.model.status == "passed" and not screen.running,
                       what="phase with a skipped step")
        assert steps["optional_c"].status == "skipped"
        assert steps["step_a"].status == "ok"


async def test_edit_parameters_of_an_existing_deployment(state_dir: Path) -> None:
    catalog.write_settings(state_dir, "staging", {
        "runbook_path": str(DATA / "ui-flow.yaml"), "aws_region": "eu-west-1",
        "params": {"server_name": "example.org", "operator_cidr": "203.0.113.7/32",
                   "admin_email": "ops@example.org", "workers": 2}})
    app = ElematrixApp(state_dir, deployment="staging")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = run_screen(app)
        await wait_for(pilot, lambda: not screen.restoring, what="the journal replay")
        await pilot.press("P")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, ParamFormScreen)
        await wait_for(pilot, lambda: len(form.query(".p-error")) == 6, what="the form")
        # The stored secret is not asked again: empty means "keep".
        assert form.query_one("#in-admin_password", Input).placeholder == \
            "stored: type to replace"
        form.query_one("#in-workers", Input).value = "5"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert app.screen is screen
        assert screen.params["workers"] == 5
    settings = catalog.read_settings(state_dir, "staging")
    assert settings["params"]["workers"] == 5 and settings["aws_region"] == "eu-west-1"


async def test_plan_of_the_selected_phase_masks_secrets(state_dir: Path) -> None:
    catalog.write_settings(state_dir, "staging", {
        "runbook_path": str(DATA / "ui-flow.yaml"),
        "params": {"server_name": "example.org", "operator_cidr": "203.0.113.7/32",
                   "admin_email": "ops@example.org"}})
    app = ElematrixApp(state_dir, deployment="staging")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = run_screen(app)
        await wait_for(pilot, lambda: not screen.restoring, what="the journal replay")
        screen.params["admin_password"] = "typed-secret-value-123"
        await pilot.press("v")
        from elematrix_tui.ui.screens.plan import PlanScreen

        await wait_for(pilot, lambda: isinstance(app.screen, PlanScreen), what="the plan")
        text = app.screen.text  # type: ignore[attr-defined]
        assert "Nothing has been changed" in text and "say_hello" in text
        assert "hello example.org" in text
        assert "typed-secret-value-123" not in text
        await pilot.press("escape")
        assert app.screen is screen


async def test_approval_step_records_who_and_comment(state_dir: Path) -> None:
    from elematrix_tui.ui.screens.modals import ApproveModal
    from elematrix_tui.ui.widgets.step_detail import StepDetail

    catalog.write_settings(state_dir, "staging", {"runbook_path": str(DATA / "ui-approve.yaml"),
                                                  "params": {}})
    app = ElematrixApp(state_dir, deployment="staging")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = run_screen(app)
        await pilot.press("r")
        await wait_for(pilot, lambda: shown(app, ApproveModal), what="approve modal")
        app.screen.query_one("#who", Input).value = "carol"
        await pilot.press(*"CAB-7 ok", "enter")
        await wait_for(pilot, lambda: screen.model.status == "passed" and not screen.running,
                       what="approved run")
        step = screen.model.steps["sign_off"]
        assert step.outputs == {"approved_by": "carol", "comment": "CAB-7 ok"}
        screen.query_one(PhaseTree).select_id("sign_off")
        await pilot.pause()
        detail = str(screen.query_one(StepDetail).query_one("#detail-text", Static).render())
        assert "approved by carol: CAB-7 ok" in detail
