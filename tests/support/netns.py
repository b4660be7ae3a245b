"""An "operator" network namespace behind a shaped link, for uplink-sensitive tests.

``OperatorNetns`` makes a network namespace with a veth pair to the root namespace (the
"instance" side, where the test's nginx, Synapse and sshd run) on a /30 of 10.213.0.0/16
that no interface of this machine uses yet, and limits the operator's egress (its
upload) with ``tc ... tbf``. Commands run inside it with ``ip netns exec``. Only the
addresses of this pair are ever contacted.

Names carry the creating process id (``emxop-<pid>-<hex>``): :func:`sweep_stale` deletes
the namespaces of processes that are gone (a killed test run), never those of a run that
is still alive (another engineer's, or a parallel worker). Deleting a namespace deletes
its veth pair with it.

Needs root (CAP_NET_ADMIN) and iproute2; :func:`unavailable` says why not, when not.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

PREFIX = "emxop-"
IP = shutil.which("ip") or "/usr/sbin/ip"
TC = shutil.which("tc") or "/usr/sbin/tc"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def unavailable() -> str | None:
    """Why a namespace cannot be made here (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN)"
    if not Path(IP).exists() or not Path(TC).exists():
        return "iproute2 (ip, tc) is missing"
    return None


def sweep_stale() -> list[str]:
    """Delete namespaces of this prefix whose creating process is gone; returns them."""
    gone: list[str] = []
    r = _ip("netns", "list", check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{PREFIX}(\d+)-[0-9a-f]+", name)
        if not m:
            continue
        if Path(f"/proc/{m.group(1)}").exists():
            continue  # a live run's (or our own): its finaliser removes it
        _ip("netns", "del", name, check=False)
        gone.append(name)
    return gone


def _used_subnets() -> set[str]:
    out = _ip("-o", "-4", "addr", "show", check=False).stdout
    return {m.group(1) for m in re.finditer(r"inet (10\.213\.\d+)\.\d+/", out)}


class OperatorNetns:
    """The operator's side of a shaped link: a namespace, a veth pair, a tbf qdisc."""

    def __init__(self, rate: str = "10mbit", burst: str = "32kbit",
                 latency: str = "400ms") -> None:
        tag = f"{random.getrandbits(24):06x}"
        self.name = f"{PREFIX}{os.getpid()}-{tag}"
        # Interface names are limited to 15 characters.
        self.host_if = f"emx{tag}h"
        self.op_if = f"emx{tag}o"
        self.rate, self.burst, self.latency = rate, burst, latency
        self.host_addr = ""
        self.op_addr = ""
        self.created = False

    def start(self) -> OperatorNetns:
        sweep_stale()
        used = _used_subnets()
        free = [n for n in range(1, 255) if f"10.213.{n}" not in used]
        if not free:
            raise RuntimeError("no free /30 in 10.213.0.0/16")
        n = random.choice(free)
        self.host_addr, self.op_addr = f"10.213.{n}.1", f"10.213.{n}.2"
        try:
            _ip("netns", "add", self.name)
            self.created = True
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.op_if)
            _ip("link", "set", self.op_if, "netns", self.name)
            _ip("addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            _ip("-n", self.name, "addr", "add", f"{self.op_addr}/30", "dev", self.op_if)
            _ip("-n", self.name, "link", "set", self.op_if, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
            r = subprocess.run([IP, "netns", "exec", self.name, TC, "qdisc", "add", "dev",
                                self.op_if, "root", "tbf", "rate", self.rate, "burst",
                                self.burst, "latency", self.latency],
                               capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise RuntimeError(f"tc tbf refused: {r.stderr.strip()}")
        except BaseException:
            self.stop()
            raise
        return self

    def argv(self, *cmd: str) -> list[str]:
        """``cmd`` run inside the operator's namespace."""
        return [IP, "netns", "exec", self.name, *cmd]

    def qdisc(self) -> str:
        return subprocess.run(self.argv(TC, "qdisc", "show", "dev", self.op_if),
                              capture_output=True, text=True, timeout=10).stdout.strip()

    def measure_uplink(self, nbytes: int = 4 * 1024 * 1024) -> float:
        """The operator's upload rate in Mbit/s: a TCP stream from the namespace to here."""
        srv = socket.socket()
        srv.bind((self.host_addr, 0))
        srv.listen(1)
        srv.settimeout(30)
        port = srv.getsockname()[1]
        got: dict[str, float] = {}

        def receive() -> None:
            conn, _ = srv.accept()
            n, t0 = 0, 0.0
            with conn:
                while True:
                    data = conn.recv(65536)
                    if not data:
                        break
                    if not t0:
                        t0 = time.monotonic()
                    n += len(data)
            got["n"], got["s"] = n, time.monotonic() - t0

        th = threading.Thread(target=receive, daemon=True)
        th.start()
        code = (f"import socket; s = socket.create_connection(('{self.host_addr}', {port}));"
                f"b = bytes(65536); [s.sendall(b) for _ in range({nbytes // 65536})]; s.close()")
        try:
            subprocess.run(self.argv("python3", "-c", code), check=True, timeout=120,
                           capture_output=True)
            th.join(60)
        finally:
            srv.close()
        return got["n"] * 8 / got["s"] / 1e6

    def stop(self) -> None:
        """Delete the namespace (its veth pair goes with it); safe to call twice."""
        if self.created:
            _ip("netns", "del", self.name, check=False)
            self.created = False
        # A veth left in the root namespace by a half-done start.
        with contextlib.suppress(Exception):
            if _ip("link", "show", self.host_if, check=False).returncode == 0:
                _ip("link", "del", self.host_if, check=False)

    def __enter__(self) -> OperatorNetns:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
