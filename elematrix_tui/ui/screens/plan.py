"""The plan of the selected phase: what would run, with rendered inputs, secrets masked."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class PlanScreen(ModalScreen[None]):
    """Shows ``engine.plan.build_plan`` text; it changes nothing. escape/q/v closes it."""

    DEFAULT_CSS = """
    PlanScreen { align: center middle; background: $background 60%; }
    PlanScreen > VerticalScroll { width: 95%; height: 90%; border: thick $primary;
                                  background: $surface; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,v", "close", "Close")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            # markup=False: rendered inputs are operator data, not markup.
            yield Static(self.text, id="plan-text", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)
