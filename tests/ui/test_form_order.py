"""A form in the operator's order (issue 17, item 3): required first, the rest in a
collapsed "advanced" group with defaults shown, and "use my current address" for
operator_cidr looked up from a stub check-ip server on 127.0.0.1, only when pressed.

The stub answers as AWS's checkip.amazonaws.com does (``GET /`` -> ``200``, ``text/plain``
body ``<address>\\n``; observed upstream behaviour, the service has no spec) and no kinder:
it answers nothing but that one path with that one body.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, Collapsible, Input

from elematrix_tui.ui.app import ElematrixApp
from elematrix_tui.ui.myaddress import CHECK_IP_URL_ENV
from elematrix_tui.ui.screens.params import ParamField, ParamFormScreen

from .helpers import wait_for
from .test_snapshots import _only_test_runbooks, no_blink

__all__ = ["_only_test_runbooks"]

POC = Path(__file__).resolve().parents[2] / "runbooks" / "poc-ec2.yaml"
FLOW = Path(__file__).resolve().parent / "data" / "ui-flow.yaml"


class Stub:
    def __init__(self, body: bytes) -> None:
        self.body = body
        self.hits = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.hits += 1
                if self.path != "/":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain;charset=UTF-8")
                self.send_header("Content-Length", str(len(stub.body)))
                self.end_headers()
                self.wfile.write(stub.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stub]:
    s = Stub(b"203.0.113.9\n")
    monkeypatch.setenv(CHECK_IP_URL_ENV, s.url)
    yield s
    s.close()


async def to_form(pilot: Pilot[Any]) -> ParamFormScreen:
    await pilot.pause()
    no_blink(pilot)
    pilot.app.screen.query_one("#name", Input).value = "staging"
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ParamFormScreen), what="form")
    await pilot.pause()
    no_blink(pilot)
    assert isinstance(pilot.app.screen, ParamFormScreen)
    return pilot.app.screen


@pytest.mark.anyio
async def test_required_first_then_a_collapsed_advanced_group(state_dir: Path) -> None:
    app = ElematrixApp(state_dir, runbook=POC)
    async with app.run_test(size=(100, 40)) as pilot:
        form = await to_form(pilot)
        fields = list(form.query(ParamField))
        group = form.query_one("#advanced", Collapsible)
        assert group.collapsed
        inside = set(group.query(ParamField))
        outside = [f for f in fields if f not in inside]
        assert outside and inside
        assert all(f.param.is_required for f in outside)
        assert not any(f.param.is_required for f in inside)
        # The operator's fields come first on screen: every one before the group.
        assert fields[:len(outside)] == outside
        assert "operator_cidr" in {f.param.name for f in outside}
        for f in inside:  # each advanced field says its default (or that it is generated)
            if f.param.default is not None and f.param.type != "secret":
                assert f.query(".p-default"), f.param.name
        # Tab from the last required field reaches the group's title; enter opens it.
        group.query_one("CollapsibleTitle").focus()
        await pilot.press("enter")
        await pilot.pause()
        assert not group.collapsed


@pytest.mark.anyio
async def test_use_my_current_address_from_the_stub(state_dir: Path, stub: Stub) -> None:
    app = ElematrixApp(state_dir, runbook=POC)
    async with app.run_test(size=(100, 40)) as pilot:
        form = await to_form(pilot)
        field = form.query_one("#in-operator_cidr", Input)
        assert field.value == "" and stub.hits == 0  # never looked up unasked
        button = form.query_one("#me-operator_cidr", Button)
        button.focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: field.value == "203.0.113.9/32", what="the address")
        assert stub.hits == 1
        assert any("203.0.113.9/32" in str(n.message) for n in app._notifications)
        assert not form.query_one("#field-operator_cidr", ParamField).has_class("invalid")


@pytest.mark.anyio
async def test_a_reply_that_is_no_address_is_refused(state_dir: Path, stub: Stub) -> None:
    stub.body = b"<html>captive portal</html>\n"
    app = ElematrixApp(state_dir, runbook=POC)
    async with app.run_test(size=(100, 40)) as pilot:
        form = await to_form(pilot)
        field = form.query_one("#in-operator_cidr", Input)
        form.query_one("#me-operator_cidr", Button).press()
        await wait_for(pilot, lambda: any("No address" in str(n.message)
                                          for n in app._notifications), what="the refusal")
        assert field.value == ""


@pytest.mark.parametrize("size", [(80, 24), (160, 50)])
def test_form_fits(snap_compare: Any, state_dir: Path, size: tuple[int, int]) -> None:
    # A test runbook (the bundled one's parameters change as the product grows).
    app = ElematrixApp(state_dir, runbook=FLOW)

    async def run(pilot: Pilot[Any]) -> None:
        await to_form(pilot)
        pilot.app.clear_notifications()

    assert snap_compare(app, terminal_size=size, run_before=run)
