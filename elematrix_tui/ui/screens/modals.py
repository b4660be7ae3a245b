"""Modal questions: confirm, approve, secret, choose, and "quit while running?".

Each is a ``ModalScreen`` that answers through ``dismiss``; whoever pushed it gets the
answer in its callback (the engine thread waits on a Future that callback resolves).
"""

from __future__ import annotations

import getpass
from typing import ClassVar, Generic, TypeVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static

from ..markup import escape

# Why the scroll areas of a dialog never take the focus: Tab must go from one answer to the
# next (a focusable scroll area was a Tab stop that looked like nothing was focused), and
# page up/down scroll the list from anywhere in the dialog instead.
_SCROLL_KEYS: list[BindingType] = [
    Binding("pageup", "scroll_changes(-1)", "Scroll up", show=False),
    Binding("pagedown", "scroll_changes(1)", "Scroll down", show=False),
]


_T = TypeVar("_T")


class _Dialog(ModalScreen[_T], Generic[_T]):
    """What every question shares: a key hint line that names the answer Enter gives.

    The hint is rebuilt whenever the focus moves, so an operator who cannot see which
    button is highlighted still reads what Enter will do ("enter: Cancel").
    """

    CSS_PATH = "modals.tcss"
    KEYS_HINT = ""

    def key_hint(self) -> str:
        """The line under the buttons: the screen's keys, then what Enter answers now."""
        focused = self.focused
        if isinstance(focused, Button):
            enter = f"enter: {focused.label}"
        elif isinstance(focused, Input):
            enter = self.enter_in_input()
        elif isinstance(focused, OptionList):
            enter = "enter: the highlighted choice"
        else:
            enter = ""
        return "  ·  ".join(x for x in (self.KEYS_HINT, enter) if x)

    def enter_in_input(self) -> str:
        """What Enter does in this dialog's text field."""
        return ""

    def _update_hint(self) -> None:
        for hint in self.query("#keys").results(Static):
            hint.update(escape(self.key_hint()))

    def on_descendant_focus(self) -> None:
        self._update_hint()

    def on_mount(self) -> None:
        self.call_after_refresh(self._update_hint)

    def action_scroll_changes(self, direction: int) -> None:
        for area in self.query("#changes").results(VerticalScroll):
            if direction < 0:
                area.scroll_page_up()
            else:
                area.scroll_page_down()

    def fit(self, fixed_rows: int) -> None:
        """Give the list of changes only the rows left once everything else is on screen,
        so the buttons are never cut off (80x24 cut the dialog off below its text)."""
        # The dialog may take 90% of the screen (modals.tcss #dialog max-height).
        room = self.size.height * 9 // 10
        for area in self.query("#changes").results(VerticalScroll):
            area.styles.max_height = max(2, room - fixed_rows)

    def on_resize(self) -> None:
        self.fit(self.fixed_rows())

    def fixed_rows(self) -> int:
        """Rows of the dialog that are not the list of changes (borders, lines, buttons)."""
        return 12


def _changes_area() -> VerticalScroll:
    area = VerticalScroll(id="changes")
    area.can_focus = False
    return area


