"""Matrix client-server and Synapse admin calls over httpx, where matrix-nio has no call.

nio has no admin API, hides registration errors (``register_with_token`` reports a bad
token as "unknown error") and retries connection errors forever by default. These helpers
make one request each, with the timeout of the ``httpx.AsyncClient`` they are given, and
raise :class:`MatrixHTTPError` with the status, errcode and the kind of body (JSON from
Synapse or HTML from nginx) so a caller can say *why* it failed.

Imported only from inside an action's ``apply``/``check`` (keeps ``elematrix --help`` fast).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httpx


class MatrixHTTPError(Exception):
    """A Matrix call answered with something other than success."""

    def __init__(self, method: str, url: str, status: int, body: str, content_type: str,
                 server: str = "", location: str = "") -> None:
        self.method = method
        self.url = url
        self.status = status
        self.body = body
        self.content_type = content_type
        self.server = server
        self.location = location
        self.json: dict[str, Any] | None = None
        if "json" in content_type or body.lstrip().startswith("{"):
            try:
                parsed = json.loads(body)
                self.json = parsed if isinstance(parsed, dict) else None
            except ValueError:
                self.json = None
        super().__init__(self.summary())

    @property
    def errcode(self) -> str:
        return str((self.json or {}).get("errcode", ""))

    @property
    def error(self) -> str:
        return str((self.json or {}).get("error", ""))

    @property
    def is_html(self) -> bool:
        """An HTML page (nginx's own error pages) instead of Synapse's JSON."""
        return self.json is None and ("html" in self.content_type
                                      or "<html" in self.body[:500].lower())

    @property
    def retry_after_ms(self) -> int:
        return int((self.json or {}).get("retry_after_ms", 0) or 0)

    def summary(self) -> str:
        """One line: method, path, status and what the server said (no secrets in URLs)."""
        path = urllib.parse.urlsplit(self.url).path
        if self.json is not None:
            what = f"{self.errcode} {self.error}".strip()
        elif self.is_html:
            what = "HTML page" + (f" from {self.server}" if self.server else "")
        else:
            what = self.body[:120].strip()
        loc = f" -> {self.location}" if self.location else ""
        return f"{self.method} {path}: HTTP {self.status}{loc} {what}".strip()


def q(part: str) -> str:
    """Percent-encode one path segment (user ids, room ids, aliases: '@', ':', '#', '!')."""
    return urllib.parse.quote(part, safe="")


# The deadline (time.monotonic()) within which a 429 may still be waited out. The gate
# sets it for its whole run (tasks inherit it); unset, a fixed cap of ``retry_429`` holds.
RETRY_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "elematrix_matrix_retry_deadline", default=None)
# Seconds kept back from the deadline for the request after the wait.
RETRY_MARGIN = 1.0


class RateLimited(MatrixHTTPError):
    """Synapse's M_LIMIT_EXCEEDED asked for a wait that does not fit the time left."""

    def __init__(self, err: MatrixHTTPError, wait: float, left: float) -> None:
        super().__init__(err.method, err.url, err.status, err.body, err.content_type,
                         err.server, err.location)
        self.wait = wait
        self.left = left


async def call(http: httpx.AsyncClient, method: str, url: str, *, token: str | None = None,
               json_body: Any = None, content: bytes | None = None,
               headers: dict[str, str] | None = None, ok: tuple[int, ...] = (200,),
               retry_429: float = 10.0) -> httpx.Response:
    """One request; raises MatrixHTTPError unless the status is in ``ok``.

    A 429 (M_LIMIT_EXCEEDED) is retried after the server's ``retry_after_ms``: within
    :data:`RETRY_DEADLINE` when one is set (the gate's budget), else as long as the total
    wait stays under ``retry_429`` seconds. A wait that does not fit raises
    :class:`RateLimited` (how long Synapse asked for, how long was left).
    """
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    waited = 0.0
    while True:
        r = await http.request(method, url, json=json_body, content=content, headers=hdrs)
        if r.status_code in ok:
            return r
        err = MatrixHTTPError(method, url, r.status_code, r.text,
                              r.headers.get("content-type", ""), r.headers.get("server", ""),
                              r.headers.get("location", ""))
        if r.status_code == 429:
            wait = rate_limit_wait(err, r.headers.get("retry-after"))
            deadline = RETRY_DEADLINE.get()
            if deadline is not None:
                left = deadline - time.monotonic() - RETRY_MARGIN
                fits = wait <= left
            else:
                left = retry_429 - waited
                fits = waited + wait <= retry_429
            if not fits:
                raise RateLimited(err, wait, max(left, 0.0))
            await asyncio.sleep(wait)
            waited += wait
            continue
        raise err


def rate_limit_wait(err: MatrixHTTPError, retry_after_header: str | None = None) -> float:
    """Seconds to wait after a 429: ``retry_after_ms`` (Matrix), else the HTTP
    ``Retry-After`` header, else 0.2 s."""
    if err.retry_after_ms > 0:
        return err.retry_after_ms / 1000
    if retry_after_header and retry_after_header.strip().isdigit():
        return float(retry_after_header.strip())
    return 0.2


def registration_mac(secret: str, nonce: str, user: str, password: str, admin: bool) -> str:
    """HMAC-SHA1 of nonce\\0user\\0password\\0admin|notadmin, as Synapse's admin API wants."""
    msg = "\x00".join((nonce, user, password, "admin" if admin else "notadmin"))
    mac = hmac.new(secret.encode(), msg.encode(), digestmod=hashlib.sha1)
    return mac.hexdigest()


@dataclass
class Session:
    """A logged-in device: what register and login return."""

    user_id: str
    access_token: str
    device_id: str


async def register_shared_secret(http: httpx.AsyncClient, admin_url: str, secret: str,
                                 username: str, password: str, admin: bool) -> Session:
    """Create a user through ``/_synapse/admin/v1/register`` (no admin token needed)."""
    url = admin_url.rstrip("/") + "/_synapse/admin/v1/register"
    nonce = (await call(http, "GET", url)).json()["nonce"]
    body = {"nonce": nonce, "username": username, "password": password, "admin": admin,
            "mac": registration_mac(secret, nonce, username, password, admin)}
    d = (await call(http, "POST", url, json_body=body)).json()
    return Session(d["user_id"], d["access_token"], d.get("device_id", ""))


async def login(http: httpx.AsyncClient, url: str, user: str, password: str,
                device_name: str = "elematrix") -> Session:
    """Password login (``m.login.password``) on the client API at ``url``."""
    body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
            "password": password, "initial_device_display_name": device_name}
    d = (await call(http, "POST", url.rstrip("/") + "/_matrix/client/v3/login",
                    json_body=body)).json()
    return Session(d["user_id"], d["access_token"], d["device_id"])


