"""The federation self-check's key checks (matrix-federation-tester's KeyChecks), on key
responses signed here with a real ed25519 key; the whole check runs against the worker
stack on the engine (tests/docker/test_workers_on_engine.py)."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from elematrix_tui.actions.matrix_federation import (
    Report,
    canonical_json,
    check_keys,
    split_server_name,
)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode().rstrip("=")


def _keys(server: str = "prod.test", until_s: float = 3600) -> tuple[dict[str, Any],
                                                                    Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    body: dict[str, Any] = {"server_name": server, "old_verify_keys": {},
                            "valid_until_ts": int((time.time() + until_s) * 1000),
                            "verify_keys": {"ed25519:a_bcd": {"key": _b64(pub)}}}
    body["signatures"] = {server: {"ed25519:a_bcd": _b64(key.sign(canonical_json(body)))}}
    return body, key


def test_a_well_signed_key_response_passes_every_check() -> None:
    rep = Report()
    check_keys("prod.test", _keys()[0], rep)
    assert rep.checks == {"MatchingServerName": True, "FutureValidUntilTS": True,
                          "HasEd25519Key": True, "AllEd25519ChecksOK": True}
    assert rep.passed


def test_tampered_expired_or_foreign_keys_fail_by_name() -> None:
    body, _ = _keys()
    body["valid_until_ts"] += 1  # signed content changed: the signature no longer holds
    rep = Report()
    check_keys("prod.test", body, rep)
    assert rep.checks["AllEd25519ChecksOK"] is False and not rep.passed
    rep = Report()
    check_keys("prod.test", _keys(until_s=-60)[0], rep)
    assert rep.checks["FutureValidUntilTS"] is False
    rep = Report()
    check_keys("other.test", _keys()[0], rep)
    assert rep.checks["MatchingServerName"] is False
    # Signed by other.test, not by the name asked for: no valid signature by prod.test.
    assert rep.checks["AllEd25519ChecksOK"] is False


@pytest.mark.parametrize(("name", "want"), [("prod.test", ("prod.test", None)),
                                            ("prod.test:443", ("prod.test", 443)),
                                            ("[::1]:8448", ("[::1]", 8448))])
def test_server_names(name: str, want: tuple[str, int | None]) -> None:
    assert split_server_name(name) == want


@pytest.mark.parametrize("bad", ["", "a b", "host:99999", "https://prod.test"])
def test_bad_server_names(bad: str) -> None:
    with pytest.raises(ValueError):
        split_server_name(bad)
