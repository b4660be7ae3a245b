"""Pure parts of the matrix actions: no services needed."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys

import httpx
import pytest

from elematrix_tui.actions import matrix_http as mh
from elematrix_tui.actions.matrix import BootstrapInputs, RoomSpec, ValidateInputs
from elematrix_tui.actions.matrix_checks import (
    CHECK_NAMES,
    DIAGNOSES,
    classify,
    element_e2ee_warning,
    norm_url,
)


def test_registration_mac_matches_synapse_docs() -> None:
    # Synapse's documented algorithm: HMAC-SHA1 over nonce\0user\0password\0admin.
    want = hmac.new(b"s3cret", b"n\x00alice\x00pw\x00admin", hashlib.sha1).hexdigest()
    assert mh.registration_mac("s3cret", "n", "alice", "pw", True) == want
    want = hmac.new(b"s3cret", b"n\x00bob\x00admin\x00notadmin", hashlib.sha1).hexdigest()
    assert mh.registration_mac("s3cret", "n", "bob", "admin", False) == want


def _err(status: int, body: object, ctype: str = "application/json",
         location: str = "") -> mh.MatrixHTTPError:
    text = body if isinstance(body, str) else json.dumps(body)
    return mh.MatrixHTTPError("GET", "http://h/_matrix/x", status, text, ctype, "nginx",
                              location)


@pytest.mark.parametrize(("exc", "via", "cause"), [
    (_err(301, "<html>301</html>", "text/html", "https://h/"), "public", "https_redirect"),
    (httpx.TooManyRedirects("loop"), "public", "https_redirect"),
    (_err(404, {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}), "public",
     "proxy_path"),
    (_err(404, "<html><title>404 - No Such Resource</title></html>", "text/html"), "public",
     "proxy_path"),
    (_err(404, "<html><center>nginx</center></html>", "text/html"), "public", "not_proxied"),
    (_err(413, "<html><title>413 Request Entity Too Large</title></html>", "text/html"),
     "public", "body_size"),
    (_err(403, {"errcode": "M_FORBIDDEN", "error": "Registration has been disabled"}),
     "public", "registration_disabled"),
    (httpx.ConnectError("refused"), "public", "unreachable"),
    (httpx.ConnectError("refused"), "admin", "admin_unreachable"),
    (_err(403, {"errcode": "M_FORBIDDEN", "error": "HMAC incorrect"}), "admin", "admin_auth"),
    (_err(502, "<html>Bad Gateway</html>", "text/html"), "public", "synapse_down"),
    (httpx.ReadTimeout("slow"), "public", "timeout"),
])
def test_classify(exc: BaseException, via: str, cause: str) -> None:
    assert classify(exc, via).cause == cause


def test_every_issue_diagnosis_is_worded_as_listed() -> None:
    wording = {
        "https_redirect": "HTTPS redirect left in nginx",
        "proxy_path": "proxy_pass with a path",
        "body_size": "client_max_body_size",
        "registration_disabled": "enable_registration",
        "plaintext": "client without E2EE store",
        "unreachable": "security group or nginx down",
    }
    for cause, phrase in wording.items():
        assert phrase in DIAGNOSES[cause].diagnosis
        assert DIAGNOSES[cause].fix
    assert CHECK_NAMES == ("discovery", "registration", "e2ee_roundtrip",
                           "encrypted_at_rest", "media", "cleanup")


def test_diagnoses_table_has_one_record_for_every_cause() -> None:
    # Cause is the type every CheckFailed is checked against (mypy); the table must have
    # exactly one record per cause, keyed by the record's own cause.
    from typing import get_args

    from elematrix_tui.actions.matrix_checks import Cause

    assert tuple(DIAGNOSES) == get_args(Cause)
    assert all(k == d.cause and d.diagnosis and d.fix for k, d in DIAGNOSES.items())


def test_norm_url() -> None:
    assert norm_url("http://Example.org:80/") == norm_url("http://example.org")
    assert norm_url("http://1.2.3.4:8080") != norm_url("http://1.2.3.4")
    assert norm_url("https://h:443/") == "https://h"


def test_element_warning_only_for_public_plain_http() -> None:
    warn = element_e2ee_warning("http://203.0.113.10")
    assert warn and "element-web#19464" in warn and "http://localhost" in warn
    assert "ssh -L" in warn
    assert element_e2ee_warning("http://ec2-1-2-3-4.compute.amazonaws.com/")
    for ok in ("https://chat.example.org", "http://localhost:8080", "http://127.0.0.1:1",
               "http://[::1]:80"):
        assert element_e2ee_warning(ok) is None, ok


def test_inputs_treat_blank_optional_secrets_as_absent() -> None:
    v = ValidateInputs.model_validate({"base_url": "http://h", "server_name": "h",
                                       "admin_url": "http://127.0.0.1:8008",
                                       "admin_token": "None", "max_upload_size_mb": "",
                                       "registration_shared_secret": None})
    assert v.admin_token is None and v.max_upload_size_mb is None
    b = BootstrapInputs.model_validate({"admin_url": "http://a", "server_name": "h",
                                        "admin_user": "@Boss:h".lower(),
                                        "default_rooms": ["Welcome Room!",
                                                          {"name": "x", "alias": "#y:h"}]})
    assert b.admin_user == "boss"
    assert [r.localpart() for r in b.rooms()] == ["welcome-room", "y"]
    assert RoomSpec(name="!!!").localpart() == "room"
    with pytest.raises(ValueError):
        BootstrapInputs.model_validate({"admin_url": "a", "server_name": "h",
                                        "admin_user": "Bad User"})


def test_matrix_module_does_not_import_sdks() -> None:
    code = ("import sys, elematrix_tui.actions.matrix; "
            "print([m for m in ('httpx', 'nio', 'aiohttp') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
