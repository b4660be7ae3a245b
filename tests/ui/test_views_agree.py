"""One journal, one fold: resume, the report, the TUI's run model and the headless summary
say the same about every step (issue 14: a run was rebuilt three different ways).

The journal is the format-1 fixture (migrated on open), before and after a resume.
"""

from __future__ import annotations

import io
from pathlib import Path

from elematrix_tui.actions import default_registry
from elematrix_tui.engine.journal import Journal
from elematrix_tui.engine.loader import load_runbook
from elematrix_tui.engine.report import report_data
from elematrix_tui.headless import Printer
from elematrix_tui.ui.model import RunModel, event_from_dict

from ..engine.helpers import make_runner
from ..engine.test_journal_format import RUN2, install_fixture


def views(j: Journal, rb_path: Path, run_id: str) -> dict[str, dict[str, tuple[str, int]]]:
    rb = load_runbook(rb_path, default_registry())
    resume = {k: (v.status, v.attempt) for k, v in j.step_states(run_id).items()}
    report: dict[str, tuple[str, int]] = {}
    for s in report_data(j, run_id)["steps"]:
        report[s["step"]] = (s["status"], s["attempt"])  # the last attempt wins
    model = RunModel(rb, passed_phases=j.passed_gates())
    for row in j.events(run_id):
        e = event_from_dict(row, run_id)
        if e is not None:
            model.apply(e)
    tui = {k: (v.status, v.attempt) for k, v in model.steps.items() if v.status != "pending"}
    printer = Printer(quiet=True, stream=io.StringIO())
    for e in j.read_events(run_id):
        printer(e)
    mark = {"FAILED": "failed"}
    headless = {step: (mark.get(tag, tag), attempt) for _, step, tag, attempt, _, _ in
                printer.rows if tag != "restored"}
    headless.update({step: resume[step] for _, step, tag, _, _, _ in printer.rows
                     if tag == "restored"})
    # The phase locks: the TUI shows what the engine's rule says.
    state = j.state()
    for pv in model.phases:
        reason = state.lock_reason(rb.phases, pv.phase_id)
        if pv.state == "locked":
            assert reason is not None, pv.phase_id
        elif reason is not None:
            assert pv.state in ("running", "failed"), pv.phase_id
    return {"resume": resume, "report": report, "tui": tui, "headless": headless}


def test_resume_report_tui_and_headless_agree(tmp_path: Path, state_dir: Path) -> None:
    rb = install_fixture(tmp_path, state_dir)
    with Journal.open(state_dir, "fixture") as j:
        v = views(j, rb, RUN2)
    assert v["resume"]["wait"] == ("interrupted", 1)
    assert v["resume"]["flaky"] == ("failed", 2)
    assert v["resume"] == v["report"] == v["tui"] == v["headless"], v

    runner, _ = make_runner(rb, state_dir, deployment="fixture",
                            params={"name": "fixture.example"})
    assert runner.resume(RUN2) == 0
    with Journal.open(state_dir, "fixture") as j:
        v = views(j, rb, RUN2)
    assert v["resume"]["wait"] == ("ok", 2) and v["resume"]["flaky"] == ("failed", 4)
    assert v["resume"] == v["report"] == v["tui"] == v["headless"], v
