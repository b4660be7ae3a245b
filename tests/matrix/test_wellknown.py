"""/.well-known/matrix/server is optional (issue 12): missing is fine, broken is a finding.

Against the real stack, through nginx variants that serve it differently. The bundled
stack no longer renders or serves it (it advertised ``<ip>:80`` for federation, which
the HTTP-only POC has off).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from elematrix_tui.engine.action import ActionFailed, Result
from elematrix_tui.stack.render import render_files
from elematrix_tui.stack.values import SECRET_NAMES, StackValues
from tests.support.services import MatrixStack

from .conftest import checks, run_validate

pytestmark = pytest.mark.services


def _discovery(tmp_path: Path, stack: MatrixStack, base_url: str) -> dict[str, object]:
    res, ctx = run_validate(tmp_path, stack, base_url=base_url, max_upload_size_mb=4)
    d = checks(ctx)["discovery"]
    d["result"] = res
    return d


@pytest.mark.parametrize("spa", [False, True], ids=["404", "spa-index-html"])
def test_missing_server_well_known_is_fine(tmp_path: Path, matrix_stack: MatrixStack,
                                           spa: bool) -> None:
    """Not served: nginx's 404, or a catch-all answering index.html (a single-page app's
    usual `try_files $uri /index.html`): the gate passes and says it is optional."""
    base, _ = matrix_stack.nginx_variant(f"no-server-wk-{spa}", server_well_known=None,
                                         spa_fallback=spa)
    d = _discovery(tmp_path, matrix_stack, base)
    assert d["status"] == "passed", d["details"]
    assert any("well-known server: not served" in x for x in d["details"])  # type: ignore[attr-defined]
    assert isinstance(d["result"], Result)


@pytest.mark.parametrize("body", ["{}", '{"m.server": "http://203.0.113.10:80/"}',
                                  '{"m.server": 80}', "not json"],
                         ids=["no-m.server", "url-not-host-port", "not-a-string", "not-json"])
def test_present_but_broken_server_well_known_is_a_finding(
        tmp_path: Path, matrix_stack: MatrixStack, body: str) -> None:
    base, _ = matrix_stack.nginx_variant(f"bad-server-wk-{abs(hash(body))}",
                                         server_well_known=body)
    d = _discovery(tmp_path, matrix_stack, base)
    assert d["status"] == "failed" and d["cause"] == "well_known", d["details"]
    assert isinstance(d["result"], ActionFailed)
    assert "well-known server is served but" in "\n".join(d["details"])  # type: ignore[arg-type]


def test_a_correct_server_well_known_passes(tmp_path: Path, matrix_stack: MatrixStack) -> None:
    base, _ = matrix_stack.nginx_variant("good-server-wk",
                                         server_well_known='{"m.server": "chat.example.org:443"}')
    d = _discovery(tmp_path, matrix_stack, base)
    assert d["status"] == "passed", d["details"]
    assert "well-known server: m.server 'chat.example.org:443'" in d["details"]  # type: ignore[operator]


def test_the_bundled_stack_does_not_advertise_federation() -> None:
    values = StackValues(server_name="chat.example.org", public_address="203.0.113.10")
    files = render_files(values, {n: "s" * 32 for n in SECRET_NAMES})
    assert "nginx/well-known/matrix/client" in files
    assert "nginx/well-known/matrix/server" not in files
    assert "/.well-known/matrix/server" not in files["nginx/default.conf"]
    assert "203.0.113.10:80" not in "".join(files.values())
