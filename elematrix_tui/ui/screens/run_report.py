"""The run screen's report: the engine's Markdown report of a run, written beside the
deployment's journal (or, without a journal, a summary of what the screen shows)."""

from __future__ import annotations

import time
from pathlib import Path

from .. import catalog
from .. import format as fmt
from ..model import RunModel


def export_report(state_dir: Path, deployment: str, run_id: str, model: RunModel) -> Path:
    """Build the report with the engine's ``build_report`` (a summary of the screen before it)."""
    out_dir = catalog.deployments_dir(state_dir) / deployment / "reports"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{run_id}.md"
    text: str | None = None
    try:
        from ...engine.report import build_report
    except ImportError:
        build_report = None  # type: ignore[assignment]
    if build_report is not None:
        journal = catalog.open_journal(state_dir, deployment)
        if journal is not None:
            try:
                text = build_report(journal, run_id, fmt="md")
            finally:
                catalog.close_journal(journal)
    if text is None:
        from ...engine.text import clean

        text = clean(summary_markdown(deployment, run_id, model))
    path.write_text(text, encoding="utf-8")
    return path


def summary_markdown(deployment: str, run_id: str, model: RunModel) -> str:
    """A short Markdown summary of what the screen shows (no secrets: inputs are masked)."""
    out = [f"# Run {run_id} of {deployment}", "",
           f"Runbook: {model.runbook.title or model.runbook.runbook}  ",
           f"Status: {model.status}", ""]
    for pv in model.phases:
        out += [f"## {pv.label} ({pv.state})", "", "| step | status | attempts | time |",
                "|---|---|---|---|"]
        for sv in pv.all():
            out.append(f"| {sv.label} | {sv.status} | {sv.attempt} | {fmt.duration(sv.duration)} |")
        for sv in pv.all():
            if sv.status == "failed":
                out += ["", f"**{sv.label}** failed: {sv.message}"]
                if sv.diagnosis:
                    out.append(f"- Diagnosis: {sv.diagnosis}")
                if sv.fix:
                    out.append(f"- Fix: {sv.fix}")
        out.append("")
    out.append(f"_Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')}_")
    return "\n".join(out) + "\n"
