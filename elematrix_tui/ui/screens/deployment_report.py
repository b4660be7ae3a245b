"""A read-only report on one deployment: a head line, a table of rows and the highlighted
row's detail below it, computed in a worker thread from the deployment's runbook.

The status screen (drift) and the audit screen (posture) are both this shape; what differs
is how the report is made, its columns, rows, head line and detail. ``r`` asks again,
``escape`` goes back. Nothing here changes the deployment.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

if TYPE_CHECKING:
    from ...engine.model import Runbook
    from ...engine.registry import Registry

# The runbook a deployment is compared with when its journal names none.
DEFAULT_RUNBOOK = "poc-ec2"

R = TypeVar("R")


def deployment_runbook(runbook_path: Path | None) -> tuple[Runbook, Registry]:
    """The deployment's runbook, loaded, and the registry it was loaded with."""
    from ...actions import default_registry
    from ...engine.catalog import resolve_runbook
    from ...engine.loader import load_runbook

    reg = default_registry()
    return load_runbook(runbook_path or resolve_runbook(DEFAULT_RUNBOOK), reg), reg


class DeploymentReportScreen(Screen[None], Generic[R]):
    """Subclasses set ``NAME`` (the head's first word and the widgets' id prefix), ``VERB``,
    ``TABLE`` (the table's id suffix) and ``COLUMNS``, and say how a report is made and
    shown."""

    NAME: ClassVar[str]
    VERB: ClassVar[str]  # "cannot <verb>: why"
    TABLE: ClassVar[str]
    COLUMNS: ClassVar[tuple[str, ...]]

    def __init__(self, state_dir: Path, deployment: str, runbook_path: Path | None) -> None:
        super().__init__()
        self.state_dir = state_dir
        self.deployment = deployment
        self.runbook_path = runbook_path
        self.report: R | None = None

    # What a subclass says.
    def make_report(self, rb: Runbook, reg: Registry, how: str) -> R:
        raise NotImplementedError

    def head(self, report: R) -> str:
        """The head line after the report's name and deployment (rich markup; escape
        what the report carries)."""
        raise NotImplementedError

    def rows(self, report: R) -> list[tuple[str, ...]]:
        raise NotImplementedError

    def detail(self, report: R, row: int) -> str:
        """Plain text: it is escaped before it is shown."""
        raise NotImplementedError

    def working(self, how: str) -> str:
        return "checking (read-only)…"

    # The shape.
    def _wid(self, part: str) -> str:
        return f"{self.NAME}-{part}"

    def compose(self) -> ComposeResult:
        yield Static(self._title(self.working("")), id=self._wid("head"))
        yield DataTable(id=self._wid(self.TABLE), cursor_type="row", zebra_stripes=True)
        yield Static("", id=self._wid("detail"))
        yield Footer()

    def _title(self, rest: str) -> str:
        return f"[b]{self.NAME}[/b] · {escape(self.deployment)}: {rest}"

    def on_mount(self) -> None:
        self._table().add_columns(*self.COLUMNS)
        self.action_refresh()

    def _table(self) -> DataTable[str]:
        return self.query_one(f"#{self._wid(self.TABLE)}", DataTable)

    def _head(self) -> Static:
        return self.query_one(f"#{self._wid('head')}", Static)

    def action_refresh(self) -> None:
        self.start("")

    def start(self, how: str) -> None:
        self._head().update(self._title(self.working(how)))
        self._make(how)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _make(self, how: str) -> None:
        try:
            rb, reg = deployment_runbook(self.runbook_path)
            report = self.make_report(rb, reg, how)
        except Exception as exc:
            self.app.call_from_thread(self._failed, str(exc))
            return
        self.app.call_from_thread(self._show, report)

    def _failed(self, why: str) -> None:
        self._head().update(self._title(f"cannot {self.VERB}:\n{escape(why)}"))

    def _show(self, report: R) -> None:
        self.report = report
        self._head().update(
            f"[b]{self.NAME}[/b] · {escape(self.deployment)} {self.head(report)}")
        dt = self._table()
        dt.clear()
        for row in self.rows(report):
            dt.add_row(*row)
        self._detail(0)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._detail(event.cursor_row)

    def _detail(self, row: int) -> None:
        box = self.query_one(f"#{self._wid('detail')}", Static)
        if self.report is None:
            box.update("")
            return
        n = len(self.rows(self.report))
        box.update(escape(self.detail(self.report, min(max(row, 0), n - 1))) if n else "")
