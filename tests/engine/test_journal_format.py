"""Journal formats: a journal written by the release before formats existed (format 1,
``fixtures/journal-v1``, made by ``fixtures/make_journal_v1.py`` with that code) opens,
is migrated, and resume, report and runs work on it; one from a newer format is refused
(exit 2) and never written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from elematrix_tui.engine import events as ev
from elematrix_tui.engine.journal import FORMAT, Journal, JournalError
from elematrix_tui.engine.report import build_report, report_data

from .helpers import make_runner

FIXTURE = Path(__file__).parent / "fixtures" / "journal-v1"
RUN1, RUN2 = "20261201-112316-44f5ea", "20261201-112316-2c7b83"


def install_fixture(tmp_path: Path, state_dir: Path) -> Path:
    """The format-1 journal as deployment 'fixture', and its runbook (phase two's sleep
    made short, so resume does not wait 30 s)."""
    d = state_dir / "deployments" / "fixture"
    d.mkdir(parents=True)
    shutil.copy(FIXTURE / "journal.sqlite", d / "journal.sqlite")
    work = tmp_path / "work"
    work.mkdir()
    (work / "ok").write_text("")
    rb = tmp_path / "rb.yaml"
    rb.write_text((FIXTURE / "rb.yaml").read_text().replace("OUT", str(work))
                  .replace("seconds: 30", "seconds: 0.01"))
    return rb


def tables(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()


def test_format1_journal_is_migrated_and_reads_as_before(tmp_path: Path,
                                                         state_dir: Path) -> None:
    install_fixture(tmp_path, state_dir)
    path = state_dir / "deployments" / "fixture" / "journal.sqlite"
    assert {"steps", "gates"} <= tables(path)
    before = json.loads((FIXTURE / "views-v1.json").read_text())  # the old code's views
    with Journal.open(state_dir, "fixture") as j:
        assert j.get_meta("journal_format") == FORMAT
        assert not {"steps", "gates"} & tables(path)
        assert (path.parent / "journal.sqlite.format1").exists()  # the old file, kept
        assert j.passed_gates() == before["_passed_gates"] == {"one": RUN2}
        assert j.latest_outputs() == before["_latest_outputs"]
        assert j.has_changes() is before["_has_changes"] is True
        for run_id in (RUN1, RUN2):
            now = {k: [v.status, v.attempt, v.outputs, v.message]
                   for k, v in j.step_states(run_id).items()}
            assert now == before[f"_step_states_{run_id}"]
            old, new = before[run_id], json.loads(build_report(j, run_id, "json"))
            ignore = {"duration", "started"}  # wall clock (old) vs monotonic (events)
            assert [{k: v for k, v in s.items() if k not in ignore} for s in new["steps"]] \
                == [{k: v for k, v in s.items() if k not in ignore} for s in old["steps"]]
            for key in ("gates", "status", "exit_code", "params", "restored_steps"):
                assert new[key] == old[key], key
    # Opening again is a no-op (already format 2).
    with Journal.open(state_dir, "fixture") as j:
        assert j.get_meta("journal_format") == FORMAT


def test_resume_of_a_format1_run_reapplies_nothing_finished(tmp_path: Path,
                                                            state_dir: Path) -> None:
    rb = install_fixture(tmp_path, state_dir)
    runner, sink = make_runner(rb, state_dir, deployment="fixture",
                               params={"name": "fixture.example"})
    assert runner.resume(RUN2) == 0
    restored = [e.step_id for e in sink.of(ev.StepFinished) if e.restored]
    assert restored == ["a", "b", "skipme", "lockit", "c"]
    applied = [e.step_id for e in sink.of(ev.StepStarted)]
    assert "a" not in applied and "b" not in applied  # finished in format 1: kept
    assert sink.statuses()["wait"] == "ok" and sink.statuses()["d"] == "ok"
    assert not (tmp_path / "work" / "a").exists()  # local.write was never run again
    with Journal.open(state_dir, "fixture") as j:
        assert j.run(RUN2).status == "passed"  # type: ignore[union-attr]
        data = report_data(j, RUN2)
        assert data["restored_steps"] == restored
        assert j.passed_gates() == {"one": RUN2}


def test_cli_runs_and_report_on_a_format1_journal(tmp_path: Path, state_dir: Path,
                                                  elematrix: str) -> None:
    install_fixture(tmp_path, state_dir)
    out = subprocess.run([elematrix, "runs", "--deployment", "fixture"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert RUN1 in out.stdout and RUN2 in out.stdout
    rep = subprocess.run([elematrix, "report", RUN2], capture_output=True, text=True,
                         timeout=60)
    assert rep.returncode == 0, rep.stderr
    assert "gate_one" in rep.stdout and "interrupted" in rep.stdout


def _newer(state_dir: Path) -> Path:
    with Journal.open(state_dir, "future") as j:
        j.set_meta("journal_format", FORMAT + 1)
    return state_dir / "deployments" / "future" / "journal.sqlite"


def _digest(path: Path) -> dict[str, Any]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.parent.glob("journal.sqlite*"))}


def test_a_journal_of_a_newer_format_is_refused_and_left_alone(state_dir: Path) -> None:
    path = _newer(state_dir)
    before = _digest(path)
    with pytest.raises(JournalError, match="newer elematrix"):
        Journal.open(state_dir, "future")
    assert _digest(path) == before


def test_cli_refuses_a_newer_journal_with_exit_2(state_dir: Path, elematrix: str,
                                                 tmp_path: Path) -> None:
    path = _newer(state_dir)
    before = _digest(path)
    rb = tmp_path / "rb.yaml"
    rb.write_text("runbook: t\nphases:\n  - id: one\n    steps:\n"
                  "      - {id: a, action: local.noop}\n")
    for args in (["run", str(rb), "--deployment", "future", "--yes"],
                 ["resume", "--deployment", "future", "--yes"]):
        out = subprocess.run([elematrix, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert "newer elematrix" in out.stderr and "Traceback" not in out.stderr
    # 'runs' lists every deployment and says which journal it cannot read (its design).
    out = subprocess.run([elematrix, "runs"], capture_output=True, text=True, timeout=60)
    assert "newer elematrix" in out.stderr and "UNREADABLE" in out.stdout
    assert _digest(path) == before
