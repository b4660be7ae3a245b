"""The plan of the selected phase: the engine's ``Plan`` (the data ``elematrix plan`` and
``plan --json`` show): per step its symbol, what would change or why it cannot tell or
what blocks it, then the summary. Secrets are masked by the engine; it changes nothing."""

from __future__ import annotations

import json
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ...engine.plan import SYMBOLS, Plan, StepPlan

# How each state shows: its colour (the symbols and words are the engine's).
_STYLE = {"create": "green", "change": "yellow", "in_place": "dim", "unknown": "magenta",
          "blocked": "red", "read": "cyan", "skip": "dim"}


def plan_text(plan: Plan) -> Text:
    """The plan as styled text (plain operator data: never parsed as markup)."""
    t = Text()
    t.append(f"Plan: {plan.runbook} -> {plan.deployment}\n", style="bold")
    t.append(f"{plan.summary()}\n", style="bold")
    t.append("Nothing has been changed." + ("" if plan.checked else " Not checked (offline).")
             + "\n")
    t.append("  ".join(f"{sym} {state.replace('_', ' ')}" for state, sym in SYMBOLS.items())
             + "\n", style="dim")
    if plan.on_this_machine:
        t.append(f"\nActs on THIS machine ({len(plan.on_this_machine)} step(s)):\n",
                 style="bold yellow")
        for line in plan.on_this_machine:
            t.append(f"  {line}\n")
    for ph in plan.phases:
        state = "gates passed" if ph.gates_passed else "not passed yet"
        t.append(f"\nPhase {ph.id}: {ph.title} [{state}]\n", style="bold")
        for st in ph.steps:
            _step(t, st)
        # The runbook's posture, as `elematrix plan` shows it (planview.py).
        if ph.satisfies:
            t.append("  Posture this phase promises (elematrix audit checks it):\n",
                     style="bold cyan")
            for line in ph.satisfies:
                t.append(f"    {line}\n")
        if ph.accepts:
            t.append("  Accepted failing once it ran:\n", style="bold")
            for line in ph.accepts:
                t.append(f"    {line}\n", style="dim")
    t.append(f"\nPlan: {plan.summary()}.\n", style="bold")
    return t


def _step(t: Text, st: StepPlan) -> None:
    style = _STYLE[st.state]
    t.append(f"  {st.symbol} ", style=f"bold {style}")
    t.append(f"{st.id}", style="bold")
    t.append(f" ({st.action}) {st.title}" + (" [asks first]" if st.asks_first else "")
             + (" [DESTRUCTIVE]" if st.destructive else "") + "\n")
    if st.inputs:
        t.append(f"      with {json.dumps(st.inputs, default=str, sort_keys=True)}\n",
                 style="dim")
    elif st.render_error:
        t.append(f"      with ({st.render_error})\n", style="dim")
    for c in st.changes:
        t.append(f"      {st.symbol} {c}\n", style=style)
    if st.state == "blocked":
        for b in st.blocked_by:
            t.append(f"      ! {b.reason}\n", style=style)
    elif st.why and st.state in ("create", "change"):
        t.append(f"      ({st.why})\n", style="dim")
    elif st.why and st.state != "read":
        word = "unknown, because " if st.state == "unknown" else ""
        t.append(f"      {word}{st.why}\n", style="dim" if st.state != "unknown" else style)
    for line in st.found:
        t.append(f"      found: {line}\n", style="dim")
    if st.refused:
        t.append(f"      REFUSED at run time: {st.refused}\n", style="red")
    for e in st.on_this_machine:
        t.append(f"      ON THIS MACHINE: {e}\n", style="yellow")


class PlanScreen(ModalScreen[None]):
    """Shows a ``Plan`` (or why none could be built); escape/q/v closes it."""

    DEFAULT_CSS = """
    PlanScreen { align: center middle; background: $background 60%; }
    PlanScreen > VerticalScroll { width: 95%; height: 90%; border: thick $primary;
                                  background: $surface; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,v", "close", "Close")]

    def __init__(self, plan: Plan | str) -> None:
        super().__init__()
        self.plan = plan if isinstance(plan, Plan) else None
        self.body = plan_text(plan) if isinstance(plan, Plan) else Text(plan)
        # What the screen shows, as plain text (tests and screen readers read it).
        self.text = self.body.plain

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(self.body, id="plan-text", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)
