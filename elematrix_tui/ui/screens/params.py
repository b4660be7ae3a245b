"""The parameter form: one field per runbook parameter, validated as the operator types."""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Collapsible, Footer, Input, Label, Select, Static, Switch

from ...engine.model import Param, Runbook
from ...engine.params import generate_secret
from .. import myaddress, validation
from ..markup import escape

# Filled by the app itself, never typed: the deployment name is the deployment.
HIDDEN = frozenset({"deployment"})


class ParamField(Vertical):
    """Label, help, the input, a permanent-value warning and the inline error."""

    DEFAULT_CSS = """
    ParamField { height: auto; margin-bottom: 1; }
    ParamField .p-name { text-style: bold; margin: 0; }
    ParamField .p-help { color: $text-muted; margin: 0; }
    ParamField .p-warn { color: $warning; }
    ParamField .p-error { color: $error; height: auto; }
    ParamField .p-row { height: auto; }
    ParamField .p-row Input { width: 1fr; }
    ParamField .p-row Button { min-width: 12; }
    ParamField Input, ParamField Select { background: $boost; }
    ParamField.invalid Input { background: $error 20%; }
    """

    def __init__(self, param: Param, value: Any, *, keep_secret: bool = False) -> None:
        super().__init__(id=f"field-{param.name}")
        self.param = param
        # Editing an existing deployment: an empty secret keeps the stored one.
        self.keep_secret = keep_secret and param.type == "secret"
        self.initial = "" if value is None else str(value)
        if param.type == "bool" and value is None and param.default is not None:
            self.initial = str(param.default)

    def compose(self) -> ComposeResult:
        p = self.param
        req = " *" if p.is_required else ""
        kind = p.type if p.type != "choice" else "choice"
        yield Label(f"{escape(p.name)}{req} [dim]({kind})[/dim]", classes="p-name")
        if p.help:
            yield Static(escape(p.help), classes="p-help")
        if p.default is not None and p.type != "secret":
            yield Static(f"default: {escape(str(p.default))}", classes="p-help p-default")
        if p.permanent:
            why = p.permanent_reason or "it is baked into data the deployment creates"
            yield Static(f"⚠ permanent: cannot be changed after the first run ({escape(why)})",
                         classes="p-warn")
        if p.type == "choice":
            opts = [(escape(c), c) for c in p.choices or []]
            val = self.initial if self.initial in (p.choices or []) else Select.NULL
            yield Select(opts, value=val, id=f"in-{p.name}", allow_blank=not p.is_required,
                         compact=True)
        elif p.type == "bool":
            yield Switch(value=validation.is_on(self.initial), id=f"in-{p.name}")
        elif p.type == "secret":
            with Horizontal(classes="p-row"):
                hint = ("stored: type to replace" if self.keep_secret
                        else "leave empty to generate" if p.generate else "hidden")
                yield Input(self.initial, password=True, placeholder=hint, id=f"in-{p.name}",
                            compact=True)
                if p.generate:
                    yield Button("Generate", id=f"gen-{p.name}", classes="gen", compact=True)
        elif p.name in myaddress.MY_ADDRESS_PARAMS:
            with Horizontal(classes="p-row"):
                yield Input(self.initial, placeholder=str(p.default or ""), id=f"in-{p.name}",
                            compact=True)
                yield Button("Use my current address", id=f"me-{p.name}", classes="me",
                             compact=True)
        else:
            yield Input(self.initial, placeholder=str(p.default or ""), id=f"in-{p.name}",
                        compact=True)
        err = Static("", classes="p-error", id=f"err-{p.name}")
        err.display = False
        yield err

    def raw(self) -> str:
        w = self.query_one(f"#in-{self.param.name}")
        if isinstance(w, Switch):
            return "true" if w.value else "false"
        if isinstance(w, Select):
            v = w.value
            return "" if v is Select.NULL or v is None else str(v)
        assert isinstance(w, Input)
        return w.value

    def validate_now(self) -> str | None:
        raw = self.raw()
        err = None if (self.keep_secret and not raw) else validation.check(self.param, raw)
        box = self.query_one(f"#err-{self.param.name}", Static)
        box.update(f"✗ {escape(err)}" if err else "")
        box.display = err is not None
        self.set_class(err is not None, "invalid")
        return err

    @on(Input.Changed)
    @on(Select.Changed)
    def _changed(self) -> None:
        self.validate_now()

    @on(Button.Pressed, ".me")
    def _my_address(self, event: Button.Pressed) -> None:
        event.stop()
        url = myaddress.check_ip_url()
        self.notify(f"Asking {url} for your public address…", markup=False)
        self._look_up(url)

    @work(thread=True, exclusive=True, group="my-address")
    def _look_up(self, url: str) -> None:
        # A thread: the GET may take seconds, the form keeps answering keys meanwhile.
        try:
            cidr = myaddress.my_cidr(url)
        except myaddress.AddressLookupError as e:
            self.app.call_from_thread(self.notify, f"No address: {e}. Type it instead.",
                                      severity="error", markup=False)
            return
        self.app.call_from_thread(self._fill_address, cidr, url)

    def _fill_address(self, cidr: str, url: str) -> None:
        # Shown in the field, never used unseen: saving is the operator's next step.
        field = self.query_one(f"#in-{self.param.name}", Input)
        field.value = cidr
        field.focus()
        self.notify(f"{self.param.name} is {cidr} ({url} sees you there); check it, then "
                    "ctrl+s saves.", markup=False, timeout=10)

    @on(Button.Pressed, ".gen")
    def _generate(self, event: Button.Pressed) -> None:
        event.stop()
        length = self.param.generate or 32
        self.query_one(f"#in-{self.param.name}", Input).value = generate_secret(length)
        self.notify(f"Generated a {length}-character {self.param.name}; it goes to the "
                    "secret store, never to the journal.", markup=False)


