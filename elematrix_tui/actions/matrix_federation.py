"""``matrix.federation``: the federation self-check of the production path.

What another homeserver does to reach ours, over the public name and through the same
edge (the ALB), following the spec's server discovery (Server-Server API, "Resolving
server names": a name without a port and without an IP literal: ``GET
https://<server_name>/.well-known/matrix/server``, then connect to its ``m.server`` with
TLS for that host name), and the key checks of matrix-org/matrix-federation-tester
(``gomatrixserverlib/keys.go: KeyChecks``, copied by name):

- ``WellKnownServer``: 200, a JSON object, ``m.server`` a server name; with no port the
  spec sends servers to 8448, which the ALB does not listen on, so a port is required.
- ``ValidCertificates``: the TLS certificate at ``m.server`` verifies for its host name.
- ``Version``: ``/_matrix/federation/v1/version`` answers ``server.name``/``version``
  (and, given a layout, from the federation inbound worker the route table names).
- ``MatchingServerName``, ``FutureValidUntilTS``, ``HasEd25519Key``,
  ``AllEd25519ChecksOK`` (each key 32 bytes, its signature over the canonical JSON valid):
  ``/_matrix/key/v2/server``.
- ``WellKnownClient`` (the client side of the same delegation, Client-Server API
  "Server Discovery"): ``m.homeserver.base_url`` given, and ``/_matrix/client/versions``
  answers there. CORS on it is a SHOULD in the spec: reported, not failed.

``connect`` maps a ``host:port`` to the address to dial instead (the rehearsal's edge on a
free loopback port); the Host header, SNI and the certificate check keep the real name.
httpx and cryptography are imported inside the functions.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ConfigDict, Field

from ..engine.action import Action, ActionFailed, Check, Inputs, Result, StepContext

WELL_KNOWN_SERVER = "/.well-known/matrix/server"
WELL_KNOWN_CLIENT = "/.well-known/matrix/client"
VERSION_PATH = "/_matrix/federation/v1/version"
KEYS_PATH = "/_matrix/key/v2/server"
# The spec's server name grammar (Appendices, "Server Name"): a DNS name or an IP literal,
# an optional port.
_SERVER_NAME = re.compile(r"^(\[[0-9A-Fa-f:.]{2,45}\]|[0-9A-Za-z.-]{1,255})(:[0-9]{1,5})?$")


@dataclass
class Report:
    """The named checks (True/False) and what was found, in the tester's terms."""

    checks: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    found: dict[str, Any] = field(default_factory=dict)

    def set(self, name: str, ok: bool, problem: str = "") -> bool:
        self.checks[name] = ok
        if not ok and problem:
            self.problems.append(f"{name}: {problem}")
        return ok

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(self.checks.values()) and not self.problems


def split_server_name(name: str) -> tuple[str, int | None]:
    """(host, port or None) of a server name; ValueError when it is not one."""
    m = _SERVER_NAME.match(name)
    if not m:
        raise ValueError(f"{name!r} is not a server name")
    port = int(m.group(2)[1:]) if m.group(2) else None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"{name!r}: port out of range")
    return m.group(1), port


def canonical_json(obj: Any) -> bytes:
    """The spec's canonical JSON (sorted keys, no spaces, UTF-8)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def _unpadded_b64(s: str) -> bytes:
    return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)


def check_keys(server_name: str, keys: Any, report: Report, now_ms: int | None = None) -> None:
    """The federation tester's KeyChecks on a ``/_matrix/key/v2/server`` body."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if not isinstance(keys, dict):
        report.set("MatchingServerName", False, "the key response is not a JSON object")
        return
    report.set("MatchingServerName", keys.get("server_name") == server_name,
               f"server_name {keys.get('server_name')!r}, asked for {server_name!r}")
    until = keys.get("valid_until_ts")
    report.set("FutureValidUntilTS", isinstance(until, int) and until > now_ms,
               f"valid_until_ts {until!r} is not in the future")
    vk = keys.get("verify_keys")
    verify: dict[str, Any] = vk if isinstance(vk, dict) else {}
    ed = {k: v for k, v in verify.items()
          if str(k).startswith("ed25519:") and isinstance(v, dict)}
    report.set("HasEd25519Key", bool(ed), "no ed25519 key in verify_keys")
    signed = canonical_json({k: v for k, v in keys.items() if k not in ("signatures",
                                                                          "unsigned")})
    sigs = keys.get("signatures", {}).get(server_name, {}) if isinstance(
        keys.get("signatures"), dict) else {}
    all_ok = True
    for key_id, entry in ed.items():
        try:
            raw = _unpadded_b64(str(entry.get("key", "")))
        except ValueError:
            raw = b""
        if len(raw) != 32:
            all_ok = False
            report.problems.append(f"AllEd25519ChecksOK: {key_id} is not a 32-byte key")
            continue
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(
                _unpadded_b64(str(sigs.get(key_id, ""))), signed)
        except (InvalidSignature, ValueError):
            all_ok = False
            report.problems.append(f"AllEd25519ChecksOK: {key_id}: no valid signature by "
                                   f"{server_name} over the key response")
    report.checks["AllEd25519ChecksOK"] = bool(ed) and all_ok
    report.found["verify_keys"] = sorted(ed)


