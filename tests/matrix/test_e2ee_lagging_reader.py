"""The E2EE gate against a client reader that lags behind a join, as Synapse's workers do.

With workers, ``/rooms/{id}/joined_members`` is answered by a client reader
(Synapse's docs/workers.md, "synapse.app.generic_worker"; our map: elematrix_tui/stack/
workers.py, the ``rooms/.*/joined_members$`` pattern), which learns of a join over
replication, eventually. nio's first encrypted send asks it once (matrix-nio 0.26.0,
nio/client/async_client.py:1771, ``room_send``: "if not room.members_synced"), drops the
members its answer lacks (nio/client/base_client.py:1024, ``room.remove_member``) and
shares the room key only with the rest. CI met it: ``e2ee_roundtrip`` failed with
``not_decrypted`` on the worker stack under load.

The join itself is a generic worker's too (workers.py: the ``rooms/.*/(join|…)$`` and
``join/`` patterns); one that has not had the invite over replication refuses it, 403 "You
are not invited to this room." (Synapse 1.163.2, synapse/event_auth.py:766, the invite
join rule's check), and a client asks again.

The stand-in here is stricter than the lag it copies: an HTTP hop in front of the native
Synapse answers each room's first two ``joined_members`` of each caller with the caller
alone (the membership before anyone else joined), and the first join of each room with
that 403, then forwards truthfully. The gate must not be fooled by either.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from elematrix_tui.engine.action import Result
from tests.support.services import LOOPBACK, MatrixStack

from .conftest import run_validate

pytestmark = pytest.mark.services

STALE_ANSWERS = 2


class _LaggingReader(ThreadingHTTPServer):
    upstream: str
    seen: Counter[tuple[str, str]]
    lock: threading.Lock


class _Handler(BaseHTTPRequestHandler):
    server: _LaggingReader

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _get(self, path: str) -> tuple[int, bytes]:
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() in ("authorization", "accept", "user-agent")}
        req = urllib.request.Request(self.server.upstream + path, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def do_POST(self) -> None:
        """A join: the first of each room refused as a lagging worker refuses it."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.seen[("join", self.path)] += 1
            first = self.server.seen[("join", self.path)] == 1
        if first:
            status, out = 403, json.dumps({"errcode": "M_FORBIDDEN",
                                           "error": "You are not invited to this room."}
                                          ).encode()
        else:
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() in ("authorization", "content-type")}
            req = urllib.request.Request(self.server.upstream + self.path, data=body,
                                         headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    status, out = r.status, r.read()
            except urllib.error.HTTPError as e:
                status, out = e.code, e.read()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def do_GET(self) -> None:
        status, body = self._get(self.path)
        if status == 200:
            who_status, who = self._get("/_matrix/client/v3/account/whoami")
            me = json.loads(who).get("user_id", "") if who_status == 200 else ""
            room = self.path.split("/rooms/", 1)[1].split("/", 1)[0]
            with self.server.lock:
                self.server.seen[(room, me)] += 1
                stale = self.server.seen[(room, me)] <= STALE_ANSWERS
            if stale:
                joined = json.loads(body).get("joined", {})
                body = json.dumps({"joined": {k: v for k, v in joined.items()
                                              if k == me}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def lagging_reader(matrix_stack: MatrixStack) -> Iterator[_LaggingReader]:
    srv = _LaggingReader((LOOPBACK, 0), _Handler)
    srv.upstream = f"http://{LOOPBACK}:{matrix_stack.ports.synapse}"
    srv.seen, srv.lock = Counter(), threading.Lock()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_e2ee_gate_waits_for_a_reader_that_lags_behind_the_join(
        tmp_path: Path, matrix_stack: MatrixStack, lagging_reader: _LaggingReader) -> None:
    up = f"http://{LOOPBACK}:{matrix_stack.ports.synapse}"
    lag = f"http://{LOOPBACK}:{lagging_reader.server_address[1]}"
    headers = ("proxy_set_header X-Forwarded-For $remote_addr; "
               "proxy_set_header X-Forwarded-Proto $scheme; "
               "proxy_set_header Host $host:$server_port; proxy_http_version 1.1;")
    loc = (f"location ~ ^/_matrix/client/(r0|v3)/(rooms/[^/]+/joined_members|join/.*)$ {{ "
           f"proxy_pass {lag}; {headers} }}\n"
           f"    location ~ ^(/_matrix|/_synapse/client) {{ proxy_pass {up}; {headers} }}")
    base, _ = matrix_stack.nginx_variant("laggingreader", matrix_location=loc)
    res, ctx = run_validate(tmp_path, matrix_stack, base_url=base)
    assert isinstance(res, Result), (getattr(res, "message", res), getattr(res, "diagnosis",
                                                                           None))
    assert res.outputs["passed"] is True
    # Both clients were given the stale answers, and asked again past them; B's join was
    # refused once and asked again.
    asked = [n for (room, _me), n in lagging_reader.seen.items() if room != "join"]
    assert len(asked) >= 2 and min(asked) > STALE_ANSWERS, lagging_reader.seen
    joins = [n for (kind, _path), n in lagging_reader.seen.items() if kind == "join"]
    assert joins == [2], lagging_reader.seen
