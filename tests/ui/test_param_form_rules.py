"""The parameter form itself (a real Textual screen, typed into) refuses and accepts what
the CLI does: the widget's own check is the engine's rule (tests/engine/test_param_rules.py
holds the property test over both entry points)."""

from __future__ import annotations

from typing import Any

import pytest
from textual.app import App
from textual.widgets import Input

from elematrix_tui.engine.model import Param, Runbook
from elematrix_tui.ui.screens.params import ParamField, ParamFormScreen
from tests.engine.test_param_rules import cli_verdict

pytestmark = pytest.mark.anyio

CASES: list[tuple[dict[str, Any], str]] = [
    ({"type": "cidr"}, "10.0.0.1/24"), ({"type": "cidr"}, "10.0.0.0/24"),
    ({"type": "hostname"}, "host:8448"), ({"type": "hostname"}, "example.org."),
    ({"type": "string", "pattern": "[a-z]+"}, "abc1"), ({"type": "string", "min": 3}, "ab"),
    ({"type": "secret", "generate": 20}, "short"), ({"type": "secret"}, "k7Q"),
    ({"type": "email"}, "ops@example.org"), ({"type": "int", "max": 8}, "9"),
    ({"type": "string"}, "example.org "),
]


async def test_the_form_refuses_what_the_cli_refuses() -> None:
    app: App[Any] = App()
    async with app.run_test() as pilot:
        for spec, raw in CASES:
            param = Param.model_validate({"name": "p", **spec})
            rb = Runbook.model_validate({"runbook": "f", "params": [spec | {"name": "p"}],
                                         "phases": [{"id": "one", "steps": [
                                             {"id": "s", "action": "local.noop"}]}]})
            await app.push_screen(ParamFormScreen(rb, {}, "dep"))
            await pilot.pause()
            app.screen.query_one("#in-p", Input).value = raw
            await pilot.pause()
            form_ok = app.screen.query_one(ParamField).validate_now() is None
            assert form_ok is cli_verdict(param, raw)[0], (spec, raw)
            app.pop_screen()
            await pilot.pause()
