"""Reports built from the journal alone (no live state): Markdown for people, JSON for tools."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from .journal import Journal
from .state import RunInfo
from .text import clean, clean_data

# The journal meta key of the last audit (written by audit/run.py, read here).
LAST_AUDIT = "last_audit"


def _fmt_ts(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def report_data(journal: Journal, run_id: str) -> dict[str, Any]:
    """Everything the report shows, as plain data: the run's row, and the fold of its events
    (``engine/state.py``, the same fold resume and the TUI use)."""
    run = journal.run(run_id)
    if run is None:
        raise KeyError(run_id)
    info = journal.state(run_id).run(run_id) or RunInfo(run_id)
    steps: list[dict[str, Any]] = []
    for a in info.attempts:
        started = a.started or run.started
        steps.append({
            "phase": a.phase_id, "step": a.step_id, "role": a.role,
            "attempt": a.attempt, "status": a.status,
            "duration": round(a.duration or 0.0, 3),
            "started": started, "inputs": a.inputs, "outputs": a.outputs,
            "message": a.message, "diagnosis": a.diagnosis, "fix": a.fix})
    gates = [{"phase_id": g.phase_id, "gate_id": g.gate_id, "passed": g.passed,
              "message": g.message, "diagnosis": g.diagnosis, "fix": g.fix,
              "duration": g.duration} for g in info.gates]
    notes = [{"step": n.step_id, "name": n.name, **n.data} for n in info.notes]
    questions = [{"step": q.step_id, "question": q.question, "prompt": q.prompt,
                  "answer": q.answer} for q in info.questions]
    return {
        "run_id": run.id, "runbook": run.runbook, "runbook_path": run.runbook_path,
        "status": run.status, "exit_code": run.exit_code, "message": run.message,
        "started": run.started, "finished": run.finished,
        "duration": round((run.finished or time.time()) - run.started, 3),
        "params": run.params, "phases": run.phases, "host": run.host, "user": run.user,
        "steps": steps, "restored_steps": list(info.restored),
        "gates": gates, "notes": notes, "questions": questions,
        # The deployment's last `elematrix audit` (audit/run.py keeps it in the journal).
        "last_audit": journal.get_meta(LAST_AUDIT),
    }


def build_report(journal: Journal, run_id: str, fmt: str = "md") -> str:
    """The run's report as Markdown (``md``) or JSON; control characters are neutralised."""
    # Host output and AWS messages are recorded as they came; a report shows them cleaned
    # (a decoded JSON string is as dangerous on a terminal as the Markdown).
    data = clean_data(report_data(journal, run_id))
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True, default=str)
    return clean(_markdown(data))


def _audit_section(a: dict[str, Any] | None) -> list[str]:
    """The deployment's last audit: what failed, what is accepted and why, the counts."""
    if not a:
        return ["", "## Last audit", "", "None yet: `elematrix audit DEPLOYMENT` runs one."]
    c = a.get("counts") or {}
    out = ["", "## Last audit", "",
           f"- {_fmt_ts(a.get('started'))} by {a.get('engine')}; phases passed: "
           f"{', '.join(a.get('phases') or []) or 'none'}",
           f"- {c.get('passed', 0)} passed, **{c.get('failed', 0)} failed**, "
           f"{c.get('accepted', 0)} accepted, {c.get('account', 0)} account-wide "
           f"(exit {a.get('exit_code')})", ""]
    shown = [f for f in a.get("findings") or [] if f.get("verdict") in ("failed", "accepted")]
    if shown:
        out += ["| control | check | verdict | resource | why |", "|---|---|---|---|---|"]
        for f in shown:
            out.append(f"| {cell(f.get('control') or '-')} | {cell(f.get('check'))} | "
                       f"{'FAILED' if f['verdict'] == 'failed' else 'accepted'} | "
                       f"{cell(f.get('resource'))} | {cell(f.get('reason') or f.get('message'))} |")
    return out


