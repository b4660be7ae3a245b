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
import contextvars
import hashlib
import hmac
import json
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