async def whoami(http: httpx.AsyncClient, url: str, token: str) -> str:
    """The user id an access token belongs to (raises on an invalid token)."""
    r = await call(http, "GET", url.rstrip("/") + "/_matrix/client/v3/account/whoami",
                   token=token)
    return str(r.json()["user_id"])


async def is_admin(http: httpx.AsyncClient, admin_url: str, token: str, user_id: str) -> bool:
    """True when ``user_id`` is a server admin (the token must be an admin's)."""
    r = await call(http, "GET", admin_url.rstrip("/")
                   + f"/_synapse/admin/v1/users/{q(user_id)}/admin", token=token)
    return bool(r.json().get("admin"))


async def register_with_token(http: httpx.AsyncClient, base_url: str, username: str,
                              password: str, reg_token: str,
                              device_name: str = "elematrix-check") -> Session:
    """Register through the client API with a registration token.

    The user-interactive auth flow: a first POST learns the session and flows, then the
    ``m.login.registration_token`` stage, then ``m.login.dummy``. Every error surfaces as
    MatrixHTTPError with Synapse's errcode (nio would say "unknown error").
    """
    url = base_url.rstrip("/") + "/_matrix/client/v3/register"
    body: dict[str, Any] = {"username": username, "password": password,
                            "initial_device_display_name": device_name,
                            "inhibit_login": False}
    r = await call(http, "POST", url, json_body=body, ok=(200, 401))
    for stage in ("m.login.registration_token", "m.login.dummy"):
        if r.status_code == 200:
            break
        uia = r.json()
        if stage in uia.get("completed", []):
            continue
        flows = [f.get("stages", []) for f in uia.get("flows", [])]
        if not any(stage in f for f in flows):
            raise MatrixHTTPError("POST", url, 401, json.dumps(
                {"errcode": "M_UNKNOWN",
                 "error": f"server offers no registration flow with {stage}: {flows}"}),
                "application/json")
        auth: dict[str, Any] = {"type": stage, "session": uia["session"]}
        if stage == "m.login.registration_token":
            auth["token"] = reg_token
        r = await call(http, "POST", url, json_body={**body, "auth": auth}, ok=(200, 401))
        if r.status_code == 401 and r.json().get("errcode"):
            # A 401 with an errcode is a refusal (bad token), not the next UIA step.
            raise MatrixHTTPError("POST", url, 401, r.text,
                                  r.headers.get("content-type", ""))
    if r.status_code != 200:
        raise MatrixHTTPError("POST", url, r.status_code, r.text,
                              r.headers.get("content-type", ""))
    d = r.json()
    return Session(d["user_id"], d["access_token"], d["device_id"])


