"""The audit screen: a deployment's posture judged against its runbook's intent.

audit/run.py's ``run_audit`` in a worker thread (Prowler takes a minute or two; ``n`` runs
the gates' native checks instead, a few seconds). One row per finding, failures first;
below the table the highlighted finding's message and why it is accepted or failed.
Without Prowler the head says how to install it. Writes only the journal's last audit.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from .status import deployment_runbook

if TYPE_CHECKING:
    from ...audit.model import AuditReport


class AuditScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "refresh", "Audit again (Prowler)"),
        Binding("n", "native", "Native checks"),
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self, state_dir: Path, deployment: str, runbook_path: Path | None) -> None:
        super().__init__()
        self.state_dir = state_dir
        self.deployment = deployment
        self.runbook_path = runbook_path
        self.report: AuditReport | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"[b]audit[/b] · {self.deployment}", id="audit-head")
        yield DataTable(id="audit-findings", cursor_type="row", zebra_stripes=True)
        yield Static("", id="audit-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#audit-findings", DataTable).add_columns(
            "verdict", "control", "check", "resource")
        self.action_refresh()

    def action_refresh(self) -> None:
        self._start(native=False)

    def action_native(self) -> None:
        self._start(native=True)

    def _start(self, *, native: bool) -> None:
        how = "the gates' native checks" if native else "Prowler (a minute or two)"
        self.query_one("#audit-head", Static).update(
            f"[b]audit[/b] · {self.deployment}: scanning with {how}, read-only…")
        self._audit(native)

    @work(thread=True, group="audit", exclusive=True, exit_on_error=False)
    def _audit(self, native: bool) -> None:
        try:
            from ...audit.run import run_audit

            rb, reg = deployment_runbook(self.runbook_path)
            report = run_audit(rb, deployment=self.deployment,
                               state_dir=self.state_dir, registry=reg, native=native)
        except Exception as exc:
            self.app.call_from_thread(self._failed, str(exc))
            return
        self.app.call_from_thread(self._show, report)

    def _failed(self, why: str) -> None:
        self.query_one("#audit-head", Static).update(
            f"[b]audit[/b] · {self.deployment}: cannot audit:\n{escape(why)}")

    def _show(self, report: AuditReport) -> None:
        self.report = report
        c = report.counts()
        verdict = "[b red]FAILED[/]" if report.failed else "[b green]nothing unexplained[/]"
        self.query_one("#audit-head", Static).update(
            f"[b]audit[/b] · {self.deployment} by {escape(report.engine)}: {verdict} · "
            f"{c['passed']} passed, {c['failed']} failed, {c['accepted']} accepted, "
            f"{c['account']} account-wide")
        dt = self.query_one("#audit-findings", DataTable)
        dt.clear()
        for f in report.findings:
            dt.add_row(f.verdict, f.control or "-", f.check, f.resource)
        self._detail(0)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._detail(event.cursor_row)

    def _detail(self, row: int) -> None:
        box = self.query_one("#audit-detail", Static)
        if self.report is None or not self.report.findings:
            box.update("")
            return
        f = self.report.findings[min(max(row, 0), len(self.report.findings) - 1)]
        box.update(escape("\n".join(x for x in (f.message, f.reason) if x)))
