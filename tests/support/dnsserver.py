"""A tiny authoritative DNS server on 127.0.0.1 (UDP, a free port) for the manual-DNS path:
it answers the records a test "creates at its DNS provider" and NXDOMAIN for the rest.

Stricter than a real resolver in one way that matters: it only knows what was added, so a
record the operator has not created yet never resolves by accident."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from elematrix_tui.actions.dns_probe import TYPES, encode_name, read_name


class DnsServer:
    def __init__(self) -> None:
        self.records: dict[tuple[str, int], list[str]] = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self.queries = 0
        # Names asked for so far (lower-case, with the final dot).
        self.asked: set[str] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add(self, name: str, rtype: str, value: str) -> None:
        key = (name.rstrip(".").lower() + ".", TYPES[rtype])
        self.records.setdefault(key, []).append(value)

    def _answer(self, data: bytes) -> bytes:
        qid = struct.unpack(">H", data[:2])[0]
        name, pos = read_name(data, 12)
        self.asked.add(name.lower())
        qtype, _qclass = struct.unpack(">HH", data[pos:pos + 4])
        question = data[12:pos + 4]
        values = self.records.get((name.lower(), qtype), [])
        rcode = 0 if values else 3
        out = struct.pack(">HHHHHH", qid, 0x8180 | rcode, 1, len(values), 0, 0) + question
        for v in values:
            if qtype in (TYPES["CNAME"], TYPES["NS"]):
                rdata = encode_name(v)
            elif qtype == TYPES["A"]:
                rdata = socket.inet_aton(v)
            else:
                rdata = bytes([len(v)]) + v.encode()
            out += encode_name(name) + struct.pack(">HHIH", qtype, 1, 60, len(rdata)) + rdata
        return out

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.queries += 1
            try:
                self.sock.sendto(self._answer(data), peer)
            except Exception:  # a malformed query gets no answer, like a timeout
                continue

    def start(self) -> DnsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@contextmanager
def dns_server() -> Iterator[DnsServer]:
    s = DnsServer().start()
    try:
        yield s
    finally:
        s.stop()