@dataclass
class RegistrationToken:
    token: str
    uses_allowed: int | None
    pending: int
    completed: int
    expiry_time: int | None  # ms since the epoch

    @property
    def usable(self) -> bool:
        """Still accepts at least one registration."""
        if self.expiry_time is not None and self.expiry_time <= time.time() * 1000:
            return False
        return self.uses_allowed is None or self.pending + self.completed < self.uses_allowed


def _token(d: dict[str, Any]) -> RegistrationToken:
    return RegistrationToken(d["token"], d.get("uses_allowed"), int(d.get("pending", 0)),
                             int(d.get("completed", 0)), d.get("expiry_time"))


async def create_registration_token(http: httpx.AsyncClient, admin_url: str, token: str,
                                    uses_allowed: int | None,
                                    expiry_ms: int | None) -> RegistrationToken:
    """A new registration token (Synapse generates the value)."""
    body: dict[str, Any] = {"length": 32}
    if uses_allowed is not None:
        body["uses_allowed"] = uses_allowed
    if expiry_ms is not None:
        body["expiry_time"] = expiry_ms
    r = await call(http, "POST", admin_url.rstrip("/")
                   + "/_synapse/admin/v1/registration_tokens/new", token=token,
                   json_body=body)
    return _token(r.json())


async def get_registration_token(http: httpx.AsyncClient, admin_url: str, token: str,
                                 value: str) -> RegistrationToken | None:
    """A registration token's state, or None when the server does not know it."""
    try:
        r = await call(http, "GET", admin_url.rstrip("/")
                       + f"/_synapse/admin/v1/registration_tokens/{q(value)}", token=token)
    except MatrixHTTPError as e:
        if e.status == 404:
            return None
        raise
    return _token(r.json())


async def delete_registration_token(http: httpx.AsyncClient, admin_url: str, token: str,
                                    value: str) -> None:
    await call(http, "DELETE", admin_url.rstrip("/")
               + f"/_synapse/admin/v1/registration_tokens/{q(value)}", token=token,
               ok=(200, 404))


async def list_devices(http: httpx.AsyncClient, admin_url: str, token: str,
                       user_id: str) -> list[str]:
    r = await call(http, "GET", admin_url.rstrip("/")
                   + f"/_synapse/admin/v2/users/{q(user_id)}/devices", token=token)
    return [str(d["device_id"]) for d in r.json().get("devices", [])]


async def delete_devices(http: httpx.AsyncClient, admin_url: str, token: str, user_id: str,
                         devices: list[str]) -> None:
    await call(http, "POST", admin_url.rstrip("/")
               + f"/_synapse/admin/v2/users/{q(user_id)}/delete_devices", token=token,
               json_body={"devices": devices})


async def deactivate(http: httpx.AsyncClient, admin_url: str, token: str,
                     user_id: str) -> None:
    """Deactivate and erase a user (their tokens and devices go with them)."""
    await call(http, "POST", admin_url.rstrip("/")
               + f"/_synapse/admin/v1/deactivate/{q(user_id)}", token=token,
               json_body={"erase": True})


async def login_as(http: httpx.AsyncClient, admin_url: str, token: str, user_id: str) -> str:
    """An access token for ``user_id`` with no device and no keys (admin "login as user")."""
    r = await call(http, "POST", admin_url.rstrip("/")
                   + f"/_synapse/admin/v1/users/{q(user_id)}/login", token=token,
                   json_body={})
    return str(r.json()["access_token"])


async def resolve_alias(http: httpx.AsyncClient, url: str, alias: str) -> str | None:
    """The room id of ``#alias:server``, or None when the alias is unknown."""
    try:
        r = await call(http, "GET", url.rstrip("/")
                       + f"/_matrix/client/v3/directory/room/{q(alias)}")
    except MatrixHTTPError as e:
        if e.status == 404 and e.errcode == "M_NOT_FOUND":
            return None
        raise
    return str(r.json()["room_id"])


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
