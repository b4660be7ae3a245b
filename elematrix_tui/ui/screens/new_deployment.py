"""New deployment: a name, a runbook, an AWS profile and region. The form comes next."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, Select, Static

from ...engine.paths import DEPLOYMENT_RE, DEPLOYMENT_RULE
from .. import catalog
from ..markup import escape

ENV_PROFILE = "(environment / default chain)"


@dataclass
class NewDeployment:
    """What the screen collected."""

    name: str
    runbook_path: Path
    aws_profile: str | None
    aws_region: str | None


def check_name(name: str, existing: set[str]) -> str | None:
    """Why ``name`` cannot be a new deployment's name, or None."""
    if not DEPLOYMENT_RE.fullmatch(name):
        return DEPLOYMENT_RULE
    if name in existing:
        return f"a deployment named {name!r} exists already: open it from the start screen"
    return None


class NewDeploymentScreen(Screen[NewDeployment | None]):
    CSS_PATH = "forms.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "submit", "Next: parameters"),
        Binding("escape", "cancel", "Back"),
    ]

    def __init__(self, runbooks: list[catalog.RunbookEntry], existing: set[str], *,
                 runbook: Path | None = None) -> None:
        super().__init__()
        self.runbooks = runbooks
        self.existing = existing
        self.preselect = runbook
        self.profiles = catalog.aws_profiles()

    def compose(self) -> ComposeResult:
        yield Static("[b]New deployment[/b]", id="form-head")
        with VerticalScroll(id="form"):
            yield Label("Name", classes="p-name")
            yield Static("A target of its own (e.g. staging): its parameters, secrets, journal "
                         "and AWS resources carry this name.", classes="p-help")
            yield Input(placeholder="staging", id="name", compact=True)
            yield Static("", classes="p-error", id="err-name")
            yield Label("Runbook", classes="p-name")
            opts = [(escape(f"{r.name} · {r.title}" + (" (yours)" if r.source == "user" else "")),
                     str(r.path)) for r in self.runbooks]
            pre = str(self.preselect) if self.preselect else (opts[0][1] if opts else None)
            yield Select(opts, value=pre if pre else Select.NULL, allow_blank=not opts,
                         id="runbook", compact=True)
            yield Label("AWS profile", classes="p-name")
            yield Static("From your AWS config files; credentials stay with the AWS tools.",
                         classes="p-help")
            prof_opts = [(ENV_PROFILE, ENV_PROFILE)] + [(escape(p), p) for p in self.profiles]
            yield Select(prof_opts, value=ENV_PROFILE, allow_blank=False, id="profile",
                         compact=True)
            yield Label("AWS region", classes="p-name")
            yield Select([(r, r) for r in catalog.AWS_REGIONS], value="us-east-1",
                         allow_blank=False, id="region", compact=True)
            with Horizontal(classes="buttons"):
                yield Button("Next: parameters", variant="primary", id="submit")
                yield Button("Back", id="cancel")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    @on(Input.Changed, "#name")
    def _name_changed(self, event: Input.Changed) -> None:
        err = check_name(event.value.strip(), self.existing) if event.value else None
        self.query_one("#err-name", Static).update(f"✗ {escape(err)}" if err else "")

    @on(Select.Changed, "#profile")
    def _profile_changed(self, event: Select.Changed) -> None:
        region = self.profiles.get(str(event.value))
        if region and region in catalog.AWS_REGIONS:
            self.query_one("#region", Select).value = region

    @on(Button.Pressed, "#submit")
    @on(Input.Submitted, "#name")
    def action_submit(self) -> None:
        name = self.query_one("#name", Input).value.strip()
        err = check_name(name, self.existing)
        if err:
            self.query_one("#err-name", Static).update(f"✗ {escape(err)}")
            self.query_one("#name", Input).focus()
            return
        rb = self.query_one("#runbook", Select).value
        if rb is Select.NULL or rb is None:
            self.notify("Pick a runbook.", severity="error")
            return
        prof = str(self.query_one("#profile", Select).value)
        region = self.query_one("#region", Select).value
        self.dismiss(NewDeployment(name=name, runbook_path=Path(str(rb)),
                                   aws_profile=None if prof == ENV_PROFILE else prof,
                                   aws_region=None if region is Select.NULL else str(region)))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
