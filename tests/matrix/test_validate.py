"""matrix.validate against the real stack: the passing gate and every broken variant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from elematrix_tui.actions.matrix_checks import CHECK_NAMES, DIAGNOSES
from elematrix_tui.engine.action import ActionFailed, Result
from tests.support.services import LOOPBACK, MatrixStack, free_port

from .conftest import checks, run_validate

pytestmark = pytest.mark.services


def _secrets_absent(stack: MatrixStack, ctx: object, res: object) -> None:
    text = json.dumps([getattr(ctx, "logs", []), getattr(ctx, "notes", [])], default=str)
    text += json.dumps(getattr(res, "outputs", {}), default=str) + str(res)
    assert stack.registration_shared_secret not in text


def test_validate_passes_with_every_check(tmp_path: Path, matrix_stack: MatrixStack) -> None:
    res, ctx = run_validate(tmp_path, matrix_stack, max_upload_size_mb=4)
    assert isinstance(res, Result), getattr(res, "diagnosis", res)
    assert res.status == "ok"
    assert res.outputs["passed"] is True
    assert list(res.outputs["checks"]) == list(CHECK_NAMES)
    assert set(res.outputs["checks"].values()) == {"passed"}
    got = checks(ctx)
    assert list(got) == list(CHECK_NAMES)
    for c in got.values():
        assert c["passed"] is True and c["duration"] > 0 and c["diagnosis"] is None
    lines = "\n".join(line for _, line in ctx.logs)
    assert "decrypted RoomMessageText" in lines and "m.megolm.v1.aes-sha2" in lines
    assert "keyless client sees MegolmEvent" in lines
    assert res.outputs["media_refused_by"] in ("synapse", "nginx")
    _secrets_absent(matrix_stack, ctx, res)


def _leftovers(stack: MatrixStack) -> tuple[set[str], list[str]]:
    """(valid registration tokens, active users made by the gate), seen by a probe admin."""
    import asyncio

    import httpx

    from elematrix_tui.actions import matrix_http as mh

    async def go() -> tuple[set[str], list[str]]:
        async with httpx.AsyncClient(timeout=10) as http:
            sess = await mh.register_shared_secret(
                http, stack.admin_url, stack.registration_shared_secret,
                "leftover-probe-" + str(free_port()), "pw-" + str(free_port()), admin=True)
            r = await mh.call(http, "GET", stack.admin_url
                              + "/_synapse/admin/v1/registration_tokens?valid=true",
                              token=sess.access_token)
            users = await mh.call(http, "GET", stack.admin_url
                                  + "/_synapse/admin/v2/users?deactivated=false&limit=1000",
                                  token=sess.access_token)
            await mh.deactivate(http, stack.admin_url, sess.access_token, sess.user_id)
            names = [u["name"] for u in users.json()["users"]]
            return ({t["token"] for t in r.json()["registration_tokens"]},
                    [n for n in names if "elematrix-check" in n])

    return asyncio.run(go())


def test_validate_twice_leaves_nothing_behind(tmp_path: Path,
                                             matrix_stack: MatrixStack) -> None:
    """Re-running the gate works (rate limits, names) and cleanup removes what it made."""
    tokens_before, _ = _leftovers(matrix_stack)
    for i in range(2):
        res, _ctx = run_validate(tmp_path / str(i), matrix_stack)
        assert isinstance(res, Result), getattr(res, "diagnosis", res)
    tokens_after, users = _leftovers(matrix_stack)
    assert tokens_after <= tokens_before
    assert users == []


def _failed(res: object, ctx: object, check: str, cause: str) -> dict[str, object]:
    assert isinstance(res, ActionFailed), f"expected a failure, got {res}"
    got = checks(ctx)  # type: ignore[arg-type]
    assert got[check]["passed"] is False, got[check]
    assert got[check]["cause"] == cause, got[check]
    assert got[check]["diagnosis"] == DIAGNOSES[cause].diagnosis
    assert got[check]["fix"] == DIAGNOSES[cause].fix
    assert check in res.message and DIAGNOSES[cause].diagnosis in (res.diagnosis or "")
    assert got["cleanup"]["passed"] in (True, False)  # cleanup always reported
    return got[check]


def test_proxy_pass_with_a_path(tmp_path: Path, matrix_stack: MatrixStack) -> None:
    """`location /_matrix/ { proxy_pass http://synapse:8008/_matrix/; }`: looks fine, even
    passes E2EE, but decodes %2F; the encoded probe catches it."""
    up = f"http://{LOOPBACK}:{matrix_stack.ports.synapse}"
    loc = (f"location /_matrix/ {{ proxy_pass {up}/_matrix/; }}\n"
           f"    location /_synapse/client/ {{ proxy_pass {up}/_synapse/client/; }}")
    base, _ = matrix_stack.nginx_variant("pathproxy", matrix_location=loc)
    res, ctx = run_validate(tmp_path, matrix_stack, base_url=base)
    c = _failed(res, ctx, "discovery", "proxy_path")
    assert "proxy_pass with a path" in str(c["diagnosis"])
    assert any("M_UNRECOGNIZED" in d for d in c["details"])  # type: ignore[union-attr]
    # The rest still ran: the subtle misconfiguration does not break E2EE itself.
    assert checks(ctx)["e2ee_roundtrip"]["passed"] is True


def test_proxy_pass_trailing_slash_strips_prefix(tmp_path: Path,
                                                 matrix_stack: MatrixStack) -> None:
    up = f"http://{LOOPBACK}:{matrix_stack.ports.synapse}"
    loc = f"location /_matrix {{ proxy_pass {up}/; }}"
    base, _ = matrix_stack.nginx_variant("slashproxy", matrix_location=loc)
    res, ctx = run_validate(tmp_path, matrix_stack, base_url=base)
    _failed(res, ctx, "discovery", "proxy_path")
    assert checks(ctx)["registration"]["status"] == "skipped"


def test_https_redirect_left_in_nginx(tmp_path: Path, matrix_stack: MatrixStack) -> None:
    base, _ = matrix_stack.nginx_variant("redirect",
                                         extra="return 301 https://$host$request_uri;")
    res, ctx = run_validate(tmp_path, matrix_stack, base_url=base)
    c = _failed(res, ctx, "discovery", "https_redirect")
    assert "HTTPS redirect left in nginx" in str(c["diagnosis"])
    assert any("301" in d for d in c["details"])  # type: ignore[union-attr]
    for later in ("registration", "e2ee_roundtrip", "encrypted_at_rest", "media"):
        assert checks(ctx)[later]["status"] == "skipped"


def test_nginx_default_1mb_body_limit(tmp_path: Path, matrix_stack: MatrixStack) -> None:
    base, _ = matrix_stack.nginx_variant("bodylimit", body_size="")
    res, ctx = run_validate(tmp_path, matrix_stack, base_url=base)
    c = _failed(res, ctx, "media", "body_size")
    assert "client_max_body_size" in str(c["diagnosis"])
    assert any("HTML" in d for d in c["details"])  # type: ignore[union-attr]
    assert checks(ctx)["e2ee_roundtrip"]["passed"] is True


def test_client_without_e2ee_store_sends_plaintext(tmp_path: Path,
                                                   matrix_stack: MatrixStack) -> None:
    """The gate's self-test: the sender has no store; nio 'succeeds' sending plaintext."""
    res, ctx = run_validate(tmp_path, matrix_stack, e2ee_store=False)
    c = _failed(res, ctx, "e2ee_roundtrip", "plaintext")
    assert "client without E2EE store" in str(c["diagnosis"])
    at_rest = checks(ctx)["encrypted_at_rest"]
    assert at_rest["passed"] is False and at_rest["cause"] == "plaintext"
    assert checks(ctx)["cleanup"]["passed"] is True


