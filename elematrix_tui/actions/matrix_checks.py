"""The checks of the ``matrix.validate`` gate, against a live Synapse behind nginx.

Six checks, each reported as its own gate result with its timing:

1. ``discovery``: ``/_matrix/client/versions``, an encoded-URI probe, both well-known
   files and Element's ``config.json`` through the public address.
2. ``registration``: two throwaway users register with a fresh registration token
   (``m.login.registration_token`` then ``m.login.dummy``).
3. ``e2ee_roundtrip``: an encrypted room; a random nonce from A is received by B as a
   *decrypted* ``RoomMessageText``, then B answers A the same way.
4. ``encrypted_at_rest``: the events as stored by Synapse are ``m.room.encrypted``
   (``m.megolm.v1.aes-sha2``) and a third client with no keys cannot read them.
5. ``media``: an upload just under the limit round-trips identical; one just over it is
   refused (by Synapse's ``M_TOO_LARGE``, or by nginx at the same limit).
6. ``cleanup``: the throwaway users are deactivated, their devices, the room, the media
   and the registration token removed.

Failures carry a diagnosis in the operator's terms (:data:`DIAGNOSES`), not just a status.
Every network call has a timeout: httpx's, nio's ``request_timeout`` with
``max_timeouts=0`` (nio retries connection errors forever by default), and a budget per
check enforced with ``asyncio.wait_for``.

Imported only from inside ``matrix.validate``'s ``apply`` (httpx and nio load lazily).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ..engine.action import StepContext
from . import matrix_http as mh
from .matrix_proxy import httpx_mounts, proxy_for

MEGOLM = "m.megolm.v1.aes-sha2"
MIB = 1024 * 1024
UPLOAD_PATH = "/_matrix/media/v3/upload?filename=elematrix-check.bin"
# The operator's own media round trip: small enough for any uplink (1 MiB at 1 Mbit/s:
# ~8 s), big enough to measure it.
PROBE_BYTES = 1 * MIB
# m.server in /.well-known/matrix/server: a hostname, IPv4 or [IPv6] literal, optional port.
WELL_KNOWN_SERVER_RE = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253}[A-Za-z0-9])?)(?::\d{1,5})?")

CHECKS: tuple[tuple[str, str], ...] = (
    ("discovery", "Client API, well-known files and Element's config through the public address"),
    ("registration", "Two throwaway users register with a fresh registration token"),
    ("e2ee_roundtrip", "Encrypted messages both ways, each decrypted by the other client"),
    ("encrypted_at_rest", "Synapse stores m.room.encrypted; a client without keys cannot read it"),
    ("media", "Upload just under the limit round-trips; just over it is refused"),
    ("cleanup", "Throwaway users, devices, room, media and registration token removed"),
)
CHECK_NAMES: tuple[str, ...] = tuple(n for n, _ in CHECKS)


@dataclass(frozen=True)
class Diagnosis:
    """Why a check failed, in the operator's terms, and what to do about it."""

    cause: str
    diagnosis: str
    fix: str