def form_order(runbook: Runbook) -> tuple[list[Param], list[Param]]:
    """(the fields the operator must fill, the advanced ones), each in runbook order.

    First what has no value without the operator: required parameters, and secrets that
    are neither given nor generated. Everything with a default or a generator (tuning
    knobs like ``status_wait``, ``remote_dir``) goes to the collapsed "advanced" group.
    """
    shown = [p for p in runbook.params if p.name not in HIDDEN]
    required = [p for p in shown if p.is_required]
    return required, [p for p in shown if not p.is_required]


class ParamFormScreen(Screen[dict[str, Any] | None]):
    """Dismisses with the typed values (secrets included, in memory only) or None."""

    CSS_PATH = "forms.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "submit", "Save and continue"),
        Binding("escape", "cancel", "Back"),
    ]

    def __init__(self, runbook: Runbook, values: dict[str, Any], deployment: str, *,
                 existing: bool = False) -> None:
        super().__init__()
        self.runbook = runbook
        self.values = values
        self.deployment = deployment
        # An existing deployment: its secrets are in the secret store already.
        self.existing = existing

    def compose(self) -> ComposeResult:
        title = self.runbook.title or self.runbook.runbook
        yield Static(f"[b]Parameters[/b] for [b]{escape(self.deployment)}[/b] · "
                     f"{escape(title)}", id="form-head")
        with VerticalScroll(id="form"):
            yield Static("Fields with * are required. The cost estimate of the preflight step "
                         "is shown before anything is created.", classes="p-help")
            required, advanced = form_order(self.runbook)
            for p in required:
                yield ParamField(p, self.values.get(p.name, p.default), keep_secret=self.existing)
            if advanced:
                with Collapsible(title=f"Advanced: {len(advanced)} more, each with a default "
                                       f"(enter opens)", collapsed=True, id="advanced"):
                    for p in advanced:
                        yield ParamField(p, self.values.get(p.name, p.default),
                                         keep_secret=self.existing)
            with Horizontal(classes="buttons"):
                yield Button("Save and continue", variant="primary", id="submit")
                yield Button("Back", id="cancel")
        yield Footer()

    def on_mount(self) -> None:
        first = self.query(Input).first() if self.query(Input) else None
        if first is not None:
            first.focus()

    def collect(self) -> tuple[dict[str, Any], list[str]]:
        """(values, names of the fields in error)."""
        values: dict[str, Any] = {"deployment": self.deployment} \
            if self.runbook.param("deployment") else {}
        errors: list[str] = []
        for f in self.query(ParamField):
            if f.validate_now() is not None:
                errors.append(f.param.name)
                continue
            v = validation.convert(f.param, f.raw())
            if v is not None:
                values[f.param.name] = v
        return values, errors

    @on(Button.Pressed, "#submit")
    def action_submit(self) -> None:
        values, errors = self.collect()
        if errors:
            self.notify(f"{len(errors)} field(s) need attention: {', '.join(errors)}",
                        severity="error", markup=False)
            field = self.query_one(f"#field-{errors[0]}", ParamField)
            for group in self.query(Collapsible):
                if field in group.query(ParamField):
                    group.collapsed = False  # an error is never hidden in a closed group
            field.scroll_visible()
            inputs = field.query("Input, Select, Switch")
            if inputs:
                inputs.first().focus()
            return
        self.dismiss(values)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
