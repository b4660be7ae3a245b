"""The run screen's journal: what earlier runs of the deployment left, read and folded in.

Read off the UI thread (a 100k-line run takes a second to decode), folded on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...engine import events as ev
from .. import catalog
from ..model import RunModel, event_from_dict


def read_journal(state_dir: Path, deployment: str, resume_run: str | None,
                 ) -> tuple[set[str], str | None, list[Any], str | None]:
    """(phases passed by earlier runs, the run to show, its events, an error or None): the
    last run, or the one being resumed. An unreadable journal is an error to show, never a
    reason to refuse the screen."""
    passed: set[str] = set()
    show: str | None = None
    rows: list[Any] = []
    error: str | None = None
    journal = None
    try:
        journal = catalog.open_journal(state_dir, deployment)
        if journal is not None:
            runs = catalog.journal_runs(journal)
            passed = catalog.passed_phases(journal)
            show = resume_run or (runs[-1].run_id if runs else None)
            if show is not None:
                rows = journal.events(show)
    except Exception as exc:  # the journal is evidence, not a reason to refuse the screen
        error = str(exc)
    finally:
        if journal is not None:
            catalog.close_journal(journal)
    return passed, show, rows, error


def fold_events(model: RunModel, rows: list[Any], run_id: str,
                resume_run: str | None) -> list[tuple[str, str, str]]:
    """Fold a run's journaled events into ``model``; returns its log lines (step, stream,
    line) for the log pane. Log rows (most of them) skip the event classes: a 100k-line
    run must open quickly."""
    lines: list[tuple[str, str, str]] = []
    for row in rows:
        if isinstance(row, dict):
            if row.get("kind") == "log":
                lines.append((str(row.get("step_id") or ""), str(row.get("stream", "stdout")),
                              str(row.get("line", ""))))
                continue
            e = event_from_dict(row, run_id)
        else:
            e = row if isinstance(row, ev.Event) else None
        if isinstance(e, ev.LogLine):
            lines.append((e.step_id, e.stream, e.line))
        elif e is not None:
            model.apply(e)
    if resume_run and model.status == "running":
        # The process that ran it died: what was running is interrupted now.
        model.apply(ev.RunFinished(run_id=resume_run, status="interrupted", exit_code=130,
                                   message="process ended"))
    return lines
