"""browser.secure_context and matrix.routes refuse bad inputs before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from elematrix_tui.actions.browser import SecureContext, SecureContextInputs
from elematrix_tui.actions.matrix_routes import Routes
from elematrix_tui.engine.action import ActionFailed
from elematrix_tui.engine.standalone import StandaloneContext


@pytest.mark.parametrize(("resolve", "msg"), [
    ({"matrix.example.org": "203.0.113.7"}, "only loopback"),
    ({"matrix.example.org": "not-an-ip"}, "only loopback"),
    ({"bad host": "127.0.0.1"}, "not a host name"),
])
def test_resolve_is_loopback_only(resolve: dict[str, str], msg: str) -> None:
    with pytest.raises(ValidationError, match=msg):
        SecureContextInputs(url="https://matrix.example.org/", resolve=resolve)


def test_url_must_be_http_or_https() -> None:
    with pytest.raises(ValidationError, match="must start with http"):
        SecureContextInputs(url="file:///etc/passwd")


def test_missing_browser_is_a_clear_failure(tmp_path: Path) -> None:
    ctx = StandaloneContext(deployment_dir=tmp_path)
    with pytest.raises(ActionFailed, match="not installed") as e:
        ctx.run(SecureContext(), {"url": "https://127.0.0.1:1/",
                                  "chromium": "no-such-chromium-binary"})
    assert e.value.fix and "apt-get install -y chromium" in e.value.fix


def test_routes_with_a_bad_layout_fails_without_probing(tmp_path: Path) -> None:
    ctx = StandaloneContext(deployment_dir=tmp_path)
    with pytest.raises(ActionFailed, match="layout") as e:
        ctx.run(Routes(), {"base_url": "https://127.0.0.1:1", "server_name": "x.test",
                           "layout": {"stream_writer": 5}})
    assert e.value.retry is False
