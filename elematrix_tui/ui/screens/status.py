"""The status screen: a deployment's live state against what its runs converged.

The engine's ``build_status`` (engine/status.py, the plan's read-only checks) in a worker
thread; one row per fact, ok / drifted / unknown, and below the table what differs and what
to do. ``r`` asks again, ``escape`` goes back. Changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.markup import escape
from textual.binding import Binding, BindingType

from .deployment_report import DeploymentReportScreen

if TYPE_CHECKING:
    from ...engine.model import Runbook
    from ...engine.registry import Registry
    from ...engine.status import Status


class StatusScreen(DeploymentReportScreen["Status"]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "refresh", "Ask again"),
        Binding("escape", "app.pop_screen", "Back"),
    ]
    NAME = "status"
    VERB = "check"
    TABLE = "lines"
    COLUMNS = ("verdict", "step", "what")

    def make_report(self, rb: Runbook, reg: Registry, how: str) -> Status:
        from ...engine.status import build_status

        return build_status(rb, deployment=self.deployment, state_dir=self.state_dir,
                            registry=reg)

    def head(self, report: Status) -> str:
        c = report.counts()
        return (f"against {escape(report.runbook)}: "
                f"{c['ok']} ok, {c['drifted']} drifted, {c['unknown']} unknown")

    def rows(self, report: Status) -> list[tuple[str, ...]]:
        return [(x.verdict, f"{x.phase}/{x.step}", x.title) for x in report.lines]

    def detail(self, report: Status, row: int) -> str:
        x = report.lines[row]
        return "\n".join([*x.detail, *([f"what to do: {x.todo}"] if x.todo else [])])
