"""The gates of one phase with their results; a failed gate shows its diagnosis and fix."""

from __future__ import annotations

from textual.widgets import Static

from .. import format as fmt
from ..markup import escape
from ..model import PhaseView


def render_gates(pv: PhaseView) -> str:
    """Rich markup for a phase's gates."""
    if not pv.gates:
        return f"[b]Gates[/b] of {escape(pv.label)}: none"
    lines = [f"[b]Gates[/b] of {escape(pv.label)}"]
    for g in pv.gates:
        st = g.status
        lines.append(f"[{fmt.style(st)}]{fmt.icon(st)}[/] {escape(g.label)}"
                     + (f"  [dim]{escape(st)}[/dim]" if st != "pending" else ""))
        if st == "skipped" and g.message:  # why it proved nothing (its `when` was false)
            lines.append(f"  [dim]{escape(g.message)}[/dim]")
        if st == "failed":
            if g.diagnosis:
                lines.append(f"  [b red]Diagnosis:[/] {escape(g.diagnosis)}")
            elif g.message:
                lines.append(f"  {escape(g.message)}")
            if g.fix:
                lines.append(f"  [b green]Fix:[/] {escape(g.fix)}")
    return "\n".join(lines)


class GatePanel(Static):
    """Acceptance gates of the phase in view."""

    DEFAULT_CSS = """
    GatePanel { border: round $primary-darken-2; height: auto; max-height: 60%;
                padding: 0 1; overflow-y: auto; }
    """

    def show(self, pv: PhaseView | None) -> None:
        self.update(render_gates(pv) if pv is not None else "")