class _Client:
    """GETs by (host, port, path) over TLS, dialling ``connect``'s address where given."""

    def __init__(self, connect: dict[str, str], verify: str | bool, timeout: float) -> None:
        import ssl

        import httpx

        self.connect = connect
        tls: ssl.SSLContext | bool = (ssl.create_default_context(cafile=verify)
                                      if isinstance(verify, str) else verify)
        self.http = httpx.Client(verify=tls, timeout=timeout, follow_redirects=False,
                                 trust_env=False)

    def get(self, host: str, port: int, path: str) -> Any:
        target = self.connect.get(f"{host}:{port}", f"{host}:{port}")
        host_header = host if port == 443 else f"{host}:{port}"
        return self.http.get(f"https://{target}{path}", headers={"Host": host_header},
                             extensions={"sni_hostname": host.strip("[]")})

    def get_url(self, url: str) -> Any:
        import httpx

        u = httpx.URL(url)
        return self.get(u.host, u.port or 443, u.raw_path.decode() or "/")

    def close(self) -> None:
        self.http.close()


def _json(r: Any) -> Any:
    try:
        return r.json()
    except ValueError:
        return None


def self_check(server_name: str, *, connect: dict[str, str] | None = None,
               verify: str | bool = True, timeout: float = 10.0,
               federation_workers: list[str] | None = None) -> Report:
    """Reach our server as another homeserver would; the named checks."""
    import httpx

    from ..stack.workers import WORKER_HEADER

    rep = Report()
    c = _Client(connect or {}, verify, timeout)
    try:
        host, port = split_server_name(server_name)
        if port is not None:
            # With an explicit port the spec connects there directly, no well-known.
            rep.notes.append(f"{server_name} carries a port: no delegation is looked up")
            target = (host, port)
        else:
            try:
                r = c.get(host, 443, WELL_KNOWN_SERVER)
            except httpx.HTTPError as e:
                rep.set("WellKnownServer", False, f"GET https://{host}{WELL_KNOWN_SERVER}: "
                        f"{type(e).__name__}: {e}")
                return rep
            body = _json(r)
            m_server = body.get("m.server") if isinstance(body, dict) else None
            if not rep.set("WellKnownServer", r.status_code == 200 and isinstance(m_server, str),
                           f"HTTP {r.status_code}, body {r.text[:120]!r}: no m.server "
                           "(Synapse's serve_server_wellknown, routed to Synapse)"):
                return rep
            assert isinstance(m_server, str)
            rep.found["m.server"] = m_server
            try:
                d_host, d_port = split_server_name(m_server)
            except ValueError as e:
                rep.set("WellKnownServer", False, str(e))
                return rep
            if d_port is None:
                rep.set("WellKnownServer", False, f"m.server {m_server!r} has no port: other "
                        "servers would dial 8448, where the load balancer does not listen")
                return rep
            target = (d_host, d_port)
        try:
            r = c.get(*target, VERSION_PATH)
        except httpx.ConnectError as e:
            cert = "CERTIFICATE_VERIFY_FAILED" in str(e)
            rep.set("ValidCertificates", not cert,
                    f"{target[0]}:{target[1]}: the certificate does not verify for "
                    f"{target[0]}: {e}")
            if not cert:
                rep.problems.append(f"Version: {target[0]}:{target[1]}: {e}")
            return rep
        except httpx.HTTPError as e:
            rep.problems.append(f"Version: {target[0]}:{target[1]}: {type(e).__name__}: {e}")
            return rep
        rep.set("ValidCertificates", True)
        ver = _json(r)
        srv = ver.get("server") if isinstance(ver, dict) else None
        rep.set("Version", r.status_code == 200 and isinstance(srv, dict) and "name" in srv,
                f"HTTP {r.status_code}, body {r.text[:120]!r}")
        if isinstance(srv, dict):
            rep.found["server"] = f"{srv.get('name')} {srv.get('version')}"
        if federation_workers:
            who = r.headers.get(WORKER_HEADER, "")
            rep.found["version_answered_by"] = who
            rep.set("FederationInboundWorker", who in federation_workers,
                    f"{VERSION_PATH} answered by {who or 'nginx'}, the map names "
                    f"{', '.join(federation_workers)}")
        r = c.get(*target, KEYS_PATH)
        if r.status_code != 200:
            rep.set("MatchingServerName", False, f"{KEYS_PATH}: HTTP {r.status_code}")
        else:
            check_keys(server_name, _json(r), rep)
        _client_well_known(c, host, rep)
    finally:
        c.close()
    return rep


