"""What the gate works with: the six checks by name, the settings, the outcome of each
check, what the checks created, the step's outputs; and the URL rules they share."""

from __future__ import annotations

import contextlib
import ipaddress
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import matrix_http as mh
from .diagnoses import Cause

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



@dataclass
class Outcome:
    """One check's result, as noted to the engine (``gate.check``) and logged."""

    name: str
    title: str
    status: str = "skipped"  # passed | failed | skipped
    duration: float = 0.0
    cause: Cause | None = None
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
class GateState:
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



def summary(outcomes: list[Outcome]) -> dict[str, Any]:
    """The step's outputs: each check's status and timing (small, JSON, no secrets)."""
    return {
        "passed": all(o.passed for o in outcomes),
        "checks": {o.name: o.status for o in outcomes},
        "durations": {o.name: round(o.duration, 3) for o in outcomes},
        "failed": [o.name for o in outcomes if o.status == "failed"],
    }