def test_registration_disabled_with_tokens_required(tmp_path: Path,
                                                    noreg_stack: MatrixStack) -> None:
    res, ctx = run_validate(tmp_path, noreg_stack)
    c = _failed(res, ctx, "registration", "registration_disabled")
    assert "enable_registration" in str(c["diagnosis"])
    assert any("Registration has been disabled" in d for d in c["details"])  # type: ignore
    assert checks(ctx)["cleanup"]["passed"] is True  # token and temporary admin removed


def test_connection_refused_on_the_public_port(tmp_path: Path,
                                               matrix_stack: MatrixStack) -> None:
    res, ctx = run_validate(tmp_path, matrix_stack, base_url=f"http://{LOOPBACK}:{free_port()}")
    c = _failed(res, ctx, "discovery", "unreachable")
    assert "security group or nginx down" in str(c["diagnosis"])


def test_admin_api_unreachable_and_wrong_secret(tmp_path: Path,
                                                matrix_stack: MatrixStack) -> None:
    res, ctx = run_validate(tmp_path / "a", matrix_stack,
                            admin_url=f"http://{LOOPBACK}:{free_port()}")
    _failed(res, ctx, "registration", "admin_unreachable")
    res, ctx = run_validate(tmp_path / "b", matrix_stack,
                            registration_shared_secret="not-the-secret-at-all")
    _failed(res, ctx, "registration", "admin_auth")


