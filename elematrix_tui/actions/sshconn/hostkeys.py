"""Host key fingerprints: parsing the pins a step or the console output gives, the
fingerprint of a key, and what a mismatch means for the operator."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import TYPE_CHECKING

from ...engine.action import ActionFailed
from .target import Target

if TYPE_CHECKING:
    import paramiko

FP_RE = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
# The markers EC2/cloud-init print around the fingerprints in the console output.
BEGIN_KEYS = "-----BEGIN SSH HOST KEY FINGERPRINTS-----"
END_KEYS = "-----END SSH HOST KEY FINGERPRINTS-----"
BLOCK_RE = re.compile(re.escape(BEGIN_KEYS) + "(.*?)" + re.escape(END_KEYS), re.S)
# Deployment meta where the infra phase (aws.wait host_keys_of) keeps the console's pins.
INFRA_HOST_KEYS = "ssh.host_key_fingerprints"


def parse_fingerprints(value: str | list[str] | None) -> list[str]:
    """``SHA256:...`` fingerprints from a list of them, or from the raw EC2 console text.

    The console output holds other text (and a ``BEGIN SSH HOST KEY KEYS`` block of full
    public keys): when the fingerprint block is present only its lines are read.
    """
    if value is None:
        return []
    text = "\n".join(value) if isinstance(value, list) else value
    m = BLOCK_RE.search(text)
    if m:
        text = m.group(1)
    seen: list[str] = []
    for fp in FP_RE.findall(text):
        if fp not in seen:
            seen.append(fp)
    if not seen and text.strip():
        raise ActionFailed(
            "host_key_fingerprints holds no SHA256 fingerprint",
            diagnosis=f"Expected 'SHA256:' followed by 43 base64 characters, got {text[:120]!r}.",
            fix="Pass the fingerprints the infra phase read from the console output, e.g. "
                "'SHA256:abc...', or the whole BEGIN/END SSH HOST KEY FINGERPRINTS block.")
    return seen


def key_fingerprint(key: paramiko.PKey) -> str:
    """The OpenSSH SHA256 fingerprint of a public key (as ``ssh-keygen -l`` prints it)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class HostKeyProblem(Exception):
    """The server's host key is not one of the pinned ones (or nothing is pinned yet)."""

    def __init__(self, presented: list[tuple[str, str]], pins: list[str]) -> None:
        super().__init__("host key not trusted")
        self.presented = presented  # (key type, fingerprint) for every type we were shown
        self.pins = pins


def key_algorithms(negotiated: str) -> list[str]:
    # Disabling one host key type makes the server present another on the next try.
    if "rsa" in negotiated:
        return ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
    return [negotiated]



def host_key_failure(target: Target, e: HostKeyProblem,
                      source: str = "the step") -> ActionFailed:
    shown = ", ".join(f"{fp} ({kt})" for kt, fp in e.presented) or "none"
    pins = ", ".join(e.pins) + f" (from {source})"
    return ActionFailed(
        f"host key of {target} does not match the pinned fingerprints",
        diagnosis=f"The server presented {shown}; the expected fingerprints are {pins}. "
                  "Either the instance was replaced (new host keys), the address now belongs to "
                  "another machine, or something is intercepting the connection. "
                  "The connection was closed before logging in.",
        fix="Compare with the instance console output (aws ec2 get-console-output, between "
            "BEGIN/END SSH HOST KEY FINGERPRINTS). If the instance was legitimately replaced, "
            "re-run the infra phase so the new fingerprints are read, or pass them as "
            "host_key_fingerprints.")
