"""Uploads and downloads of media as streams (``matrix.validate``'s media check): chunked
so httpx's per-write timeout bounds each chunk, hashed on the way, and an over-limit
upload sent with ``Expect: 100-continue`` so nginx can refuse it before the body.

Imported only from inside an action's ``apply`` (httpx loads lazily).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httpx

from .matrix_http import MatrixHTTPError

# Chunk of a streamed body. httpx applies its write timeout to each write, so a body sent
# in chunks is bounded per chunk (a slow uplink keeps going) and not as a whole: one
# 50 MiB ``content=`` under a 10 s timeout fails on any uplink under ~42 Mbit/s.
STREAM_CHUNK = 64 * 1024


@dataclass
class Transfer:
    """What one upload or download did, wherever it ran (this machine or the host)."""

    status: int          # 0: the server closed the connection before answering
    body: str            # the response body (uploads; errors), at most a few KiB
    content_type: str
    sha256: str          # of the bytes sent (upload) or received (download)
    size: int
    seconds: float
    error: str = ""      # the transport error when status is 0

    def http_error(self, method: str, url: str) -> MatrixHTTPError:
        return MatrixHTTPError(method, url, self.status, self.body, self.content_type)


async def upload_stream(http: httpx.AsyncClient, url: str, token: str, size: int
                        ) -> Transfer:
    """POST ``size`` random bytes as a streamed body with a Content-Length.

    Synapse wants the Content-Length (and nginx refuses an over-limit one before reading
    the body); the body goes in :data:`STREAM_CHUNK` pieces. A connection the server
    closes early (nginx refusing an over-limit upload) is ``status == 0``, not an error.
    """
    digest = hashlib.sha256()

    async def body() -> Any:
        left = size
        while left > 0:
            chunk = secrets.token_bytes(min(STREAM_CHUNK, left))
            digest.update(chunk)
            left -= len(chunk)
            yield chunk

    hdrs = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream",
            "Content-Length": str(size)}
    t0 = time.monotonic()
    try:
        r = await http.request("POST", url, content=body(), headers=hdrs)
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError) as e:
        return Transfer(0, "", "", digest.hexdigest(), size, time.monotonic() - t0,
                        f"{type(e).__name__}: {e}")
    return Transfer(r.status_code, r.text[:8192], r.headers.get("content-type", ""),
                    digest.hexdigest(), size, time.monotonic() - t0)


async def download_stream(http: httpx.AsyncClient, url: str, token: str) -> Transfer:
    """GET ``url`` streaming, hashing what arrives (nothing big is held in memory)."""
    digest = hashlib.sha256()
    size = 0
    t0 = time.monotonic()
    async with http.stream("GET", url, headers={"Authorization": f"Bearer {token}"}) as r:
        if r.status_code != 200:
            text = (await r.aread())[:8192].decode(errors="replace")
            return Transfer(r.status_code, text, r.headers.get("content-type", ""), "", 0,
                            time.monotonic() - t0)
        async for chunk in r.aiter_bytes():
            digest.update(chunk)
            size += len(chunk)
    return Transfer(200, "", r.headers.get("content-type", ""), digest.hexdigest(), size,
                    time.monotonic() - t0)


async def upload_expect_continue(url: str, token: str, size: int, timeout: float
                                 ) -> Transfer:
    """POST ``size`` random bytes with ``Expect: 100-continue`` (RFC 9110 10.1.1).

    For the upload just over the limit: nginx checks the Content-Length against
    ``client_max_body_size`` as soon as it has the headers and answers 413 without
    asking for the body, so nothing is sent. (Sent blindly, the body keeps flowing
    through nginx's lingering close, up to 30 s of the operator's uplink.) On ``100
    Continue`` - or no interim answer within ``timeout``, as from a server that ignores
    Expect - the body is sent and the final answer read. httpx cannot do this, so it is
    a plain HTTP/1.1 exchange; direct connections only (the caller uses
    :func:`upload_stream` when a proxy is in the way).
    """
    import ssl

    u = urllib.parse.urlsplit(url)
    host = u.hostname or ""
    port = u.port or (443 if u.scheme == "https" else 80)
    target = u.path + (f"?{u.query}" if u.query else "")
    t0 = time.monotonic()
    digest = hashlib.sha256()
    sslctx = ssl.create_default_context() if u.scheme == "https" else None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=sslctx), timeout)
    try:
        netloc = u.netloc.rsplit("@", 1)[-1]
        head = (f"POST {target} HTTP/1.1\r\nHost: {netloc}\r\n"
                f"Authorization: Bearer {token}\r\n"
                "Content-Type: application/octet-stream\r\n"
                f"Content-Length: {size}\r\nExpect: 100-continue\r\n"
                "User-Agent: elematrix-validate\r\nConnection: close\r\n\r\n")
        writer.write(head.encode())
        await writer.drain()
        status, body = 0, b""
        headers: dict[str, str] = {}
        try:
            status, headers = await asyncio.wait_for(_read_head(reader), timeout)
        except TimeoutError:
            status = 100  # no interim answer: send the body (RFC 9110 10.1.1)
        if status == 100:
            left = size
            try:
                while left > 0:
                    chunk = secrets.token_bytes(min(STREAM_CHUNK, left))
                    digest.update(chunk)
                    writer.write(chunk)
                    await asyncio.wait_for(writer.drain(), timeout)
                    left -= len(chunk)
                status, headers = await asyncio.wait_for(_read_head(reader), timeout)
                while status == 100:
                    status, headers = await asyncio.wait_for(_read_head(reader), timeout)
            except (ConnectionError, asyncio.IncompleteReadError) as e:
                return Transfer(0, "", "", digest.hexdigest(), size,
                                time.monotonic() - t0, f"{type(e).__name__}: {e}")
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            if "content-length" in headers:
                length = min(int(headers["content-length"] or 0), 8192)
                body = await asyncio.wait_for(reader.readexactly(length), timeout)
            else:  # chunked or close-delimited ("Connection: close" was asked for)
                body = await asyncio.wait_for(reader.read(65536), timeout)
                if "chunked" in headers.get("transfer-encoding", "").lower():
                    body = _dechunk(body)
        return Transfer(status, body.decode(errors="replace"),
                        headers.get("content-type", ""), digest.hexdigest(), size,
                        time.monotonic() - t0)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """One response's status line and headers (lower-case names)."""
    line = (await reader.readuntil(b"\r\n")).decode("latin-1")
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP response: {line.strip()[:80]!r}")
    headers: dict[str, str] = {}
    while True:
        h = (await reader.readuntil(b"\r\n")).decode("latin-1")
        if h == "\r\n":
            return int(parts[1]), headers
        name, _, value = h.partition(":")
        headers[name.strip().lower()] = value.strip()


def _dechunk(data: bytes) -> bytes:
    """The payload of a (possibly truncated) chunked body."""
    out, rest = b"", data
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        try:
            n = int(size_line.split(b";")[0].strip() or b"0", 16)
        except ValueError:
            break
        if not sep or n == 0:
            break
        out += rest[:n]
        rest = rest[n + 2:]
    return out