def test_wrong_server_name_in_element_config(tmp_path: Path,
                                             matrix_stack: MatrixStack) -> None:
    res, ctx = run_validate(tmp_path, matrix_stack, server_name="other.example")
    _failed(res, ctx, "discovery", "element_config")
    got = checks(ctx)
    assert got["registration"]["cause"] == "server_name"
    assert got["e2ee_roundtrip"]["status"] == "skipped"
    assert got["cleanup"]["passed"] is True  # the users it did register are removed


def test_expected_upload_limit_differs(tmp_path: Path, matrix_stack: MatrixStack) -> None:
    res, ctx = run_validate(tmp_path, matrix_stack, max_upload_size_mb=50)
    _failed(res, ctx, "media", "media_limit")


def test_no_credentials_is_an_operator_error(tmp_path: Path,
                                             matrix_stack: MatrixStack) -> None:
    res, _ = run_validate(tmp_path, matrix_stack, registration_shared_secret="")
    assert isinstance(res, ActionFailed)
    assert "registration_shared_secret or admin_token" in res.message


def test_cancel_stops_the_gate_and_still_cleans_up(tmp_path: Path,
                                                   matrix_stack: MatrixStack) -> None:
    import threading

    from elematrix_tui.actions.matrix import Validate
    from elematrix_tui.engine.standalone import StandaloneContext

    from .conftest import validate_inputs

    ctx = StandaloneContext(deployment_dir=tmp_path)
    original = ctx.note

    def note(kind: str, **data: object) -> None:
        original(kind, **data)
        if kind == "gate.check" and data.get("check") == "registration":
            threading.Timer(0.2, ctx.cancel.set).start()  # mid E2EE round trip

    ctx.note = note  # type: ignore[method-assign]
    with pytest.raises(ActionFailed) as e:
        ctx.run(Validate(), validate_inputs(matrix_stack))
    assert "interrupted" in e.value.message
    got = checks(ctx)
    assert got["cleanup"]["passed"] is True
    assert "media" not in got
    assert ctx.progress_reports[0].startswith("check 1/6")


def test_element_http_warning_is_logged_and_noted(tmp_path: Path, matrix_stack: MatrixStack,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A public http:// base URL gets the element-web#19464 warning in the log and a note.

    Tests only contact loopback (which is exempt), so the address the warning is computed
    for is swapped for a documentation address; the gate itself runs against loopback.
    """
    from elematrix_tui.actions.matrix_checks import gate as mc

    real = mc.element_e2ee_warning
    monkeypatch.setattr(mc, "element_e2ee_warning",
                        lambda url: real("http://203.0.113.10"))
    res, ctx = run_validate(tmp_path, matrix_stack,
                            base_url=f"http://{LOOPBACK}:{free_port()}")
    assert isinstance(res, ActionFailed)
    warnings = [d for kind, d in ctx.notes if kind == "warning"]
    assert len(warnings) == 1 and "element-web#19464" in str(warnings[0]["text"])
    logged = [line for stream, line in ctx.logs if line.startswith("WARNING")]
    assert logged and "http://localhost" in logged[0] and "ssh -L" in logged[0]


def test_nginx_with_headroom_lets_synapse_refuse_in_json(tmp_path: Path,
                                                         matrix_stack: MatrixStack) -> None:
    """client_max_body_size above max_upload_size: the over-limit upload reaches Synapse,
    which refuses it with JSON M_TOO_LARGE (what clients can show properly)."""
    base, _ = matrix_stack.nginx_variant("headroom", body_size="5M")
    res, ctx = run_validate(tmp_path, matrix_stack, base_url=base)
    assert isinstance(res, Result), getattr(res, "diagnosis", res)
    assert res.outputs["media_refused_by"] == "synapse"
    assert any("M_TOO_LARGE" in d for d in checks(ctx)["media"]["details"])