DIAGNOSES: dict[str, Diagnosis] = {d.cause: d for d in (
    Diagnosis(
        "https_redirect",
        "HTTPS redirect left in nginx: the public address answers with a redirect "
        "(`return 301 https://...`, or a TLS-offload redirect loop) on an HTTP-only host.",
        "Replace nginx's server blocks with the bundled single HTTP :80 server: remove "
        "`return 301 https://`, the TLS directives and any HSTS header (`elematrix doctor "
        "STACK_DIR` finds them), then reload nginx."),
    Diagnosis(
        "proxy_path",
        "proxy_pass with a path: nginx rewrites the Matrix URIs before Synapse sees them "
        "(a URI part such as `/` or `/_matrix/` after `proxy_pass http://synapse:8008`): "
        "it decodes %2F/%3A and merges `//`, which breaks signed federation requests and "
        "aliases containing '/' (a trailing `/` alone strips the prefix: everything 404s).",
        "In the `/_matrix` and `/_synapse/client` locations write `proxy_pass "
        "http://synapse:8008;` with no path at all, not even `/`, then reload nginx."),
    Diagnosis(
        "body_size",
        "nginx refused the upload with its own HTML 413: client_max_body_size is missing "
        "or below Synapse's max_upload_size (nginx's default is 1 MB).",
        "Set `client_max_body_size` in nginx's server block to Synapse's `max_upload_size` "
        "(e.g. `client_max_body_size 50M;`), then reload nginx."),
    Diagnosis(
        "registration_disabled",
        "Synapse answered \"Registration has been disabled\": enable_registration is false, "
        "which overrides registration_requires_token, so registration tokens are refused.",
        "In homeserver.yaml set `enable_registration: true` together with "
        "`registration_requires_token: true`, then restart Synapse."),
    Diagnosis(
        "plaintext",
        "A plaintext event in an encrypted room: client without E2EE store (a client "
        "without encryption support or key store sends plaintext into an encrypted room, "
        "reports success, and the server accepts it).",
        "Use a client with end-to-end encryption enabled and a key store (matrix-nio: the "
        "e2e extra and a `store_path`; Element Web only in a secure context)."),
    Diagnosis(
        "unreachable",
        "Cannot connect to the public address: security group or nginx down (TCP port "
        "closed in the security group, nginx not running, or the wrong address).",
        "Check that the security group allows TCP 80 from your address, then on the host "
        "`docker compose ps` and `docker compose logs nginx`."),
    Diagnosis(
        "synapse_down",
        "nginx answers but Synapse behind it does not (HTTP 502/503/504 from nginx).",
        "On the host: `docker compose ps synapse` and `docker compose logs synapse` "
        "(database collation, a bad homeserver.yaml and a missing signing key are the "
        "usual causes)."),
    Diagnosis(
        "not_proxied",
        "The public address does not pass /_matrix to Synapse (nginx answers itself).",
        "Add the `/_matrix` and `/_synapse/client` locations of the bundled nginx config "
        "(`proxy_pass http://synapse:8008;`), then reload nginx."),
    Diagnosis(
        "well_known",
        "/.well-known/matrix/client is missing, not JSON, or points at another base URL; "
        "or /.well-known/matrix/server is served but broken (it is optional: not serving "
        "it is fine).",
        "Serve /.well-known/matrix/client as JSON with `m.homeserver.base_url` equal to the "
        "public base URL (the bundled nginx config does), and re-render the stack. Serve "
        "/.well-known/matrix/server only for federation delegation, as JSON "
        "`{\"m.server\": \"host:port\"}`, or remove it."),
    Diagnosis(
        "element_config",
        "Element's config.json points at another homeserver or server name, so Element "
        "users would log in somewhere else.",
        "Re-render the stack: `default_server_config.m.homeserver` must have the public "
        "base URL and the server name."),
    Diagnosis(
        "server_name",
        "The homeserver's server_name is not the one given (user ids end in another name).",
        "Pass the server_name from homeserver.yaml; it cannot be changed after the first "
        "start without a new database."),
    Diagnosis(
        "admin_unreachable",
        "Synapse's admin API does not answer at admin_url (it is reachable only on the "
        "host, through an SSH port forward).",
        "Start the SSH port forward (`ssh -L 8008:localhost:8008 ec2-user@HOST`, or the "
        "runbook's ssh.forward step) and use admin_url http://127.0.0.1:8008."),
    Diagnosis(
        "admin_auth",
        "Synapse refused the admin credentials (wrong registration_shared_secret, shared-"
        "secret registration disabled, or an invalid or non-admin token).",
        "Pass the deployment's registration_shared_secret (from homeserver.yaml) or the "
        "access token of a server admin (matrix.bootstrap stores one)."),
    Diagnosis(
        "token_rejected",
        "Synapse rejected a registration token that was created a moment earlier.",
        "Check `registration_requires_token: true` in homeserver.yaml and that the admin "
        "API and the public address reach the same Synapse."),
    Diagnosis(
        "open_registration",
        "Registration is possible without a registration token: anyone can create users.",
        "Set `registration_requires_token: true` in homeserver.yaml and restart Synapse."),
    Diagnosis(
        "not_decrypted",
        "The receiving client got the event but could not decrypt it (the room key never "
        "reached its device).",
        "Check that /_matrix/client/v3/keys/* and /sendToDevice pass through nginx "
        "unchanged (proxy_pass with no path) and that clocks are right; then re-run."),
    Diagnosis(
        "not_received",
        "The message never arrived at the other client within the time limit.",
        "Check Synapse's logs for errors and that nginx does not buffer or time out "
        "long-polling /sync requests (`proxy_read_timeout`)."),
    Diagnosis(
        "media_limit",
        "Synapse's upload limit is not the one the deployment expects.",
        "Set `max_upload_size` in homeserver.yaml and `client_max_body_size` in nginx to "
        "the same value as the max_upload_size_mb parameter."),
    Diagnosis(
        "media_corrupt",
        "The media downloaded differs from what was uploaded.",
        "Check the media store volume and nginx buffering/proxy settings for /_matrix."),
    Diagnosis(
        "rate_limited",
        "Synapse rate-limited the gate (429 M_LIMIT_EXCEEDED) and asked for a longer wait "
        "than the gate's time budget has left (each wait it could afford was taken).",
        "Wait for the time Synapse named and re-run, or raise `total_timeout`. A gate run "
        "registers two users: Synapse's default rc_registration allows 3 at once and one "
        "more every ~6 s per address."),
    Diagnosis(
        "slow_uplink",
        "This machine's uplink is too slow to upload a file at the size limit within the "
        "gate's time budget (no host access was given, so the upload had to go from here).",
        "Give the gate SSH access to the host (`host_ssh`, the deploy runbook does): the "
        "near-limit uploads then run on the host. Or raise `total_timeout`."),
    Diagnosis(
        "host_unreachable",
        "The host-side media check could not run over SSH (connection, host key, or a "
        "missing curl on the host).",
        "Check the SSH target given as host_ssh (`ssh ec2-user@HOST curl --version`); "
        "without SSH (after close_ssh) leave host_ssh out: the upload then streams from "
        "here."),
    Diagnosis(
        "cleanup",
        "Some throwaway data of the check could not be removed.",
        "Remove it with Synapse's admin API (the log names the users, room and token)."),
    Diagnosis(
        "timeout",
        "The check did not finish within its time limit.",
        "Raise the `timeout` input if the link is slow; otherwise see the log for the "
        "call that hung."),
    Diagnosis(
        "unexpected",
        "The server answered something the check did not expect (see the log).",
        "Read the log lines of this check; run `elematrix doctor` on the stack directory."),
)}


def diagnosis(cause: str) -> Diagnosis:
    return DIAGNOSES.get(cause, DIAGNOSES["unexpected"])


class CheckFailed(Exception):
    """A check found a problem: the cause (a key of DIAGNOSES) and what it saw."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(detail)
        self.cause = cause
        self.detail = detail


def classify(exc: BaseException, via: str = "public") -> CheckFailed:
    """Turn a transport or HTTP error into a diagnosed failure.

    ``via`` is "public" (through nginx) or "admin" (Synapse directly, SSH forward).
    """
    if isinstance(exc, CheckFailed):
        return exc
    if isinstance(exc, httpx.TooManyRedirects):
        return CheckFailed("https_redirect", f"redirect loop: {exc}")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        cause = "admin_unreachable" if via == "admin" else "unreachable"
        return CheckFailed(cause, f"{type(exc).__name__}: {exc or 'connection failed'}")
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return CheckFailed("timeout", f"{type(exc).__name__}: {exc or 'timed out'}")
    if isinstance(exc, mh.RateLimited):
        return CheckFailed("rate_limited", f"{exc.summary()}: Synapse asks to wait "
                           f"{exc.wait:.1f} s (retry_after_ms), more than the "
                           f"{exc.left:.1f} s the gate has left")
    if isinstance(exc, mh.MatrixHTTPError):
        s = exc.summary()
        if 300 <= exc.status < 400:
            return CheckFailed("https_redirect", s)
        if exc.status == 413 and exc.is_html:
            return CheckFailed("body_size", s)
        if exc.status in (502, 503, 504) and via == "public" and exc.is_html:
            return CheckFailed("synapse_down", s)
        if exc.status == 403 and "registration has been disabled" in exc.error.lower():
            return CheckFailed("registration_disabled", s)
        if via == "admin" and exc.status in (400, 401, 403):
            return CheckFailed("admin_auth", s)
        if exc.status == 404 and exc.errcode == "M_UNRECOGNIZED" and via == "public":
            return CheckFailed("proxy_path", s)
        if exc.status == 404 and exc.is_html and via == "public":
            # Twisted's own 404 page: the request reached Synapse, but outside /_matrix
            # (`proxy_pass http://synapse:8008/;` under `location /_matrix` strips it).
            if "no such resource" in exc.body.lower():
                return CheckFailed("proxy_path", s + " (Synapse's 'No Such Resource': the "
                                   "/_matrix prefix was rewritten)")
            return CheckFailed("not_proxied", s)
        return CheckFailed("unexpected", s)
    if isinstance(exc, httpx.HTTPError):
        return CheckFailed("unreachable" if via == "public" else "admin_unreachable",
                           f"{type(exc).__name__}: {exc}")
    return CheckFailed("unexpected", f"{type(exc).__name__}: {exc}")


def norm_url(url: str) -> str:
    """Compare base URLs by scheme, host and port (default ports and trailing '/' ignored)."""
    u = urllib.parse.urlsplit(url.strip())
    host = (u.hostname or "").lower()
    port = u.port
    if port is None or (u.scheme, port) in (("http", 80), ("https", 443)):
        netloc = host
    else:
        netloc = f"{host}:{port}"
    return f"{u.scheme.lower()}://{netloc}{u.path.rstrip('/')}"


def element_e2ee_warning(base_url: str) -> str | None:
    """The element-web#19464 warning, or None when the origin is a browser secure context.

    Browsers disable WebCrypto on plain http:// origins other than localhost/loopback, so
    Element Web cannot use E2EE on the HTTP-only POC's public address. The nio check above
    is the E2EE proof; an SSH port forward to http://localhost shows Element doing it.
    """
    u = urllib.parse.urlsplit(base_url)
    if u.scheme == "https":
        return None
    host = (u.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return None
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return None
    return (
        f"Element Web at {base_url} is plain http:// on a public address: browsers disable "
        "WebCrypto there, so Element cannot use end-to-end encryption (element-web#19464). "
        "This gate proves E2EE with its own clients. To see it in Element, open an SSH port "
        "forward (`ssh -L 8080:localhost:80 ec2-user@HOST`) and use http://localhost:8080, "
        "which browsers treat as a secure context; or put TLS in front for production.")


# ------------------------------------------------------------------------------ results


@dataclass
class Outcome:
    """One check's result, as noted to the engine (``gate.check``) and logged."""

    name: str
    title: str
    status: str = "skipped"  # passed | failed | skipped
    duration: float = 0.0
    cause: str | None = None
    diagnosis: str | None = None
    fix: str | None = None
    details: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class Settings:
    """What the gate needs (the validated inputs of matrix.validate, flattened)."""

    base_url: str
    server_name: str
    admin_url: str
    registration_shared_secret: str | None = None
    admin_token: str | None = None
    max_upload_size_mb: float | None = None
    timeout: float = 10.0
    total_timeout: float = 300.0
    e2ee_store: bool = True
    # Validated ssh.* inputs of the host (None: no host access) and nginx as seen there.
    host_ssh: Any = None
    host_url: str = "http://127.0.0.1"


