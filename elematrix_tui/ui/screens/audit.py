"""The audit screen: a deployment's posture judged against its runbook's intent.

audit/run.py's ``run_audit`` in a worker thread (Prowler takes a minute or two; ``n`` runs
the gates' native checks instead, a few seconds). One row per finding, failures first;
below the table the highlighted finding's message and why it is accepted or failed.
Without Prowler the head says how to install it. Writes only the journal's last audit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.markup import escape
from textual.binding import Binding, BindingType

from .deployment_report import DeploymentReportScreen

if TYPE_CHECKING:
    from ...audit.model import AuditReport
    from ...engine.model import Runbook
    from ...engine.registry import Registry

NATIVE = "native"


class AuditScreen(DeploymentReportScreen["AuditReport"]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "refresh", "Audit again (Prowler)"),
        Binding("n", "native", "Native checks"),
        Binding("escape", "app.pop_screen", "Back"),
    ]
    NAME = "audit"
    VERB = "audit"
    TABLE = "findings"
    COLUMNS = ("verdict", "control", "check", "resource")

    def action_native(self) -> None:
        self.start(NATIVE)

    def working(self, how: str) -> str:
        tool = "the gates' native checks" if how == NATIVE else "Prowler (a minute or two)"
        return f"scanning with {tool}, read-only…"

    def make_report(self, rb: Runbook, reg: Registry, how: str) -> AuditReport:
        from ...audit.run import run_audit

        return run_audit(rb, deployment=self.deployment, state_dir=self.state_dir,
                         registry=reg, native=how == NATIVE)

    def head(self, report: AuditReport) -> str:
        c = report.counts()
        verdict = "[b red]FAILED[/]" if report.failed else "[b green]nothing unexplained[/]"
        return (f"by {escape(report.engine)}: {verdict} · "
                f"{c['passed']} passed, {c['failed']} failed, {c['accepted']} accepted, "
                f"{c['account']} account-wide")

    def rows(self, report: AuditReport) -> list[tuple[str, ...]]:
        return [(f.verdict, f.control or "-", f.check, f.resource) for f in report.findings]

    def detail(self, report: AuditReport, row: int) -> str:
        f = report.findings[row]
        return "\n".join(x for x in (f.message, f.reason) if x)
