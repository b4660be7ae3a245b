"""Modal questions: confirm, approve, secret, choose, and "quit while running?".

Each is a ``ModalScreen`` that answers through ``dismiss``; whoever pushed it gets the
answer in its callback (the engine thread waits on a Future that callback resolves).
"""

from __future__ import annotations

import getpass
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static

from ..markup import escape


class ConfirmModal(ModalScreen[bool]):
    """What will change, and go / no go. Destructive steps need a typed word to enable go."""

    CSS_PATH = "modals.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "answer(False)", "Cancel"),
    ]

    def __init__(self, step_id: str, title: str, changes: list[str], *, destructive: bool = False,
                 type_to_confirm: str | None = None) -> None:
        super().__init__()
        self.step_id = step_id
        self.title_text = title
        self.changes = changes
        self.destructive = destructive
        self.word = type_to_confirm

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="destructive" if self.destructive else ""):
            head = "Destructive change" if self.destructive else "Confirm"
            yield Label(f"[b]{head}[/b]: {escape(self.title_text)}", id="q-title")
            yield Label(f"step [b]{escape(self.step_id)}[/b] will:", classes="muted")
            with VerticalScroll(id="changes"):
                items = self.changes or ["(the action did not describe its changes)"]
                yield Static("\n".join(f"• {escape(c)}" for c in items))
            if self.word:
                yield Label(f"Type [b]{escape(self.word)}[/b] to confirm:")
                yield Input(placeholder=self.word, id="word")
            with Horizontal(classes="buttons"):
                yield Button("Go ahead", variant="error" if self.destructive else "primary",
                             id="yes", disabled=bool(self.word))
                yield Button("Cancel", id="no")

    def on_mount(self) -> None:
        if self.word:
            self.query_one("#word", Input).focus()
        else:
            self.query_one("#no", Button).focus()

    @on(Input.Changed, "#word")
    def _typed(self, event: Input.Changed) -> None:
        self.query_one("#yes", Button).disabled = event.value.strip() != self.word

    @on(Input.Submitted, "#word")
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value.strip() == self.word:
            self.dismiss(True)

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss(False)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class ApproveModal(ModalScreen[tuple[bool, str, str]]):
    """An approval step: who approves, with a comment; recorded in the journal."""

    CSS_PATH = "modals.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "reject", "Reject")]

    def __init__(self, step_id: str, prompt: str, who: str | None = None) -> None:
        super().__init__()
        self.step_id = step_id
        self.prompt = prompt
        if who is None:
            try:
                who = getpass.getuser()
            except (KeyError, OSError):
                who = ""
        self.who = who

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"[b]Approval needed[/b] ({escape(self.step_id)})", id="q-title")
            with VerticalScroll(id="changes"):
                yield Static(escape(self.prompt))
            yield Input(value=self.who, placeholder="who approves", id="who")
            yield Input(placeholder="comment (recorded)", id="comment")
            with Horizontal(classes="buttons"):
                yield Button("Approve", variant="primary", id="yes")
                yield Button("Reject", id="no")

    def on_mount(self) -> None:
        self.query_one("#comment", Input).focus()

    def _answer(self, ok: bool) -> None:
        who = self.query_one("#who", Input).value.strip()
        comment = self.query_one("#comment", Input).value.strip()
        if ok and not who:
            self.notify("Say who approves.", severity="warning")
            return
        self.dismiss((ok, who, comment))

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self._answer(True)

    @on(Input.Submitted, "#comment")
    def _submit(self) -> None:
        self._answer(True)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self._answer(False)

    def action_reject(self) -> None:
        self._answer(False)


class SecretModal(ModalScreen[str]):
    """A masked input for a secret the runbook needs and does not have."""

    CSS_PATH = "modals.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, name: str, help: str) -> None:
        super().__init__()
        self.secret_name = name
        self.help = help

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"[b]Secret needed[/b]: {escape(self.secret_name)}", id="q-title")
            if self.help:
                yield Static(escape(self.help), classes="muted")
            yield Input(password=True, placeholder="value (hidden)", id="secret")
            with Horizontal(classes="buttons"):
                yield Button("OK", variant="primary", id="yes")
                yield Button("Cancel", id="no")

    def on_mount(self) -> None:
        self.query_one("#secret", Input).focus()

    @on(Input.Submitted, "#secret")
    @on(Button.Pressed, "#yes")
    def _ok(self) -> None:
        self.dismiss(self.query_one("#secret", Input).value)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss("")

    def action_cancel(self) -> None:
        self.dismiss("")


class ChooseModal(ModalScreen[str | None]):
    """Pick one option (e.g. trust this host key fingerprint) or refuse."""

    CSS_PATH = "modals.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "refuse", "Refuse")]

    def __init__(self, step_id: str, prompt: str, options: list[str]) -> None:
        super().__init__()
        self.step_id = step_id
        self.prompt = prompt
        self.options = options

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"[b]Choose[/b] ({escape(self.step_id)})", id="q-title")
            yield Static(escape(self.prompt))
            yield OptionList(*[escape(o) for o in self.options], id="options")
            with Horizontal(classes="buttons"):
                yield Button("Refuse", id="no")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.options[event.option_index])

    @on(Button.Pressed, "#no")
    def action_refuse(self) -> None:
        self.dismiss(None)


class YesNoModal(ModalScreen[bool]):
    """A plain yes/no question (quit while a step runs)."""

    CSS_PATH = "modals.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,n", "answer(False)", "No"),
        Binding("y", "answer(True)", "Yes"),
    ]

    def __init__(self, title: str, text: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.q_title = title
        self.text = text
        self.yes = yes
        self.no = no

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"[b]{escape(self.q_title)}[/b]", id="q-title")
            yield Static(escape(self.text))
            with Horizontal(classes="buttons"):
                yield Button(self.yes, variant="error", id="yes")
                yield Button(self.no, variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss(False)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
