"""A minimal DNS stub resolver (RFC 1035 over UDP) for "do the records the operator was
asked to create resolve yet?".

The standard library resolves addresses only (``getaddrinfo``), not CNAMEs, and no DNS
library is a dependency; a question and its answer section are all this needs. The name
server is an input (``host:port``), so tests point it at a server on 127.0.0.1; empty
means the first ``nameserver`` of ``/etc/resolv.conf``, as the system resolver would ask.
"""

from __future__ import annotations

import secrets
import socket
import struct
from pathlib import Path

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "TXT": 16, "AAAA": 28}
_NAMES = {v: k for k, v in TYPES.items()}


class DnsError(RuntimeError):
    """The name server did not answer, or answered something we cannot read."""


def system_nameserver(resolv_conf: Path = Path("/etc/resolv.conf")) -> str:
    """The first ``nameserver`` of resolv.conf as ``host:53``."""
    try:
        for line in resolv_conf.read_text("utf-8").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                return f"[{parts[1]}]:53" if ":" in parts[1] else f"{parts[1]}:53"
    except OSError as e:
        raise DnsError(f"cannot read {resolv_conf}: {e}") from e
    raise DnsError(f"no nameserver in {resolv_conf}")


def split_server(server: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` -> (host, port)."""
    if server.startswith("["):
        host, _, port = server[1:].partition("]:")
    else:
        host, _, port = server.rpartition(":")
    if not host or not port.isdigit():
        raise DnsError(f"name server {server!r} is not host:port")
    return host, int(port)


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna") if label else b""
        if not raw or len(raw) > 63:
            raise DnsError(f"{name!r} is not a DNS name")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def query_packet(qid: int, name: str, rtype: str) -> bytes:
    """A recursive query for one name and type."""
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + encode_name(name) + \
        struct.pack(">HH", TYPES[rtype], 1)


def read_name(msg: bytes, pos: int, depth: int = 0) -> tuple[str, int]:
    """A possibly compressed name at ``pos``; returns (name, position after it)."""
    labels: list[str] = []
    while True:
        if pos >= len(msg) or depth > 20:
            raise DnsError("truncated or looping name")
        n = msg[pos]
        if n & 0xC0 == 0xC0:
            ptr = struct.unpack(">H", msg[pos:pos + 2])[0] & 0x3FFF
            rest, _ = read_name(msg, ptr, depth + 1)
            return ".".join([*labels, rest]) if labels else rest, pos + 2
        if n == 0:
            return ".".join(labels) + ".", pos + 1
        labels.append(msg[pos + 1:pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n


def parse_answers(msg: bytes, qid: int) -> list[tuple[str, str, str]]:
    """(name, type, value) of each answer record (CNAME/NS values as names)."""
    if len(msg) < 12:
        raise DnsError("short answer")
    rid, flags, qd, an, _ns, _ar = struct.unpack(">HHHHHH", msg[:12])
    if rid != qid:
        raise DnsError("answer to another query")
    rcode = flags & 0xF
    if rcode == 3:  # NXDOMAIN: the name does not exist (yet)
        return []
    if rcode != 0:
        raise DnsError(f"name server answered rcode {rcode}")
    pos = 12
    for _ in range(qd):
        _, pos = read_name(msg, pos)
        pos += 4
    out = []
    for _ in range(an):
        name, pos = read_name(msg, pos)
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", msg[pos:pos + 10])
        pos += 10
        rdata = msg[pos:pos + rdlen]
        tname = _NAMES.get(rtype, str(rtype))
        if tname in ("CNAME", "NS"):
            value, _ = read_name(msg, pos)
        elif tname == "A" and rdlen == 4:
            value = socket.inet_ntoa(rdata)
        elif tname == "AAAA" and rdlen == 16:
            value = socket.inet_ntop(socket.AF_INET6, rdata)
        else:
            value = rdata.hex()
        out.append((name.lower(), tname, value.lower()))
        pos += rdlen
    return out


def resolve(name: str, rtype: str, server: str = "", timeout: float = 3.0
            ) -> list[tuple[str, str, str]]:
    """Ask ``server`` (empty: the system's first name server) for ``name``/``rtype``."""
    host, port = split_server(server or system_nameserver())
    qid = secrets.randbelow(0xFFFF)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(query_packet(qid, name, rtype), (host, port))
            data, _ = s.recvfrom(4096)
        except OSError as e:
            raise DnsError(f"no answer from {host}:{port}: {e}") from e
    return parse_answers(data, qid)
