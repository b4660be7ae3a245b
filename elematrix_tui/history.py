"""The commands that read the journals: ``elematrix runs``, ``elematrix report`` and the
choice of the run ``elematrix resume`` continues.

Cut out of ``cli.py`` (the parser and the commands that run runbooks stay there). They
read only; one unreadable journal never stops them listing the other deployments.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .engine.errors import InputError
from .engine.journal import Journal, list_deployments


def _open_or_skip(root: Path, dep: str, *, named: bool) -> Journal | None:
    """A deployment's journal; an unreadable one is an error when named, else skipped with a
    warning (one bad journal must not stop commands about the others)."""
    try:
        return Journal.open(root, dep)
    except InputError as e:
        if named:
            raise
        print(f"warning: skipped deployment {dep!r}: {e}", file=sys.stderr)
        return None


def find_run(root: Path, deployment: str | None, run_id: str | None) -> tuple[str, str]:
    """(deployment, run_id) of the run to resume: ``run_id``, else the latest unfinished
    run of ``deployment``, else of the one deployment that has one (InputError if none,
    or several)."""
    deployments = [deployment] if deployment else list_deployments(root)
    candidates = []
    for dep in deployments:
        if not Journal.exists(root, dep):
            continue
        j = _open_or_skip(root, dep, named=bool(deployment))
        if j is None:
            continue
        try:
            for run in j.runs():
                if run_id and run.id != run_id:
                    continue
                if run.status != "passed":
                    candidates.append((run.started, dep, run.id))
        finally:
            j.close()
    if not candidates:
        what = f"run {run_id}" if run_id else "unfinished run"
        where = f" of deployment {deployment!r}" if deployment else ""
        raise InputError(f"found no {what}{where} to resume in {root}; "
                         f"'elematrix runs' lists the runs")
    if not run_id and not deployment and len({c[1] for c in candidates}) > 1:
        raise InputError("several deployments have unfinished runs; name one with "
                         "--deployment NAME or give the RUN_ID ('elematrix runs' lists them)")
    _, dep, found = max(candidates)
    return dep, found


def list_runs(root: Path, deployment: str | None) -> int:
    """``elematrix runs``: every run (of ``deployment``, or of all), newest first."""
    from .engine.lock import DeploymentLock
    from .engine.paths import deployment_dir

    rows = []
    unreadable: list[str] = []
    for dep in ([deployment] if deployment else list_deployments(root)):
        if not Journal.exists(root, dep):
            continue
        try:
            j = Journal.open(root, dep)
        except InputError as e:  # one bad journal must not hide the other deployments
            print(f"error: {e}", file=sys.stderr)
            unreadable.append(dep)
            continue
        held = DeploymentLock(deployment_dir(root, dep) / "lock").is_held()
        for run in j.runs():
            status = run.status
            if status == "running" and not held:
                status = "interrupted"  # its process died: no one holds the lock
            dur = (run.finished or run.started) - run.started
            rows.append((run.started, run.id, dep, run.runbook, status, f"{dur:.1f}s"))
        j.close()
    rows.sort(reverse=True)
    for dep in unreadable:
        print(f"deployment {dep}: UNREADABLE journal, its runs are not listed (error above)")
    if not rows:
        print(f"no runs in {root}")
        return 0
    print(f"{'RUN':<24} {'DEPLOYMENT':<16} {'RUNBOOK':<12} {'STATUS':<12} {'STARTED':<19} "
          f"DURATION")
    for started, rid, dep, rbname, status, duration in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
        print(f"{rid:<24} {dep:<16} {rbname:<12} {status:<12} {when:<19} {duration}")
    return 0


def write_report(root: Path, deployment: str | None, run_id: str, fmt: str,
                 output: str | None) -> int:
    """``elematrix report``: the report of ``run_id`` (Markdown or JSON), to stdout or
    ``output``."""
    from .engine.report import build_report

    for dep in ([deployment] if deployment else list_deployments(root)):
        if not Journal.exists(root, dep):
            continue
        j = _open_or_skip(root, dep, named=bool(deployment))
        if j is None:
            continue
        try:
            if j.run(run_id) is not None:
                text = build_report(j, run_id, fmt)
                if output:
                    Path(output).write_text(text)
                    print(f"report written to {output}")
                else:
                    sys.stdout.write(text)
                return 0
        finally:
            j.close()
    raise InputError(f"no run {run_id!r} in {root}; 'elematrix runs' lists the runs")
