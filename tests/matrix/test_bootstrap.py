"""matrix.bootstrap against the real stack: admin, registration token, rooms, idempotency."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from elematrix_tui.actions import matrix_http as mh
from elematrix_tui.actions.matrix import (
    ADMIN_PASSWORD_SECRET,
    ADMIN_TOKEN_SECRET,
    REGISTRATION_TOKEN_SECRET,
    Bootstrap,
)
from elematrix_tui.engine.action import ActionFailed, Result
from elematrix_tui.engine.standalone import StandaloneContext
from tests.support.services import MatrixStack

from .conftest import checks, run_validate

pytestmark = pytest.mark.services


def _inputs(stack: MatrixStack, user: str, **over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "admin_url": stack.admin_url, "base_url": stack.base_url,
        "server_name": stack.server_name, "admin_user": user,
        "registration_shared_secret": stack.registration_shared_secret,
        "token_uses": 5, "token_expiry_days": 2,
        "default_rooms": [f"Welcome {user}",
                          {"name": "News", "alias": f"news-{user}", "encrypted": True}],
    }
    d.update(over)
    return d


async def _register(stack: MatrixStack, token: str) -> mh.Session:
    async with httpx.AsyncClient(timeout=10) as http:
        return await mh.register_with_token(http, stack.base_url,
                                            "u" + secrets.token_hex(4), "pw-" +
                                            secrets.token_hex(8), token)


def test_bootstrap_creates_then_finds_everything(tmp_path: Path,
                                                 matrix_stack: MatrixStack) -> None:
    user = "admin-" + secrets.token_hex(3)
    ctx = StandaloneContext(deployment_dir=tmp_path)
    first = ctx.run(Bootstrap(), _inputs(matrix_stack, user))
    assert first.status == "changed"
    out = first.outputs
    assert out["admin_user_id"] == f"@{user}:{matrix_stack.server_name}"
    assert out["registration_token_secret"] == REGISTRATION_TOKEN_SECRET
    assert out["registration_token_uses"] == 5 and out["registration_token_expires"]
    assert set(out["created"]) >= {"admin", "registration_token"}
    rooms = out["rooms"]
    assert set(rooms) == {f"#welcome-{user}:{matrix_stack.server_name}",
                          f"#news-{user}:{matrix_stack.server_name}"}
    assert all(r and r.startswith("!") for r in rooms.values())
    for name in (ADMIN_PASSWORD_SECRET, ADMIN_TOKEN_SECRET, REGISTRATION_TOKEN_SECRET):
        assert ctx.secrets.get(name)
    # Secrets are stored, never output or logged.
    shown = json.dumps([out, ctx.logs, ctx.notes, first.message])
    for value in ctx.secrets.values():
        assert value not in shown
    assert matrix_stack.registration_shared_secret not in shown

    # The registration token works for a real client registration.
    sess = asyncio.run(_register(matrix_stack, ctx.secrets[REGISTRATION_TOKEN_SECRET]))
    assert sess.user_id.endswith(":" + matrix_stack.server_name)

    # check() sees everything in place; a second apply changes nothing.
    chk = ctx.check(Bootstrap(), _inputs(matrix_stack, user))
    assert chk.in_sync is True, chk.changes
    assert chk.outputs["rooms"] == rooms
    token_before = ctx.secrets[REGISTRATION_TOKEN_SECRET]
    again = ctx.run(Bootstrap(), _inputs(matrix_stack, user, registration_shared_secret=None))
    assert again.status == "ok" and again.outputs["created"] == []
    assert again.outputs["rooms"] == rooms
    assert ctx.secrets[REGISTRATION_TOKEN_SECRET] == token_before

    # Lost token: logs in again with the stored password.
    del ctx.secrets[ADMIN_TOKEN_SECRET]
    third = ctx.run(Bootstrap(), _inputs(matrix_stack, user, registration_shared_secret=None))
    assert third.status == "ok" and ctx.secrets.get(ADMIN_TOKEN_SECRET)
    assert any("login token" in line for _, line in ctx.logs)

    # The stored admin token drives the validation gate (no temporary admin needed),
    # and the gate's cleanup leaves the real admin alone.
    res, vctx = run_validate(tmp_path / "v", matrix_stack, registration_shared_secret=None,
                             admin_token=ctx.secrets[ADMIN_TOKEN_SECRET])
    assert isinstance(res, Result), getattr(res, "diagnosis", res)
    assert "temporary admin" not in json.dumps(checks(vctx))

    async def still_admin() -> str:
        async with httpx.AsyncClient(timeout=10) as http:
            return await mh.whoami(http, matrix_stack.admin_url,
                                   ctx.secrets[ADMIN_TOKEN_SECRET])

    assert asyncio.run(still_admin()) == out["admin_user_id"]


def test_used_up_token_is_replaced(tmp_path: Path, matrix_stack: MatrixStack) -> None:
    user = "admin-" + secrets.token_hex(3)
    ctx = StandaloneContext(deployment_dir=tmp_path)
    ctx.run(Bootstrap(), _inputs(matrix_stack, user, token_uses=1, default_rooms=[]))
    asyncio.run(_register(matrix_stack, ctx.secrets[REGISTRATION_TOKEN_SECRET]))
    chk = ctx.check(Bootstrap(), _inputs(matrix_stack, user, token_uses=1, default_rooms=[]))
    assert chk.in_sync is False and any("registration token" in c for c in chk.changes)
    old = ctx.secrets[REGISTRATION_TOKEN_SECRET]
    res = ctx.run(Bootstrap(), _inputs(matrix_stack, user, token_uses=1, default_rooms=[]))
    assert res.outputs["created"] == ["registration_token"]
    assert ctx.secrets[REGISTRATION_TOKEN_SECRET] != old


def test_admin_made_elsewhere_is_explained(tmp_path: Path, matrix_stack: MatrixStack) -> None:
    user = "admin-" + secrets.token_hex(3)
    StandaloneContext(deployment_dir=tmp_path / "a").run(
        Bootstrap(), _inputs(matrix_stack, user, default_rooms=[]))
    # Another operator's machine: no stored password, same admin name.
    with pytest.raises(ActionFailed) as e:
        StandaloneContext(deployment_dir=tmp_path / "b").run(
            Bootstrap(), _inputs(matrix_stack, user, default_rooms=[]))
    assert "stored password does not log in" in e.value.message
    assert e.value.fix and ADMIN_PASSWORD_SECRET in e.value.fix


def test_first_run_without_shared_secret_fails_clearly(tmp_path: Path,
                                                       matrix_stack: MatrixStack) -> None:
    ctx = StandaloneContext(deployment_dir=tmp_path)
    with pytest.raises(ActionFailed) as e:
        ctx.run(Bootstrap(), _inputs(matrix_stack, "admin-" + secrets.token_hex(3),
                                     registration_shared_secret=""))
    assert "registration_shared_secret" in (e.value.fix or "")


def test_wrong_shared_secret_and_unreachable_admin_api(tmp_path: Path,
                                                       matrix_stack: MatrixStack) -> None:
    from tests.support.services import LOOPBACK, free_port

    with pytest.raises(ActionFailed) as e:
        StandaloneContext(deployment_dir=tmp_path / "a").run(Bootstrap(), _inputs(
            matrix_stack, "admin-" + secrets.token_hex(3),
            registration_shared_secret="wrong-wrong-wrong"))
    assert "admin credentials" in (e.value.diagnosis or "")
    with pytest.raises(ActionFailed) as e:
        StandaloneContext(deployment_dir=tmp_path / "b").run(Bootstrap(), _inputs(
            matrix_stack, "admin", admin_url=f"http://{LOOPBACK}:{free_port()}"))
    assert "SSH port forward" in (e.value.fix or "") + (e.value.diagnosis or "")
