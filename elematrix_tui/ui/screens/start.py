"""The start screen: interrupted runs first, then deployments, then runbooks."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label, Static

from .. import catalog
from .. import format as fmt
from .banner import banner_text, notices_markdown

if TYPE_CHECKING:
    from ..services import Session, StartActions


class StartScreen(Screen[None]):
    CSS_PATH = "start.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "new_deployment", "New deployment"),
        Binding("enter", "open", "Open / resume", show=True),
        Binding("tab", "app.focus_next", "Next list", show=False),
        Binding("d", "status", "Status (drift)"),
        Binding("u", "day_two('upgrade')", "Upgrade"),
        Binding("b", "day_two('restore')", "Restore a backup"),
        # Not in the footer (its line is full); the help screen and docs/tui.md name it.
        Binding("a", "audit", "Audit (posture)", show=False),
        Binding("D", "drill", "Restore drill", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, session: Session, flows: StartActions) -> None:
        super().__init__()
        self.session = session
        self.flows = flows
        self.deployments: list[catalog.DeploymentEntry] = []
        self.runbooks: list[catalog.RunbookEntry] = []
        self._loaded_once = False

    def compose(self) -> ComposeResult:
        banner = banner_text(self.session)
        if banner:
            yield Static(banner, id="banner")
        yield Static("[b]elematrix[/b] · deploy Matrix/Element to AWS, phase by phase",
                     id="start-head")
        with Vertical(id="start-body"):
            yield Static("", id="resume-hint")
            yield Label("Deployments", classes="section")
            yield DataTable(id="deployments", cursor_type="row", zebra_stripes=True)
            yield Label("Runbooks (n: new deployment from the highlighted one)",
                        classes="section")
            yield DataTable(id="runbooks", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        dt = self.query_one("#deployments", DataTable)
        dt.add_columns("deployment", "runbook", "last run", "status")
        rt = self.query_one("#runbooks", DataTable)
        rt.add_columns("runbook", "title", "from")
        self.reload()

    def on_screen_resume(self) -> None:
        # Back from a run or a new deployment: statuses changed. (The first resume comes
        # right after mount, which already read everything.)
        if self._loaded_once:
            self.reload()
        self._loaded_once = True

    def reload(self) -> None:
        """Read deployments and runbooks again (after a run or a new deployment)."""
        self.deployments = catalog.list_deployments(self.session.state_dir)
        self.runbooks = catalog.list_runbooks()
        dt = self.query_one("#deployments", DataTable)
        dt.clear()
        for d in self.deployments:
            status = Text(d.last_status, style=fmt.style(
                "failed" if d.last_status == "failed" else
                "passed" if d.last_status == "passed" else
                "interrupted" if d.interrupted_run else "pending"))
            if d.interrupted_run:
                status = Text("interrupted: enter resumes", style="bold magenta")
            dt.add_row(Text(d.name), Text(d.runbook or "?"), Text(d.last_run or "-"), status,
                       key=d.name)
        rt = self.query_one("#runbooks", DataTable)
        rt.clear()
        for r in self.runbooks:
            # Text, not str: a title with [brackets] must not be read as markup.
            rt.add_row(Text(r.name), Text(r.title), Text(r.source), key=str(r.path))
        hint = self.query_one("#resume-hint", Static)
        interrupted = [d for d in self.deployments if d.interrupted_run]
        if interrupted:
            names = ", ".join(d.name for d in interrupted)
            hint.update(f"[b magenta]Interrupted runs:[/] {names}. "
                        "Highlight one and press enter to resume where it stopped.")
            hint.display = True
        elif not self.deployments:
            hint.update("No deployments yet: highlight a runbook below and press [b]n[/b] "
                        "to create one.")
            hint.display = True
        else:
            hint.display = False
        if not self.deployments:
            dt.display = False
            rt.focus()
        else:
            dt.display = True
            dt.focus()

    def _runbook_under_cursor(self) -> catalog.RunbookEntry | None:
        rt = self.query_one("#runbooks", DataTable)
        if not self.runbooks or rt.cursor_row < 0:
            return None
        return self.runbooks[min(rt.cursor_row, len(self.runbooks) - 1)]

    def action_new_deployment(self) -> None:
        rb = self._runbook_under_cursor()
        self.flows.new_deployment(rb.path if rb else None)

    def action_open(self) -> None:
        focused = self.focused
        if isinstance(focused, DataTable) and focused.id == "runbooks":
            self.action_new_deployment()
            return
        dt = self.query_one("#deployments", DataTable)
        if not self.deployments:
            self.action_new_deployment()
            return
        entry = self.deployments[min(max(dt.cursor_row, 0), len(self.deployments) - 1)]
        self.flows.open_deployment(entry)

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def _highlighted(self) -> catalog.DeploymentEntry | None:
        """The deployment under the cursor; None (and a notice) when there is none yet."""
        if not self.deployments:
            self.notify("No deployment yet.", severity="warning")
            return None
        dt = self.query_one("#deployments", DataTable)
        return self.deployments[min(max(dt.cursor_row, 0), len(self.deployments) - 1)]

    def action_status(self) -> None:
        """The highlighted deployment's live state against its runs (read-only)."""
        from .status import StatusScreen

        entry = self._highlighted()
        if entry is None:
            return
        self.app.push_screen(StatusScreen(self.session.state_dir, entry.name,
                                          entry.runbook_path))

    def action_audit(self) -> None:
        """The highlighted deployment's posture against its runbook (Prowler; read-only)."""
        from .audit import AuditScreen

        entry = self._highlighted()
        if entry is None:
            return
        self.app.push_screen(AuditScreen(self.session.state_dir, entry.name,
                                         entry.runbook_path))

    def action_drill(self) -> None:
        """The restore drill of the highlighted deployment, once the operator confirmed
        what it creates (a throwaway ``NAME-drill``, torn down at its end)."""
        from .drill import DrillScreen, confirm_text
        from .modals import YesNoModal

        entry = self._highlighted()
        if entry is None:
            return
        name = entry.name

        def answered(go: bool | None) -> None:
            if go:
                self.app.push_screen(DrillScreen(self.session.state_dir, name))

        self.app.push_screen(YesNoModal(f"Run a restore drill of {name}?",
                                        confirm_text(name), yes="Run the drill",
                                        no="Cancel"), answered)

    def action_day_two(self, runbook: str) -> None:
        """A bundled day-two runbook (upgrade, restore) for the highlighted deployment."""
        import dataclasses

        entry = self._highlighted()
        if entry is None:
            return
        path = next((r.path for r in catalog.list_runbooks() if r.name == runbook), None)
        if path is None:
            self.notify(f"No {runbook} runbook found.", severity="error")
            return
        # Its own run of that runbook: poc-ec2's interrupted run is not resumed here.
        self.flows.open_deployment(dataclasses.replace(
            entry, runbook=runbook, runbook_path=path,
            interrupted_run=None))

    def action_help(self) -> None:
        from .help import HelpScreen

        self.app.push_screen(HelpScreen(notices_markdown(self.session)))