class ConfirmModal(_Dialog[bool]):
    """What will change, and go / no go. Destructive steps need a typed word to enable go.

    Keys: ``y`` goes ahead (not for a destructive step: its word must be typed), ``n`` and
    escape decline; Enter answers what the focused button says (Cancel at first: the safe
    choice), and the hint line says which.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "answer(False)", "Cancel"),
        Binding("n", "answer(False)", "Cancel", show=False),
        Binding("y", "go", "Go ahead", show=False),
        *_SCROLL_KEYS,
    ]

    def __init__(self, step_id: str, title: str, changes: list[str], *, destructive: bool = False,
                 type_to_confirm: str | None = None) -> None:
        super().__init__()
        self.step_id = step_id
        self.title_text = title
        self.changes = changes
        self.destructive = destructive
        self.word = type_to_confirm
        self.KEYS_HINT = ("type the name  ·  esc cancel" if self.word
                          else "y go ahead  ·  n/esc cancel")

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog", classes="destructive" if self.destructive else ""):
            head = "Destructive change" if self.destructive else "Confirm"
            yield Label(f"[b]{head}[/b]: {escape(self.title_text)}", id="q-title")
            yield Label(f"step [b]{escape(self.step_id)}[/b] will:", classes="muted")
            with _changes_area():
                items = self.changes or ["(the action did not describe its changes)"]
                yield Static("\n".join(f"• {escape(c)}" for c in items))
            if self.word:
                yield Label(f"Type [b]{escape(self.word)}[/b] to confirm:")
                yield Input(placeholder=self.word, id="word")
            with Horizontal(classes="buttons"):
                yield Button("Go ahead", variant="error" if self.destructive else "primary",
                             id="yes", disabled=bool(self.word))
                yield Button("Cancel", id="no")
            yield Static("", id="keys", classes="keys")

    def fixed_rows(self) -> int:
        # border 2, title 2, "will:" 1, changes margin 1, buttons 3, hints 1, slack 1;
        # the typed word adds its label and field (1 + 3 + margin 1).
        return 11 + (5 if self.word else 0)

    def on_mount(self) -> None:
        super().on_mount()
        if self.word:
            self.query_one("#word", Input).focus()
        else:
            self.query_one("#no", Button).focus()

    def enter_in_input(self) -> str:
        return "enter: Go ahead (once typed)"

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

    def action_go(self) -> None:
        """``y``: go ahead, unless the name must be typed first (then it says so)."""
        if self.query_one("#yes", Button).disabled:
            self.notify(f"Type {self.word!r} to confirm this destructive step.",
                        severity="warning", markup=False)
            return
        self.dismiss(True)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class ApproveModal(_Dialog[tuple[bool, str, str]]):
    """An approval step: who approves, with a comment; recorded in the journal."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "reject", "Reject"),
                                             *_SCROLL_KEYS]
    KEYS_HINT = "esc rejects  ·  tab: next field"

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
            with _changes_area():
                yield Static(escape(self.prompt))
            yield Input(value=self.who, placeholder="who approves", id="who")
            yield Input(placeholder="comment (recorded)", id="comment")
            with Horizontal(classes="buttons"):
                yield Button("Approve", variant="primary", id="yes")
                yield Button("Reject", id="no")
            yield Static("", id="keys", classes="keys")

    def fixed_rows(self) -> int:
        return 18  # border 2, title 2, two fields 8, buttons 3, hints 1, slack 2

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#comment", Input).focus()

    def enter_in_input(self) -> str:
        return "enter: Approve"

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


class SecretModal(_Dialog[str]):
    """A masked input for a secret the runbook needs and does not have."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]
    KEYS_HINT = "esc cancels (the run stops, resumable)"

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
            yield Static("", id="keys", classes="keys")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#secret", Input).focus()

    def enter_in_input(self) -> str:
        return "enter: OK"

    @on(Input.Submitted, "#secret")
    @on(Button.Pressed, "#yes")
    def _ok(self) -> None:
        self.dismiss(self.query_one("#secret", Input).value)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss("")

    def action_cancel(self) -> None:
        self.dismiss("")


class ChooseModal(_Dialog[str | None]):
    """Pick one option (e.g. trust this host key fingerprint) or refuse."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,n", "refuse", "Refuse")]
    KEYS_HINT = "up/down pick  ·  n/esc refuse"

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
            yield Static("", id="keys", classes="keys")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one(OptionList).focus()

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.options[event.option_index])

    @on(Button.Pressed, "#no")
    def action_refuse(self) -> None:
        self.dismiss(None)


class YesNoModal(_Dialog[bool]):
    """A plain yes/no question (quit while a step runs)."""

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
        self.KEYS_HINT = f"y {yes}  ·  n/esc {no}"

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"[b]{escape(self.q_title)}[/b]", id="q-title")
            yield Static(escape(self.text))
            with Horizontal(classes="buttons"):
                yield Button(self.yes, variant="error", id="yes")
                yield Button(self.no, variant="primary", id="no")
            yield Static("", id="keys", classes="keys")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#no", Button).focus()

    @on(Button.Pressed, "#yes")
    def _yes(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#no")
    def _no(self) -> None:
        self.dismiss(False)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)
