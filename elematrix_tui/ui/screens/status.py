"""The status screen: a deployment's live state against what its runs converged.

The engine's ``build_status`` (engine/status.py, the plan's read-only checks) in a worker
thread; one row per fact, ok / drifted / unknown, and below the table what differs and what
to do. ``r`` asks again, ``escape`` goes back. Changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

if TYPE_CHECKING:
    from ...engine.model import Runbook
    from ...engine.registry import Registry
    from ...engine.status import Status

# The runbook a deployment is compared with when its journal names none.
DEFAULT_RUNBOOK = "poc-ec2"


def deployment_runbook(runbook_path: Path | None) -> tuple[Runbook, Registry]:
    """The deployment's runbook, loaded, and the registry it was loaded with (the status
    and audit screens both read a deployment against its runbook)."""
    from ...actions import default_registry
    from ...engine.catalog import resolve_runbook
    from ...engine.loader import load_runbook

    reg = default_registry()
    return load_runbook(runbook_path or resolve_runbook(DEFAULT_RUNBOOK), reg), reg


class StatusScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "refresh", "Ask again"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self, state_dir: Path, deployment: str, runbook_path: Path | None) -> None:
        super().__init__()
        self.state_dir = state_dir
        self.deployment = deployment
        self.runbook_path = runbook_path
        self.status: Status | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"[b]status[/b] · {self.deployment}: checking (read-only)…",
                     id="status-head")
        yield DataTable(id="status-lines", cursor_type="row", zebra_stripes=True)
        yield Static("", id="status-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#status-lines", DataTable).add_columns("verdict", "step", "what")
        self.action_refresh()

    def action_refresh(self) -> None:
        self.query_one("#status-head", Static).update(
            f"[b]status[/b] · {self.deployment}: checking (read-only)…")
        self._check()

    @work(thread=True, group="status", exclusive=True, exit_on_error=False)
    def _check(self) -> None:
        try:
            from ...engine.status import build_status

            rb, reg = deployment_runbook(self.runbook_path)
            status = build_status(rb, deployment=self.deployment,
                                  state_dir=self.state_dir, registry=reg)
        except Exception as exc:
            self.app.call_from_thread(self._failed, str(exc))
            return
        self.app.call_from_thread(self._show, status)

    def _failed(self, why: str) -> None:
        self.query_one("#status-head", Static).update(
            f"[b]status[/b] · {self.deployment}: cannot check: {why}")

    def _show(self, status: Status) -> None:
        self.status = status
        c = status.counts()
        self.query_one("#status-head", Static).update(
            f"[b]status[/b] · {self.deployment} against {status.runbook}: "
            f"{c['ok']} ok, {c['drifted']} drifted, {c['unknown']} unknown")
        dt = self.query_one("#status-lines", DataTable)
        dt.clear()
        for x in status.lines:
            dt.add_row(x.verdict, f"{x.phase}/{x.step}", x.title)
        self._detail(0)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._detail(event.cursor_row)

    def _detail(self, row: int) -> None:
        box = self.query_one("#status-detail", Static)
        if self.status is None or not self.status.lines:
            box.update("")
            return
        x = self.status.lines[min(max(row, 0), len(self.status.lines) - 1)]
        box.update("\n".join([*x.detail, *([f"what to do: {x.todo}"] if x.todo else [])]))