def cell(value: Any, *, code: bool = False) -> str:
    """One Markdown table cell: a ``|``, a newline or a backtick cannot break the table.

    ``code=True`` shows the value as a code span, fenced with more backticks than it holds.
    """
    text = str(value).replace("\r\n", "\n").replace("\n", " ").replace("|", "\\|")
    if not code:
        return text.replace("`", "\\`")
    longest = max((len(m) for m in re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _markdown(d: dict[str, Any]) -> str:
    out = [f"# Run {d['run_id']}: {d['runbook']}", ""]
    out += [f"- Status: **{d['status']}** (exit {d['exit_code']})"
            + (f" — {d['message']}" if d["message"] else ""),
            f"- Started: {_fmt_ts(d['started'])}; finished: {_fmt_ts(d['finished'])}; "
            f"duration {d['duration']:.1f} s",
            f"- Runbook file: `{d['runbook_path']}`",
            f"- Phases: {', '.join(d['phases']) if d['phases'] else 'all'}", ""]
    out += ["## Parameters", "", "| name | value |", "|---|---|"]
    for k, v in sorted(d["params"].items()):
        shown = "(secret, in the keyring)" if isinstance(v, dict) and "$secret" in v else v
        out.append(f"| {cell(k)} | {cell(shown, code=True)} |")
    out += ["", "## Timeline", "",
            "| phase | step | role | attempt | status | duration | message |",
            "|---|---|---|---|---|---|---|"]
    for s in d["steps"]:
        msg = cell((s["message"] or "")[:120])
        out.append(f"| {cell(s['phase'])} | {cell(s['step'])} | {s['role']} | {s['attempt']} | "
                   f"{cell(s['status'])} | {s['duration']:.2f} s | {msg} |")
    if d["restored_steps"]:
        out += ["", "Restored from the journal on resume (not run again): "
                + ", ".join(f"`{x}`" for x in d["restored_steps"])]
    if d["gates"]:
        out += ["", "## Gates", "", "| phase | gate | result | detail |", "|---|---|---|---|"]
        for g in d["gates"]:
            detail = g.get("message") or ""
            if g.get("diagnosis"):
                detail += f" — why: {g['diagnosis']}"
            if g.get("fix"):
                detail += f" — fix: {g['fix']}"
            out.append(f"| {cell(g['phase_id'])} | {cell(g['gate_id'])} | "
                       f"{'passed' if g['passed'] else 'FAILED'} | {cell(detail)} |")
    checks = [n for n in d["notes"] if n.get("name") == "gate.check"]
    if checks:
        out += ["", "## Checks", "", "| step | check | result | time | detail |",
                "|---|---|---|---|---|"]
        for c in checks:
            detail = (c.get("diagnosis") or c.get("detail") or "")
            if c.get("fix"):
                detail += f" — fix: {c['fix']}"
            out.append(f"| {cell(c['step'])} | {cell(c.get('check') or c.get('label') or '-')} | "
                       f"{'passed' if c.get('passed') else 'FAILED'} | "
                       f"{float(c.get('duration') or 0):.2f} s | {cell(detail)} |")
    warnings = [n for n in d["notes"] if n.get("name") == "warning"]
    if warnings:
        out += ["", "## Warnings", ""] + [f"- {w.get('text') or w.get('message')}"
                                          for w in warnings]
    out += _audit_section(d.get("last_audit"))
    out += ["", "## Steps in detail", ""]
    for s in d["steps"]:
        out.append(f"### {s['phase']} / {s['step']} (attempt {s['attempt']}: {s['status']})")
        if s["inputs"]:
            out += ["", "Inputs:", "```json", json.dumps(s["inputs"], indent=1, default=str,
                                                         sort_keys=True), "```"]
        if s["outputs"]:
            out += ["", "Outputs:", "```json", json.dumps(s["outputs"], indent=1, default=str,
                                                          sort_keys=True), "```"]
        if s["diagnosis"]:
            out += ["", f"Why: {s['diagnosis']}"]
        if s["fix"]:
            out += ["", f"What to do: {s['fix']}"]
        calls = [n for n in d["notes"] if n["step"] == s["step"] and n.get("name") == "aws.call"]
        if calls:
            out += ["", "AWS calls:"] + [
                f"- {c.get('service')}.{c.get('operation')} request {c.get('request_id')} "
                f"({float(c.get('duration') or 0) * 1000:.0f} ms)" for c in calls]
        out.append("")
    if d["questions"]:
        out += ["## Questions answered", ""]
        out += [f"- {q['step']}: {q['question']} '{q['prompt']}' -> {q['answer']}"
                for q in d["questions"]]
    return "\n".join(out) + "\n"