@dataclass
class _State:
    """What the checks created (for the later checks and for cleanup)."""

    admin_token: str | None = None
    admin_user: str | None = None
    temp_admin: mh.Session | None = None
    reg_token: str | None = None
    users: list[mh.Session] = field(default_factory=list)
    passwords: dict[str, str] = field(default_factory=dict)
    room_id: str | None = None
    nonces: dict[str, str] = field(default_factory=dict)  # event_id -> nonce
    media: list[str] = field(default_factory=list)  # mxc URIs
    store_dir: Path | None = None
    refused_by: str | None = None
    discovery_ok: bool = False


class Gate:
    """Runs the six checks once and reports each to the step context."""

    def __init__(self, ctx: StepContext, settings: Settings) -> None:
        self.ctx = ctx
        self.s = settings
        self.st = _State()
        self.outcomes: list[Outcome] = []
        self.warnings: list[str] = []
        self.base = settings.base_url.rstrip("/")
        self.admin = settings.admin_url.rstrip("/")
        self._room: asyncio.Future[str] | None = None
        self._deadline = time.monotonic() + settings.total_timeout
        if ctx.deadline is not None:
            self._deadline = min(self._deadline, ctx.deadline)

    # -------------------------------------------------------------- driver

    def remaining(self) -> float:
        return self._deadline - time.monotonic()

    async def run(self) -> list[Outcome]:
        """All checks in order; later checks are skipped when what they need failed."""
        warn = element_e2ee_warning(self.s.base_url)
        if warn:
            self.warnings.append(warn)
            self.ctx.log("WARNING: " + warn, "stderr")
            self.ctx.note("warning", id="element_e2ee_http", text=warn)
        # nio logs key-sharing chatter as warnings; without a handler Python's last-resort
        # handler would print them on stderr (and through the TUI). Library practice:
        # a NullHandler on the library's logger; our own log lines say what matters.
        nio_log = logging.getLogger("nio")
        if not any(isinstance(h, logging.NullHandler) for h in nio_log.handlers):
            nio_log.addHandler(logging.NullHandler())
        # 429s are waited out (retry_after_ms) as long as the gate's deadline allows; the
        # tasks started below inherit this from the context.
        mh.RETRY_DEADLINE.set(self._deadline)
        limits = httpx.Timeout(self.s.timeout)
        # Proxies: the public address as the environment says (HTTP(S)_PROXY, NO_PROXY),
        # the admin tunnel on loopback never (matrix_proxy).
        self.http = httpx.AsyncClient(timeout=limits, follow_redirects=False,
                                      mounts=httpx_mounts([self.base, self.admin]),
                                      headers={"User-Agent": "elematrix-validate"})
        # The E2EE stores are SQLite files: nio creates a dozen tables, one fsync each
        # (~0.4 s per client on disk). A RAM-backed temporary directory makes that free
        # and the keys still never leave this machine; it is removed at the end.
        shm = Path("/dev/shm")
        tmp_parent = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
        self.st.store_dir = Path(tempfile.mkdtemp(prefix="elematrix-e2ee-", dir=tmp_parent))
        # matrix-nio takes 0.6-1 s to import: load it in a thread while the first two
        # checks wait on the network.
        self._nio_ready = asyncio.ensure_future(asyncio.to_thread(importlib.import_module,
                                                                  "nio"))
        # Unused when an early check fails: consume its outcome so asyncio stays quiet
        # (an import error then surfaces where check 3 awaits it).
        self._nio_ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            await self._check("discovery", self.discovery)
            await self._check("registration", self.registration,
                              needs=self.st.discovery_ok)
            # Checks 3-5 need two users (and check 3 the room started after check 2).
            registration = next(o for o in self.outcomes if o.name == "registration")
            registered = registration.passed and len(self.st.users) == 2

            async def e2ee_then_at_rest() -> None:
                await self._check("e2ee_roundtrip", self.e2ee_roundtrip, needs=registered)
                await self._check("encrypted_at_rest", self.encrypted_at_rest,
                                  needs=bool(self.st.nonces))

            # Media is independent of the encrypted conversation (own uploads, A's token):
            # it runs alongside, and is reported after it so the log reads in order.
            media = self._check("media", self.media, needs=registered, report=False)
            await asyncio.gather(e2ee_then_at_rest(), media)
            self._report(next(o for o in self.outcomes if o.name == "media"))
        finally:
            # Cleanup runs whatever happened before (and even after a cancel).
            await self._check("cleanup", self.cleanup, budget=max(self.remaining(), 15.0))
            await self.http.aclose()
            shutil.rmtree(self.st.store_dir, ignore_errors=True)
        return self.outcomes

    async def _check(self, name: str, fn: Callable[[Outcome], Awaitable[None]],
                     needs: bool | None = True, budget: float | None = None,
                     report: bool = True) -> None:
        title = dict(CHECKS)[name]
        out = Outcome(name, title)
        self.outcomes.append(out)
        # Keep the outcomes in the checks' order whatever ran concurrently.
        self.outcomes.sort(key=lambda o: CHECK_NAMES.index(o.name))
        if needs is False:
            out.details.append("not run: an earlier check it depends on failed")
            if report:
                self._report(out)
            return
        number = CHECK_NAMES.index(name) + 1
        self.ctx.progress(f"check {number}/{len(CHECKS)}: {name}", number - 1, len(CHECKS))
        t0 = time.monotonic()
        limit = budget if budget is not None else max(self.remaining(), 0.1)
        try:
            await asyncio.wait_for(fn(out), timeout=limit)
            out.status = "passed"
        except CheckFailed as e:
            self._fail(out, e.cause, e.detail)
        except TimeoutError:
            self._fail(out, "timeout", f"no result within {limit:.1f} s")
        except asyncio.CancelledError:
            out.details.append("interrupted by the operator")
            raise
        except Exception as e:  # a check must report, never crash the gate
            f = classify(e)
            self._fail(out, f.cause, f.detail)
        finally:
            out.duration = time.monotonic() - t0
            if report:
                self._report(out)

    @staticmethod
    def _fail(out: Outcome, cause: str, detail: str) -> None:
        d = diagnosis(cause)
        out.status, out.cause, out.diagnosis, out.fix = "failed", cause, d.diagnosis, d.fix
        out.details.append(detail)

    def _report(self, out: Outcome) -> None:
        mark = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}[out.status]
        self.ctx.log(f"[{mark}] {out.name} ({out.duration:.2f} s): {out.title}",
                     "stdout" if out.status != "failed" else "stderr")
        for d in out.details:
            self.ctx.log(f"    {d}")
        if out.status == "failed":
            self.ctx.log(f"    diagnosis: {out.diagnosis}", "stderr")
            self.ctx.log(f"    fix: {out.fix}", "stderr")
        # "check", not "name": the journal keys a note by its kind under "name".
        self.ctx.note("gate.check", check=out.name, title=out.title, passed=out.passed,
                      status=out.status, skipped=out.status == "skipped",
                      duration=round(out.duration, 3), cause=out.cause,
                      diagnosis=out.diagnosis, fix=out.fix, details=list(out.details))

    async def _get_json(self, url: str, out: Outcome, what: str,
                        token: str | None = None) -> dict[str, Any]:
        r = await mh.call(self.http, "GET", url, token=token)
        try:
            data = r.json()
        except ValueError as e:
            raise CheckFailed("unexpected", f"{what}: not JSON") from e
        if not isinstance(data, dict):
            raise CheckFailed("unexpected", f"{what}: not a JSON object")
        return data

    # -------------------------------------------------------------- 1. discovery

    async def discovery(self, out: Outcome) -> None:
        try:
            v = await self._get_json(self.base + "/_matrix/client/versions", out, "versions")
        except Exception as e:
            raise classify(e) from e
        if not v.get("versions"):
            raise CheckFailed("not_proxied", "/_matrix/client/versions has no 'versions'")
        out.details.append(f"client API: {len(v['versions'])} spec versions, "
                           f"latest {v['versions'][-1]}")
        self.st.discovery_ok = True
        problems: list[CheckFailed] = []
        # An alias with an encoded '/' and ':': a correct proxy passes it byte for byte
        # (Synapse: M_NOT_FOUND); one with a URI part decodes it (M_UNRECOGNIZED).
        probe = f"#elematrix-probe/x:{self.s.server_name}"
        url = self.base + "/_matrix/client/v3/directory/room/" + mh.q(probe)
        try:
            await mh.call(self.http, "GET", url)
            out.details.append("encoded-URI probe: alias unexpectedly exists (fine)")
        except mh.MatrixHTTPError as e:
            if e.status == 404 and e.errcode == "M_NOT_FOUND":
                out.details.append("encoded-URI probe: passed through unchanged (M_NOT_FOUND)")
            elif e.errcode == "M_UNRECOGNIZED" or "no such resource" in e.body.lower():
                problems.append(CheckFailed("proxy_path", f"encoded-URI probe: {e.summary()}"))
            elif e.json is not None:
                # Synapse answered in JSON, so the URI reached it intact; e.g. a server
                # name that is not this server's makes it ask over federation (502).
                out.details.append(f"encoded-URI probe: inconclusive ({e.summary()})")
            else:
                problems.append(classify(e))
        try:
            wk = await self._get_json(f"{self.base}/.well-known/matrix/client", out,
                                      "well-known client")
            got = str((wk.get("m.homeserver") or {}).get("base_url", ""))
            if norm_url(got) != norm_url(self.s.base_url):
                problems.append(CheckFailed(
                    "well_known", f"well-known client base_url {got!r} is not "
                    f"{self.s.base_url!r}"))
            else:
                out.details.append(f"well-known client: base_url {got}")
        except CheckFailed as e:
            problems.append(CheckFailed("well_known", e.detail))
        except mh.MatrixHTTPError as e:
            problems.append(CheckFailed("well_known", f"well-known client: {e.summary()}"))
        server_problem = await self._well_known_server(out)
        if server_problem:
            problems.append(server_problem)
        try:
            cfg = await self._get_json(self.base + "/config.json", out, "Element config.json")
            hs = (cfg.get("default_server_config") or {}).get("m.homeserver") or {}
            got_url, got_name = str(hs.get("base_url", "")), str(hs.get("server_name", ""))
            if norm_url(got_url) != norm_url(self.s.base_url) or got_name != self.s.server_name:
                problems.append(CheckFailed(
                    "element_config", f"Element config.json: base_url {got_url!r}, "
                    f"server_name {got_name!r}; expected {self.s.base_url!r}, "
                    f"{self.s.server_name!r}"))
            else:
                out.details.append(f"Element config.json: {got_url}, {got_name}")
        except CheckFailed as e:
            problems.append(CheckFailed("element_config", e.detail))
        except mh.MatrixHTTPError as e:
            problems.append(CheckFailed("element_config", f"Element config.json: "
                                        f"{e.summary()}"))
        if problems:
            for p in problems[1:]:
                out.details.append(f"also: {p.detail} [{p.cause}]")
            raise problems[0]

    async def _well_known_server(self, out: Outcome) -> CheckFailed | None:
        """``/.well-known/matrix/server`` is optional: missing is fine, broken is not.

        It only delegates federation, which the HTTP-only POC has off (the bundled stack
        does not serve it). Missing: 404/410, or an HTML page (a catch-all such as a
        single-page app's index.html). Present: it must be a JSON object whose
        ``m.server`` is ``host[:port]`` (Matrix spec, server-server API "/.well-known/
        matrix/server"); anything else a federating server would trip over is a finding.
        """
        url = f"{self.base}/.well-known/matrix/server"
        try:
            r = await self.http.get(url)
        except httpx.HTTPError as e:
            return classify(e)
        ctype = r.headers.get("content-type", "").lower()
        text = r.text
        looks_json = "json" in ctype or text.lstrip().startswith("{")
        if r.status_code in (404, 410) or (r.status_code == 200 and not looks_json
                                           and ("html" in ctype or "<html" in
                                                text[:500].lower())):
            out.details.append(f"well-known server: not served (HTTP {r.status_code}"
                               f"{', an HTML page' if r.status_code == 200 else ''}): fine, "
                               "federation delegation is optional")
            return None
        if r.status_code != 200:
            return CheckFailed("well_known", f"well-known server: HTTP {r.status_code} "
                               "(serve it correctly or not at all)")
        try:
            data = json.loads(text)
        except ValueError:
            return CheckFailed("well_known", "well-known server is served but is not JSON: "
                               f"{text[:80]!r}")
        m_server = data.get("m.server") if isinstance(data, dict) else None
        if not isinstance(m_server, str) or not WELL_KNOWN_SERVER_RE.fullmatch(m_server):
            return CheckFailed("well_known", "well-known server is served but its m.server "
                               f"is not host[:port]: {m_server!r}")
        out.details.append(f"well-known server: m.server {m_server!r}")
        return None

    # -------------------------------------------------------------- 2. registration

    async def _admin_session(self, out: Outcome) -> None:
        """An admin token: the one given, or a temporary admin made with the shared secret."""
        if self.s.admin_token:
            try:
                user = await mh.whoami(self.http, self.admin, self.s.admin_token)
                if not await mh.is_admin(self.http, self.admin, self.s.admin_token, user):
                    raise CheckFailed("admin_auth", f"{user} is not a server admin")
            except CheckFailed:
                raise
            except Exception as e:
                raise classify(e, "admin") from e
            self.st.admin_token, self.st.admin_user = self.s.admin_token, user
            out.details.append(f"admin API at {self.admin}: token of {user}")
            return
        assert self.s.registration_shared_secret
        name = f"elematrix-check-admin-{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(24)
        self.ctx.add_secret(password)
        try:
            sess = await mh.register_shared_secret(
                self.http, self.admin, self.s.registration_shared_secret, name, password,
                admin=True)
        except Exception as e:
            raise classify(e, "admin") from e
        self.ctx.add_secret(sess.access_token)
        self.st.temp_admin = sess
        self.st.admin_token, self.st.admin_user = sess.access_token, sess.user_id
        out.details.append(f"admin API at {self.admin}: temporary admin {sess.user_id} "
                           "(shared-secret registration)")

    async def registration(self, out: Outcome) -> None:
        await self._admin_session(out)
        assert self.st.admin_token
        try:
            tok = await mh.create_registration_token(
                self.http, self.admin, self.st.admin_token, uses_allowed=2,
                expiry_ms=int((time.time() + 3600) * 1000))
        except Exception as e:
            raise classify(e, "admin") from e
        self.ctx.add_secret(tok.token)
        self.st.reg_token = tok.token
        out.details.append("registration token created (2 uses, 1 h)")
        # The flows Synapse offers before any auth: every flow must need the token.
        try:
            r = await mh.call(self.http, "POST", self.base + "/_matrix/client/v3/register",
                              json_body={}, ok=(401,))
            flows = [f.get("stages", []) for f in r.json().get("flows", [])]
        except Exception as e:
            raise classify(e) from e
        if any("m.login.registration_token" not in f for f in flows):
            raise CheckFailed("open_registration", f"registration flows offered: {flows}")
        tag = secrets.token_hex(4)

        async def one(letter: str) -> mh.Session:
            password = secrets.token_urlsafe(24)
            self.ctx.add_secret(password)
            assert self.st.reg_token
            sess = await mh.register_with_token(
                self.http, self.base, f"elematrix-check-{tag}-{letter}", password,
                self.st.reg_token, device_name=f"elematrix check {letter.upper()}")
            self.ctx.add_secret(sess.access_token)
            self.st.passwords[sess.user_id] = password
            return sess

        results = await asyncio.gather(one("a"), one("b"), return_exceptions=True)
        for res in results:
            if isinstance(res, mh.Session):
                self.st.users.append(res)
        for res in results:
            if isinstance(res, BaseException):
                if isinstance(res, mh.MatrixHTTPError) and res.status == 401:
                    raise CheckFailed("token_rejected", res.summary())
                raise classify(res)
        for u in self.st.users:
            if u.user_id.split(":", 1)[1] != self.s.server_name:
                raise CheckFailed("server_name", f"registered {u.user_id}, but server_name "
                                  f"is {self.s.server_name!r}")
        out.details.append("registered " + ", ".join(u.user_id for u in self.st.users)
                           + " (registration_token + dummy stages)")
        # Check 3's room: Synapse takes 0.3-0.6 s to create one, which overlaps the
        # rest of the matrix-nio import. Failures surface where check 3 awaits it.
        self._room = asyncio.ensure_future(self._create_room())
        self._room.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _create_room(self) -> str:
        """A creates the encrypted room (Megolm, not federated) and invites B."""
        a, b = self.st.users
        body = {"name": "elematrix E2EE check", "preset": "private_chat",
                "visibility": "private", "invite": [b.user_id],
                "creation_content": {"m.federate": False},
                "initial_state": [{"type": "m.room.encryption", "state_key": "",
                                   "content": {"algorithm": MEGOLM}}]}
        r = await mh.call(self.http, "POST", self.base + "/_matrix/client/v3/createRoom",
                          token=a.access_token, json_body=body)
        room_id = str(r.json()["room_id"])
        self.st.room_id = room_id
        return room_id

    # -------------------------------------------------------------- 3. E2EE round trip

    def _nio(self, sess: mh.Session, store: bool, token: str | None = None) -> Any:
        from nio import AsyncClient, AsyncClientConfig

        cfg = AsyncClientConfig(encryption_enabled=store, store_sync_tokens=False,
                                request_timeout=self.s.timeout, max_timeouts=0,
                                max_limit_exceeded=3)
        path = ""
        if store:
            assert self.st.store_dir is not None
            path = str(self.st.store_dir / sess.user_id.lstrip("@").replace(":", "_"))
            os.makedirs(path, exist_ok=True)
        # nio ignores the proxy environment: give it the same decision as httpx.
        client = AsyncClient(self.base, sess.user_id, device_id=sess.device_id or None,
                             store_path=path, config=cfg, proxy=proxy_for(self.base))
        if store:
            client.restore_login(sess.user_id, sess.device_id, token or sess.access_token)
        else:
            # restore_login insists on a device id even without encryption (a keyless
            # "login as" token has none): set the session by hand.
            client.user_id, client.access_token = sess.user_id, token or sess.access_token
        return client

    async def _receive(self, client: Any, room_id: str, nonce: str) -> Any:
        """Sync until an event whose body is ``nonce`` arrives; returns that event.

        On loopback the message arrives within milliseconds, over the internet within a
        second: the wait is capped at 3 x ``timeout``. An encrypted event that does not
        decrypt gets a short grace for a late room key, then ends in ``not_decrypted``.
        """
        from nio import MegolmEvent, RoomMessageText, SyncResponse

        give_up = time.monotonic() + min(self.remaining() - 1, 3 * self.s.timeout)
        undecryptable_since: float | None = None
        undecryptable = 0
        while True:
            left = give_up - time.monotonic()
            if undecryptable_since is not None:
                left = min(left, undecryptable_since + 3.0 - time.monotonic())
            if left <= 0:
                if undecryptable:
                    raise CheckFailed("not_decrypted",
                                      f"{undecryptable} event(s) arrived but did not decrypt")
                raise CheckFailed("not_received", "no event with the nonce arrived within "
                                  f"{min(3 * self.s.timeout, self.s.total_timeout):g} s")
            resp = await client.sync(timeout=int(max(min(left, 5), 0.1) * 1000))
            if not isinstance(resp, SyncResponse):
                raise CheckFailed("unexpected", f"sync failed: {resp}")
            room = resp.rooms.join.get(room_id)
            for ev in room.timeline.events if room else []:
                if isinstance(ev, RoomMessageText) and ev.body == nonce:
                    return ev
                if isinstance(ev, MegolmEvent):
                    undecryptable += 1
                    if undecryptable_since is None:
                        undecryptable_since = time.monotonic()

    async def e2ee_roundtrip(self, out: Outcome) -> None:
        from nio import JoinResponse, RoomSendResponse

        await self._nio_ready
        a_sess, b_sess = self.st.users
        # The self-test of this gate (e2ee_store: false): A has no E2EE store, like a
        # client without encryption support; the check must catch the plaintext.
        a = self._nio(a_sess, store=self.s.e2ee_store)
        b = self._nio(b_sess, store=True)
        if not self.s.e2ee_store:
            out.details.append("self-test: sender A runs WITHOUT an E2EE store")
        try:
            # Device keys upload while Synapse finishes the room (started after check 2).
            assert self._room is not None
            uploads = [c.keys_upload() for c in (a, b) if c.should_upload_keys]
            room_id, *_ = await asyncio.gather(self._room, *uploads)
            out.details.append(f"room {room_id} with m.room.encryption {MEGOLM}")
            j = await b.join(room_id)
            if not isinstance(j, JoinResponse):
                raise CheckFailed("unexpected", f"B join: {j}")
            # B syncs first (the room and A's membership), A then learns B joined.
            await asyncio.gather(b.sync(timeout=0), a.sync(timeout=0))
            for sender, receiver, label in ((a, b, "A -> B"), (b, a, "B -> A")):
                nonce = "elematrix-nonce-" + secrets.token_hex(16)
                sent = await sender.room_send(room_id, "m.room.message",
                                              {"msgtype": "m.text", "body": nonce},
                                              ignore_unverified_devices=True)
                if not isinstance(sent, RoomSendResponse):
                    raise CheckFailed("unexpected", f"{label} send: {sent}")
                self.st.nonces[sent.event_id] = nonce
                ev = await self._receive(receiver, room_id, nonce)
                if not getattr(ev, "decrypted", False):
                    raise CheckFailed("plaintext", f"{label}: the receiver got the nonce as "
                                      "a plaintext m.room.message, not a decrypted event")
                out.details.append(f"{label}: decrypted RoomMessageText with the nonce "
                                   f"({ev.event_id})")
        finally:
            await asyncio.gather(a.close(), b.close(), return_exceptions=True)

    # -------------------------------------------------------------- 4. encrypted at rest

    async def encrypted_at_rest(self, out: Outcome) -> None:
        from nio import RoomGetEventResponse, RoomMessageText

        assert self.st.admin_token and self.st.room_id
        url = (f"{self.admin}/_synapse/admin/v1/rooms/{mh.q(self.st.room_id)}/messages"
               "?dir=b&limit=50")
        try:
            chunk = (await mh.call(self.http, "GET", url, token=self.st.admin_token)
                     ).json().get("chunk", [])
        except Exception as e:
            raise classify(e, "admin") from e
        stored = {ev.get("event_id"): ev for ev in chunk}
        problems: list[str] = []
        for event_id, nonce in self.st.nonces.items():
            ev = stored.get(event_id)
            if ev is None:
                problems.append(f"{event_id}: not among the room's stored events")
                continue
            kind, alg = ev.get("type"), (ev.get("content") or {}).get("algorithm")
            if kind != "m.room.encrypted" or alg != MEGOLM or nonce in json.dumps(ev):
                raise CheckFailed("plaintext", f"stored event {event_id} is {kind!r} "
                                  f"(algorithm {alg!r}), nonce readable on the server: "
                                  f"{nonce in json.dumps(ev)}")
            out.details.append(f"stored {event_id}: m.room.encrypted, {alg}, ciphertext only")
        if problems:
            raise CheckFailed("unexpected", "; ".join(problems))
        # A third client: B's account, no device, no keys ("login as" by the admin).
        b_sess = self.st.users[1]
        try:
            token = await mh.login_as(self.http, self.admin, self.st.admin_token,
                                      b_sess.user_id)
        except Exception as e:
            raise classify(e, "admin") from e
        self.ctx.add_secret(token)
        third = self._nio(mh.Session(b_sess.user_id, token, ""), store=False, token=token)
        try:
            for event_id, nonce in self.st.nonces.items():
                r = await third.room_get_event(self.st.room_id, event_id)
                if not isinstance(r, RoomGetEventResponse):
                    raise CheckFailed("unexpected", f"keyless client get {event_id}: {r}")
                readable = isinstance(r.event, RoomMessageText) or nonce in json.dumps(
                    r.event.source)
                if readable:
                    raise CheckFailed("plaintext", f"a client with no keys read {event_id}")
                out.details.append(f"keyless client sees {type(r.event).__name__}, "
                                   "not the nonce")
        finally:
            await third.close()

    # -------------------------------------------------------------- 5. media

    async def media(self, out: Outcome) -> None:
        """The upload limit, proven without pushing it through the operator's uplink.

        1. The limit (``/media/config`` against ``max_upload_size_mb``).
        2. From this machine: a small upload and download, byte-identical (the operator's
           own path works) - which also measures the uplink.
        3. Limit - 1 KiB must go through and come back identical, limit + 1 KiB must be
           refused: on the host over SSH (``host_ssh``) to nginx on its loopback, or,
           without host access, streamed from here under a budget sized from the
           payload and the measured uplink.
        """
        sess = self.st.users[0]
        try:
            cfg = await self._get_json(self.base + "/_matrix/client/v1/media/config", out,
                                       "media config", token=sess.access_token)
        except Exception as e:
            raise classify(e) from e
        server_limit = int(cfg.get("m.upload.size") or 0)
        limit = server_limit
        if self.s.max_upload_size_mb is not None:
            limit = int(self.s.max_upload_size_mb * MIB)
            if server_limit and server_limit != limit:
                raise CheckFailed("media_limit", f"Synapse's limit is {server_limit} bytes "
                                  f"({server_limit / MIB:g} MiB), expected {limit} bytes")
        if limit <= 4096:
            raise CheckFailed("media_limit", f"upload limit {limit} bytes is too small")
        out.details.append(f"upload limit {limit} bytes ({limit / MIB:g} MiB)")
        token = sess.access_token
        # 2. The operator's own round trip, small.
        probe = min(PROBE_BYTES, limit // 2)
        mxc, up = await self._upload_here(probe, token, self.s.timeout * 3 + 5)
        await self._download_here(mxc, up, token, max(self.remaining() - 1, 1))
        rate = up.size * 8 / max(up.seconds, 1e-3) / 1e6
        out.details.append(f"from this machine: {probe} bytes uploaded in {up.seconds:.2f} s "
                           f"(~{rate:.1f} Mbit/s uplink) and downloaded identical ({mxc})")
        # 3. At the limit.
        if self.s.host_ssh is not None:
            await self._limit_on_host(out, limit, token)
        else:
            await self._limit_from_here(out, limit, token, rate)

    def _judge_under(self, t: mh.Transfer, url: str) -> str:
        """The mxc URI of an upload that must have been accepted (or the finding)."""
        if t.status == 200:
            try:
                mxc = str(json.loads(t.body)["content_uri"])
            except (ValueError, KeyError, TypeError) as e:
                raise CheckFailed("unexpected", f"upload answered 200 without a "
                                  f"content_uri: {t.body[:200]!r}") from e
            self.st.media.append(mxc)
            return mxc
        if t.status == 0:
            raise CheckFailed("unexpected", f"{t.size} bytes: the connection closed before "
                              f"an answer ({t.error})")
        err = t.http_error("POST", url)
        if err.status == 413 and not err.is_html:
            raise CheckFailed("media_limit", f"{t.size} bytes refused by Synapse: "
                              f"{err.summary()}")
        raise classify(err)

    def _judge_over(self, out: Outcome, t: mh.Transfer, url: str, where: str) -> None:
        """An upload over the limit must be refused (by Synapse, or nginx at the same limit)."""
        where = f"{where} (answered in {t.seconds:.1f} s)"
        if t.status == 413:
            e = t.http_error("POST", url)
            if e.errcode == "M_TOO_LARGE":
                self.st.refused_by = "synapse"
                out.details.append(f"{t.size} bytes {where} refused by Synapse (M_TOO_LARGE)")
                return
            if e.is_html:
                # nginx at the same limit as Synapse (the bundled stack sets them equal):
                # the limit is right, only the error is nginx's HTML instead of JSON.
                self.st.refused_by = "nginx"
                out.details.append(f"{t.size} bytes {where} refused by nginx's 413 at the "
                                   "same limit (client_max_body_size = max_upload_size): "
                                   "clients get an HTML error rather than M_TOO_LARGE")
                return
        if t.status == 0:
            # nginx may answer 413 and close before the body is sent.
            self.st.refused_by = "connection closed"
            out.details.append(f"{t.size} bytes {where}: connection closed by the server "
                               f"({t.error}), treated as refused")
            return
        if t.status == 200:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.st.media.append(str(json.loads(t.body)["content_uri"]))
            raise CheckFailed("media_limit", f"{t.size} bytes (over the limit) were accepted")
        raise classify(t.http_error("POST", url))

    def _download_path(self, mxc: str) -> str:
        server, media_id = mxc.removeprefix("mxc://").split("/", 1)
        return f"/_matrix/client/v1/media/download/{mh.q(server)}/{mh.q(media_id)}"

    @staticmethod
    def _judge_download(t: mh.Transfer, up: mh.Transfer, url: str) -> None:
        if t.status != 200:
            raise classify(t.http_error("GET", url))
        if t.sha256 != up.sha256 or t.size != up.size:
            raise CheckFailed("media_corrupt", f"uploaded {up.size} bytes, downloaded "
                              f"{t.size} different bytes")

    async def _upload_here(self, size: int, token: str, budget: float
                           ) -> tuple[str, mh.Transfer]:
        url = self.base + UPLOAD_PATH
        while True:
            try:
                t = await asyncio.wait_for(mh.upload_stream(self.http, url, token, size),
                                           budget)
            except TimeoutError as e:
                raise CheckFailed("slow_uplink", f"{size} bytes from this machine did not "
                                  f"upload within {budget:.0f} s") from e
            except Exception as e:
                raise classify(e) from e
            if t.status != 429:
                return self._judge_under(t, url), t
            # rc_media_create: wait as Synapse asks, if the gate's budget allows.
            err = t.http_error("POST", url)
            wait = mh.rate_limit_wait(err)
            left = self.remaining() - mh.RETRY_MARGIN
            if wait > left:
                raise classify(mh.RateLimited(err, wait, max(left, 0.0)))
            await asyncio.sleep(wait)

    async def _download_here(self, mxc: str, up: mh.Transfer, token: str,
                             budget: float) -> mh.Transfer:
        url = self.base + self._download_path(mxc)
        try:
            t = await asyncio.wait_for(mh.download_stream(self.http, url, token), budget)
        except TimeoutError as e:
            raise CheckFailed("timeout", f"download of {up.size} bytes did not finish "
                              f"within {budget:.0f} s") from e
        except Exception as e:
            raise classify(e) from e
        self._judge_download(t, up, url)
        return t

    async def _limit_on_host(self, out: Outcome, limit: int, token: str) -> None:
        from .matrix_media import CURL_COULDNT_CONNECT, HostError, HostSide

        try:
            host = HostSide(self.ctx, self.s.host_ssh, self.s.host_url)
        except Exception as e:  # an ssh config the target cannot be resolved from
            raise CheckFailed("host_unreachable", f"host_ssh: {e}") from e
        url = host.url + UPLOAD_PATH
        try:
            up = await host.upload(UPLOAD_PATH, token, limit - 1024,
                                   max(self.remaining() - 1, 1))
            refused = up.error.startswith(f"curl exit {CURL_COULDNT_CONNECT}:")
            if up.status == 0 and refused and host.url != self.base:
                # Nothing listens at host_url on the host (nginx published on one address
                # only): the public address, from the host, still goes through nginx.
                out.details.append(f"nothing listens at {host.url} on the host: using the "
                                   f"public address {self.base} from the host")
                host.url = self.base
                url = host.url + UPLOAD_PATH
                up = await host.upload(UPLOAD_PATH, token, limit - 1024,
                                       max(self.remaining() - 1, 1))
            if up.status == 0:
                raise HostError(f"nothing answered at {host.url} on the host ({up.error})")
            mxc = self._judge_under(up, url)
            down = await host.download(self._download_path(mxc), token,
                                       max(self.remaining() - 1, 1))
            self._judge_download(down, up, host.url + self._download_path(mxc))
            out.details.append(f"on the host ({host}): {up.size} bytes uploaded in "
                               f"{up.seconds:.2f} s and downloaded identical ({mxc})")
            over = await host.upload(UPLOAD_PATH, token, limit + 1024,
                                     max(self.remaining() - 1, 1))
        except HostError as e:
            raise CheckFailed("host_unreachable", str(e)) from e
        self._judge_over(out, over, url, "on the host")

    async def _limit_from_here(self, out: Outcome, limit: int, token: str,
                               rate_mbit: float) -> None:
        """No host access: stream the limit from here, with a budget from the uplink."""
        size = limit - 1024
        estimate = size * 8 / (max(rate_mbit, 0.01) * 1e6)
        budget = estimate * 1.5 + 2 * self.s.timeout
        left = self.remaining() - 2
        out.details.append(f"no host access (host_ssh not given): streaming {size} bytes "
                           f"from this machine, ~{estimate:.0f} s at the measured "
                           f"{rate_mbit:.1f} Mbit/s (budget {min(budget, left):.0f} s)")
        if estimate > left:
            raise CheckFailed("slow_uplink", f"{size} bytes at ~{rate_mbit:.1f} Mbit/s need "
                              f"~{estimate:.0f} s; the gate has {max(left, 0):.0f} s left")
        mxc, up = await self._upload_here(size, token, min(budget, left))
        await self._download_here(mxc, up, token, max(self.remaining() - 1, 1))
        out.details.append(f"{up.size} bytes uploaded in {up.seconds:.1f} s and downloaded "
                           f"identical ({mxc})")
        url = self.base + UPLOAD_PATH
        try:
            # nginx refuses an over-limit Content-Length before reading the body: with
            # Expect: 100-continue nothing is sent (through a proxy: streamed, httpx).
            send = (mh.upload_stream(self.http, url, token, limit + 1024)
                    if proxy_for(url) else
                    mh.upload_expect_continue(url, token, limit + 1024, self.s.timeout))
            over = await asyncio.wait_for(send, max(min(budget, self.remaining() - 1), 1))
        except TimeoutError as e:
            raise CheckFailed("media_limit", f"{limit + 1024} bytes (over the limit) were "
                              "still being accepted when the budget ran out") from e
        except Exception as e:
            raise classify(e) from e
        self._judge_over(out, over, url, "from this machine")

    # -------------------------------------------------------------- 6. cleanup

    async def cleanup(self, out: Outcome) -> None:
        token = self.st.admin_token
        leftovers: list[str] = []
        if token is None:
            out.details.append("nothing was created")
            return
        adm = self.admin

        async def attempt(what: str, coro: Awaitable[Any]) -> bool:
            try:
                await coro
                return True
            except Exception as e:
                leftovers.append(f"{what}: {classify(e, 'admin').detail}")
                return False

        if self._room is not None and not self._room.done():
            # Created in the background after check 2: wait for it, so it is removed too.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._room), 10)
        for mxc in self.st.media:
            if mxc.startswith("mxc://"):
                server, media_id = mxc.removeprefix("mxc://").split("/", 1)
                await attempt(f"media {mxc}", mh.call(
                    self.http, "DELETE", f"{adm}/_synapse/admin/v1/media/{mh.q(server)}/"
                    f"{mh.q(media_id)}", token=token, ok=(200, 404)))
        if self.st.room_id:
            # v2 deletes in the background: the gate does not wait for the purge.
            await attempt(f"room {self.st.room_id}", mh.call(
                self.http, "DELETE", f"{adm}/_synapse/admin/v2/rooms/{mh.q(self.st.room_id)}",
                token=token, json_body={"purge": True, "block": False}, ok=(200, 404)))

        async def remove_user(sess: mh.Session) -> None:
            # Deactivation deletes the user's devices and tokens; listing them afterwards
            # proves it (an explicit delete_devices first only cost time). If deactivation
            # fails, the devices are deleted on their own so no keys stay usable.
            if await attempt(f"deactivate {sess.user_id}", mh.deactivate(
                    self.http, adm, token, sess.user_id)):
                left = await mh.list_devices(self.http, adm, token, sess.user_id)
            else:
                left = await mh.list_devices(self.http, adm, token, sess.user_id)
                if left:
                    await attempt(f"devices of {sess.user_id}", mh.delete_devices(
                        self.http, adm, token, sess.user_id, left))
                    left = await mh.list_devices(self.http, adm, token, sess.user_id)
            if left:
                leftovers.append(f"{sess.user_id} still has devices {left}")

        async def remove_token(reg: str) -> None:
            if await attempt("registration token", mh.delete_registration_token(
                    self.http, adm, token, reg)):
                if await mh.get_registration_token(self.http, adm, token, reg) is not None:
                    leftovers.append("registration token still exists")
                else:
                    out.details.append("registration token deleted")

        # Independent removals run together (deactivation with erase is the slow one).
        jobs = [remove_user(u) for u in self.st.users]
        if self.st.reg_token:
            jobs.append(remove_token(self.st.reg_token))
        await asyncio.gather(*jobs)
        if self.st.users:
            out.details.append(f"deactivated {len(self.st.users)} user(s); their devices "
                               "are gone")
        if self.st.temp_admin:
            # Last: deactivating the temporary admin invalidates the token used above.
            if await attempt(f"deactivate {self.st.temp_admin.user_id}", mh.deactivate(
                    self.http, adm, token, self.st.temp_admin.user_id)):
                out.details.append(f"temporary admin {self.st.temp_admin.user_id} deactivated")
        if leftovers:
            raise CheckFailed("cleanup", "; ".join(leftovers))


def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    """The step's outputs: each check's status and timing (small, JSON, no secrets)."""
    return {
        "passed": all(o.passed for o in outcomes),
        "checks": {o.name: o.status for o in outcomes},
        "durations": {o.name: round(o.duration, 3) for o in outcomes},
        "failed": [o.name for o in outcomes if o.status == "failed"],
    }
