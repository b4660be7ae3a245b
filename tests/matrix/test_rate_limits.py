"""The gate against Synapse's own rate limits (no rc_* overrides), issue 12.

Every other test stack sets the rc_* limits to 1000/s. Here Synapse keeps its defaults
(rc_registration: 0.17/s, burst 3, per address): two gate runs back to back register four
users from one address within seconds, so Synapse answers 429 M_LIMIT_EXCEEDED with a
``retry_after_ms`` that the gate must wait out within its budget - and fail clearly
when the wait does not fit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from elematrix_tui.engine.action import ActionFailed, Result
from tests.support.services import MatrixStack, StackSettings

from .conftest import checks, require_stack, run_validate

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def default_limits_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MatrixStack]:
    require_stack()
    stack = MatrixStack(tmp_path_factory.mktemp("rc-defaults"),
                        StackSettings(synapse_default_rate_limits=True))
    stack.start()
    try:
        hs = stack.files.homeserver if stack.files else {}
        assert not any(k.startswith("rc_") for k in hs), "rc_* overrides must be absent"
        yield stack
    finally:
        stack.stop()


def test_full_validation_with_synapse_default_rate_limits(
        tmp_path: Path, default_limits_stack: MatrixStack) -> None:
    res, ctx = run_validate(tmp_path / "1", default_limits_stack, max_upload_size_mb=4)
    assert isinstance(res, Result), getattr(res, "diagnosis", res)
    assert set(res.outputs["checks"].values()) == {"passed"}


def _exhaust_registration(stack: MatrixStack) -> float:
    """Register users from this address until Synapse's rc_registration answers 429.

    Returns the retry_after_ms it named, in seconds. Bounded: at most 12 registrations."""
    import asyncio
    import secrets

    import httpx

    from elematrix_tui.actions import matrix_http as mh

    async def go() -> float:
        async with httpx.AsyncClient(timeout=10) as http:
            admin = await mh.register_shared_secret(
                http, stack.admin_url, stack.registration_shared_secret,
                "rc-admin-" + secrets.token_hex(4), secrets.token_hex(12), admin=True)
            tok = await mh.create_registration_token(http, stack.admin_url,
                                                     admin.access_token, 20, None)
            url = stack.base_url + "/_matrix/client/v3/register"
            for _ in range(12):
                # The UIA flow by hand (no retries): token stage, then dummy.
                body = {"username": "rc-" + secrets.token_hex(4),
                        "password": secrets.token_hex(12)}
                r = await http.post(url, json=body)
                for auth in ({"type": "m.login.registration_token", "token": tok.token},
                             {"type": "m.login.dummy"}):
                    if r.status_code != 401:
                        break
                    auth["session"] = r.json()["session"]
                    r = await http.post(url, json={**body, "auth": auth})
                if r.status_code == 429:
                    assert r.json()["errcode"] == "M_LIMIT_EXCEEDED"
                    return float(r.json()["retry_after_ms"]) / 1000
                assert r.status_code == 200, r.text
            raise AssertionError("Synapse never rate-limited 12 registrations")

    return asyncio.run(go())


def test_gate_waits_out_retry_after_when_the_bucket_is_empty(
        tmp_path: Path, default_limits_stack: MatrixStack) -> None:
    """With the registration bucket empty, both gate users wait retry_after_ms and pass."""
    wait = _exhaust_registration(default_limits_stack)
    assert 1 < wait < 30, wait
    t0 = time.monotonic()
    res, ctx = run_validate(tmp_path, default_limits_stack, max_upload_size_mb=4,
                            total_timeout=120)
    took = time.monotonic() - t0
    assert isinstance(res, Result), (getattr(res, "diagnosis", res),
                                     checks(ctx).get("registration"))
    print(f"gate after an exhausted rc_registration: {took:.1f} s (retry_after {wait:.1f} s)")


def test_a_wait_beyond_the_budget_fails_clearly(tmp_path: Path,
                                                default_limits_stack: MatrixStack) -> None:
    """Synapse asks for longer than the gate has left: ``rate_limited`` naming the wait,
    at once (before: a fixed 10 s of waiting cut off as an unexplained ``timeout``)."""
    wait = _exhaust_registration(default_limits_stack)
    res, ctx = run_validate(tmp_path, default_limits_stack, max_upload_size_mb=4,
                            total_timeout=max(wait - 1.5, 2.5))
    assert isinstance(res, ActionFailed)
    reg = checks(ctx)["registration"]
    assert reg["cause"] == "rate_limited", reg
    text = "\n".join(reg["details"])
    assert "M_LIMIT_EXCEEDED" in text and "retry_after_ms" in text
    assert "rate-limited" in reg["diagnosis"] and "total_timeout" in reg["fix"]


def test_back_to_back_runs_wait_out_retry_after(tmp_path: Path,
                                                default_limits_stack: MatrixStack) -> None:
    """Runs 2 and 3 hit rc_registration: the gate waits retry_after_ms and passes."""
    waits = []
    for i in range(2, 4):
        t0 = time.monotonic()
        res, ctx = run_validate(tmp_path / str(i), default_limits_stack,
                                max_upload_size_mb=4, total_timeout=120)
        waits.append(round(time.monotonic() - t0, 1))
        assert isinstance(res, Result), (i, getattr(res, "diagnosis", res),
                                         checks(ctx).get("registration"))
    print(f"back-to-back gate runs on Synapse's defaults: {waits} s")
