"""http.check against a real nginx: 200, redirects, headers, JSON, retries and diagnoses."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from elematrix_tui.actions.http import _MISSING, HttpCheck, json_path
from elematrix_tui.engine.action import ActionFailed
from elematrix_tui.engine.standalone import StandaloneContext
from tests.support.services import free_port


def _fail(ctx: StandaloneContext, inputs: dict[str, Any]) -> ActionFailed:
    with pytest.raises(ActionFailed) as e:
        ctx.run(HttpCheck(), inputs)
    return e.value


def test_200_not_a_redirect_with_header(nginx: dict[str, Any], ctx: StandaloneContext) -> None:
    r = ctx.run(HttpCheck(), {"url": nginx["base"] + "/", "no_redirect": True,
                              "header_present": ["X-Frame-Options"],
                              "header_absent": ["Strict-Transport-Security"],
                              "body_contains": "element"})
    assert r.status == "ok"
    assert r.outputs["status_code"] == 200
    assert r.outputs["headers"]["x-frame-options"] == "SAMEORIGIN"
    assert r.outputs["attempts"] == 1


def test_https_redirect_is_reported_with_location(nginx: dict[str, Any],
                                                  ctx: StandaloneContext) -> None:
    e = _fail(ctx, {"url": nginx["base"] + "/to-https", "no_redirect": True})
    assert "301 redirect to https://matrix.example.test/" in e.message
    assert "HTTPS redirect is left in the nginx config" in (e.diagnosis or "")
    assert "Remove the redirect" in (e.fix or "")
    # Expecting 200 without no_redirect says the same; expecting the 301 passes.
    e = _fail(ctx, {"url": nginx["base"] + "/to-https"})
    assert "status 301 (redirect to https://matrix.example.test/), expected 200" in e.message
    r = ctx.run(HttpCheck(), {"url": nginx["base"] + "/to-https", "status": 301})
    assert r.outputs["location"] == "https://matrix.example.test/"


def test_relative_redirect_not_followed(nginx: dict[str, Any], ctx: StandaloneContext) -> None:
    e = _fail(ctx, {"url": nginx["base"] + "/elsewhere", "no_redirect": True})
    assert "302 redirect to" in e.message
    assert "HTTPS" not in (e.diagnosis or "")


def test_hsts_over_http_is_explained(nginx: dict[str, Any], ctx: StandaloneContext) -> None:
    e = _fail(ctx, {"url": nginx["base"] + "/hsts",
                    "header_absent": ["Strict-Transport-Security"]})
    assert "header Strict-Transport-Security present" in e.message
    assert "HSTS over plain HTTP" in (e.diagnosis or "")
    e = _fail(ctx, {"url": nginx["base"] + "/", "header_present": ["X-Missing"]})
    assert "header X-Missing missing" in e.message


def test_json_fields(nginx: dict[str, Any], ctx: StandaloneContext) -> None:
    r = ctx.run(HttpCheck(), {"url": nginx["base"] + "/_matrix/client/versions", "json": True})
    assert r.outputs["json"]["versions"][0] == "r0.6.1"
    ctx.run(HttpCheck(), {"url": nginx["base"] + "/_matrix/client/versions",
                          "json": {"versions.1": "v1.11", "unstable_features.x": True,
                                   "versions.0": "re:^r0\\."}})
    ctx.run(HttpCheck(), {"url": nginx["base"] + "/.well-known/matrix/client",
                          "json": {"m.homeserver.base_url": "http://matrix.example.test"},
                          "header_present": ["Access-Control-Allow-Origin"]})
    e = _fail(ctx, {"url": nginx["base"] + "/.well-known/matrix/client",
                    "json": {"m.homeserver.base_url": "http://other", "m.identity_server": 1}})
    assert "JSON m.homeserver.base_url is 'http://matrix.example.test', expected 'http://other'" \
        in e.message
    assert "JSON m.identity_server is missing" in e.message
    e = _fail(ctx, {"url": nginx["base"] + "/", "json": True})
    assert "not JSON" in e.message
    assert "HTML page" in (e.diagnosis or "")


def test_encoded_probe_m_unrecognized(nginx: dict[str, Any], ctx: StandaloneContext) -> None:
    url = nginx["base"] + "/_matrix/client/v3/directory/room/%23probe%2Fx%3Aexample.test"
    e = _fail(ctx, {"url": url, "status": 404, "json": {"errcode": "M_NOT_FOUND"}})
    assert "M_UNRECOGNIZED" in e.message
    assert "proxy_pass" in (e.diagnosis or "") and "no path" in (e.fix or "")


def test_413_explains_client_max_body_size(nginx: dict[str, Any],
                                           ctx: StandaloneContext) -> None:
    url = nginx["base"] + "/_matrix/media/v3/upload"
    ctx.run(HttpCheck(), {"url": url, "method": "post", "body_bytes": 100})
    e = _fail(ctx, {"url": url, "method": "POST", "body_bytes": 4096})
    assert "status 413" in e.message
    assert "client_max_body_size" in (e.diagnosis or "")


def test_502_explained(nginx: dict[str, Any], ctx: StandaloneContext) -> None:
    e = _fail(ctx, {"url": nginx["base"] + "/_matrix/bad-gateway"})
    assert "status 502" in e.message and "upstream" in (e.diagnosis or "")


def test_connection_refused_explained(ctx: StandaloneContext) -> None:
    e = _fail(ctx, {"url": f"http://127.0.0.1:{free_port()}/", "timeout": 2})
    assert "connection refused" in e.message
    assert "nginx" in (e.diagnosis or "") and "security group" in (e.fix or "")


def test_retries_until_deadline_with_progress(nginx: dict[str, Any],
                                              ctx: StandaloneContext) -> None:
    later = Path(nginx["root"]) / "later.json"
    later.unlink(missing_ok=True)
    threading.Timer(0.7, later.write_text, args=('{"ready": true}',)).start()
    start = time.monotonic()
    r = ctx.run(HttpCheck(), {"url": nginx["base"] + "/later.json", "json": {"ready": True},
                              "deadline": 10, "interval": 0.2})
    assert r.outputs["attempts"] >= 3
    assert time.monotonic() - start < 5
    assert ctx.progress_reports and "attempt 1 failed" in ctx.progress_reports[0]
    assert "s of 10s" in ctx.progress_reports[0]


def test_deadline_gives_up_with_last_answer(nginx: dict[str, Any],
                                            ctx: StandaloneContext) -> None:
    start = time.monotonic()
    e = _fail(ctx, {"url": nginx["base"] + "/missing-forever", "deadline": 0.8, "interval": 0.2})
    assert 0.7 < time.monotonic() - start < 3
    assert "status 404" in e.message
    assert "Last answer: HTTP 404" in (e.diagnosis or "")
    assert "attempts" in (e.diagnosis or "")


def test_cancel_stops_retrying(nginx: dict[str, Any], ctx: StandaloneContext) -> None:
    threading.Timer(0.3, ctx.cancel.set).start()
    start = time.monotonic()
    _fail(ctx, {"url": nginx["base"] + "/missing-forever", "deadline": 30, "interval": 5})
    assert time.monotonic() - start < 2


def test_json_path() -> None:
    doc = {"m.homeserver": {"base_url": "x"}, "a": {"b": [1, {"c": 2}]}}
    assert json_path(doc, "m.homeserver.base_url") == "x"
    assert json_path(doc, "a.b.1.c") == 2
    assert json_path(doc, "a.b.-2") == 1
    assert json_path(doc, "a.z") is _MISSING
    assert json_path(doc, "a.b.5") is _MISSING


def test_inputs_validated() -> None:
    with pytest.raises(ValueError):
        HttpCheck.Inputs.model_validate({"url": "ftp://x"})
    with pytest.raises(ValueError):
        HttpCheck.Inputs.model_validate({"url": "http://x", "jsn": True})