def _client_well_known(c: _Client, host: str, rep: Report) -> None:
    import httpx

    try:
        r = c.get(host, 443, WELL_KNOWN_CLIENT)
    except httpx.HTTPError as e:
        rep.set("WellKnownClient", False, f"{type(e).__name__}: {e}")
        return
    body = _json(r)
    hs = body.get("m.homeserver") if isinstance(body, dict) else None
    base = hs.get("base_url") if isinstance(hs, dict) else None
    if not rep.set("WellKnownClient", r.status_code == 200 and isinstance(base, str),
                   f"HTTP {r.status_code}, body {r.text[:120]!r}: no m.homeserver.base_url"):
        return
    assert isinstance(base, str)
    rep.found["base_url"] = base
    if r.headers.get("access-control-allow-origin") != "*":
        rep.notes.append(f"{WELL_KNOWN_CLIENT} has no 'Access-Control-Allow-Origin: *' "
                         "(the spec's SHOULD: web clients cannot read it)")
    try:
        v = c.get_url(base.rstrip("/") + "/_matrix/client/versions")
        versions = _json(v)
        ok = v.status_code == 200 and isinstance(versions, dict) and isinstance(
            versions.get("versions"), list)
        rep.set("WellKnownClient", ok, f"{base}: /_matrix/client/versions HTTP {v.status_code}")
    except httpx.HTTPError as e:
        rep.set("WellKnownClient", False, f"{base}: {type(e).__name__}: {e}")


class FederationInputs(Inputs):
    model_config = ConfigDict(extra="forbid")

    server_name: str
    # host:port -> address:port to dial instead (a rehearsal's edge); the name is kept for
    # Host, SNI and the certificate check. Empty: DNS, as other servers do.
    connect: dict[str, str] = Field(default_factory=dict)
    # A CA file to trust instead of the system's (the rehearsal's test CA).
    ca_file: str = ""
    # The layout (stack/workers.py: WorkerLayout): the version endpoint must be answered by
    # the federation inbound worker it names. Empty: not checked.
    layout: dict[str, Any] = Field(default_factory=dict)
    timeout: float = Field(default=10.0, gt=0, le=120)


class Federation(Action[FederationInputs]):
    """Another homeserver's view: delegation, certificate, version and signing keys."""

    name = "matrix.federation"
    Inputs = FederationInputs
    read_only = True

    def describe(self, inputs: FederationInputs) -> str:
        return f"federation self-check of {inputs.server_name} over its public name"

    def check(self, ctx: StepContext, inputs: FederationInputs) -> Check:
        return Check(in_sync=None, changes=[])

    def apply(self, ctx: StepContext, inputs: FederationInputs) -> Result:
        from ..stack.workers import ROUTES, WorkerLayout, serving

        workers: list[str] | None = None
        if inputs.layout:
            try:
                layout = WorkerLayout.model_validate(inputs.layout)
            except ValueError as e:
                raise ActionFailed(f"layout: {e}", retry=False) from e
            fed = next(r for r in ROUTES if r.name == "federation")
            workers = serving(fed, layout)
        try:
            split_server_name(inputs.server_name)
        except ValueError as e:
            raise ActionFailed(f"server_name: {e}", retry=False) from e
        rep = self_check(inputs.server_name, connect=inputs.connect,
                         verify=inputs.ca_file or True, timeout=inputs.timeout,
                         federation_workers=workers)
        for name, ok in rep.checks.items():
            ctx.log(f"[{'PASS' if ok else 'FAIL'}] {name}", "stdout" if ok else "stderr")
        for note in rep.notes:
            ctx.log(f"note: {note}")
        outputs = {"passed": rep.passed, "checks": rep.checks, **rep.found}
        if not rep.passed:
            raise ActionFailed(
                "federation self-check failed: " + "; ".join(rep.problems or ["no check ran"]),
                diagnosis="another homeserver could not reach or trust this one the way the "
                          "spec's server discovery does",
                fix="check serve_server_wellknown (synapse/workers.yaml), that nginx routes "
                    "/.well-known/matrix/server to Synapse, the certificate's names, and "
                    "that the federation workers are up (docker compose ps)")
        return Result(status="ok", outputs=outputs,
                      message=f"{len(rep.checks)} federation checks passed"
                              + (f" (m.server {rep.found['m.server']})"
                                 if "m.server" in rep.found else ""))
