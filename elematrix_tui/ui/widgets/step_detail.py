"""The detail pane of the selected step: status, diagnosis, inputs, outputs, notes, progress."""

from __future__ import annotations

import json
from typing import Any

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import ProgressBar, Static

from .. import format as fmt
from ..markup import escape
from ..model import PhaseView, StepView

MAX_VALUE = 300


def _value(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str, sort_keys=True)
    if len(s) > MAX_VALUE:
        s = s[:MAX_VALUE] + f"… ({len(s)} chars)"
    return escape(s)


def _mapping(title: str, d: dict[str, Any]) -> list[str]:
    if not d:
        return []
    lines = [f"[b]{title}[/b]"]
    lines += [f"  {escape(str(k))}: {_value(v)}" for k, v in d.items()]
    return lines


def _note(name: str, data: dict[str, Any]) -> str:
    if name == "aws.call":
        rid = data.get("request_id") or "-"
        took = fmt.duration(data["duration"]) if isinstance(
            data.get("duration"), int | float) else ""
        return (f"  AWS {escape(str(data.get('service', '?')))} "
                f"{escape(str(data.get('operation', '?')))}  request id {escape(str(rid))} {took}")
    if name == "asked":
        return (f"  asked ({escape(str(data.get('question')))}) "
                f"{escape(str(data.get('prompt')))}: {escape(str(data.get('answer')))}")
    if name == "approval":
        verdict = "approved" if data.get("approved") else "rejected"
        return (f"  {verdict} by {escape(str(data.get('who')))}: "
                f"{escape(str(data.get('comment') or '-'))}")
    text = data.get("text") or data.get("diff") or data.get("plan")
    if isinstance(text, str):
        return f"  {escape(name)}:\n" + "\n".join(f"    {escape(t)}" for t in text.splitlines())
    changes = data.get("changes")
    if isinstance(changes, list):
        return f"  {escape(name)}:\n" + "\n".join(f"    • {escape(str(c))}" for c in changes)
    return f"  {escape(name)}: {_value(data)}"


def render_step(sv: StepView) -> str:
    """Rich markup for one step: what the operator needs to decide what to do next."""
    st = sv.status
    head = (f"[{fmt.style(st)}]{fmt.icon(st)} {escape(st)}[/]  [b]{escape(sv.label)}[/b]\n"
            f"[dim]{escape(sv.step_id)} · {escape(sv.action)} · {escape(sv.role)}[/dim]")
    meta = []
    if sv.attempt:
        meta.append(f"attempt {sv.attempt}")
    if sv.duration is not None:
        meta.append(fmt.duration(sv.duration))
    if sv.restored:
        meta.append("restored from journal")
    if sv.confirm or sv.destructive:
        meta.append("destructive: type the deployment name" if sv.destructive
                    else "asks for confirmation")
    if sv.skippable:
        meta.append("skippable")
    lines = [head]
    if meta:
        lines.append("[dim]" + " · ".join(meta) + "[/dim]")
    if sv.retry_reason and st == "retrying":
        lines.append(f"[yellow]retrying:[/] {escape(sv.retry_reason)}")
    # Diagnosis and fix first: on a small terminal they are what must stay visible.
    if sv.diagnosis:
        lines.append(f"[b red]Diagnosis:[/] {escape(sv.diagnosis)}")
    if sv.fix:
        lines.append(f"[b green]Fix:[/] {escape(sv.fix)}")
    if sv.message:
        lines.append(escape(sv.message))
    lines += _mapping("Inputs", sv.inputs)
    lines += _mapping("Outputs", sv.outputs)
    if sv.notes:
        lines.append("[b]Notes[/b]")
        lines += [_note(n, d) for n, d in sv.notes[-50:]]
    return "\n".join(lines)


def render_phase(pv: PhaseView) -> str:
    """Rich markup for a phase: its state and what it holds."""
    lines = [f"[{fmt.style(pv.state)}]{fmt.icon(pv.state)} {escape(pv.state)}[/]  "
             f"[b]{escape(pv.label)}[/b]  [dim]{escape(pv.phase_id)}[/dim]"]
    if pv.reason:
        lines.append(f"[dim]{escape(pv.reason)}[/dim]")
    if pv.description:
        lines.append(escape(fmt.reflow(pv.description)))
    lines.append(f"{len(pv.steps)} steps, {len(pv.gates)} gates")
    return "\n".join(lines)


class StepDetail(VerticalScroll):
    """Shows a step or a phase; a progress bar appears during long waits."""

    DEFAULT_CSS = """
    StepDetail { border: round $primary-darken-2; padding: 0 1; }
    StepDetail > #progress-text { height: auto; color: $text-muted; }
    StepDetail > ProgressBar { height: 1; }
    StepDetail > .hidden { display: none; }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="progress-text", classes="hidden")
        yield ProgressBar(id="progress", classes="hidden", show_eta=False)
        yield Static("Select a phase or a step.", id="detail-text")

    def show_step(self, sv: StepView) -> None:
        self.query_one("#detail-text", Static).update(render_step(sv))
        self._progress(sv)

    def show_phase(self, pv: PhaseView) -> None:
        self.query_one("#detail-text", Static).update(render_phase(pv))
        self._progress(None)

    def _progress(self, sv: StepView | None) -> None:
        text = self.query_one("#progress-text", Static)
        bar = self.query_one("#progress", ProgressBar)
        p = sv.progress if sv is not None else None
        if p is None or sv is None:
            text.add_class("hidden")
            bar.add_class("hidden")
            return
        expected = p.expected or sv.expected
        when = fmt.duration(p.elapsed)
        if expected:
            when += f" of ~{fmt.duration(expected)}"
        text.update(f"{escape(p.message)}  [{when}]")
        text.remove_class("hidden")
        if p.total:
            bar.update(total=p.total, progress=p.done or 0)
        elif expected:
            bar.update(total=expected, progress=min(p.elapsed, expected))
        else:
            bar.update(total=None)
        bar.remove_class("hidden")
