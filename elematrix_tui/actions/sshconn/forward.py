"""A local port forwarded to a host-side port over a connection (``ssh.forward``)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from typing import Any

from .base import Connection


class Forwarder:
    """A listening port on 127.0.0.1 whose connections are tunnelled to a host-side port.

    Each accepted connection gets a direct-tcpip channel (or, for ``local``, a plain TCP
    connection) and a thread copying bytes both ways. The connection is owned: closing
    the forwarder closes it.
    """

    def __init__(self, conn: Connection, remote_host: str, remote_port: int,
                 local_port: int = 0, bind: str = "127.0.0.1") -> None:
        self.conn = conn
        self.remote_host = remote_host
        self.remote_port = remote_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind((bind, local_port))
        except OSError:
            self.listener.close()
            raise
        self.listener.listen(64)
        # accept() is not woken by close() from another thread on Linux: poll instead.
        self.listener.settimeout(0.5)
        self.local_port = int(self.listener.getsockname()[1])
        self.errors: list[str] = []
        self.connections = 0
        self._stop = threading.Event()
        self._open: set[Any] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"ssh-forward-{self.local_port}")
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, addr = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # listener closed
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections += 1
            threading.Thread(target=self._pump, args=(sock, addr), daemon=True,
                             name=f"ssh-forward-{self.local_port}-{self.connections}").start()

    def _pump(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        try:
            chan = self.conn.open_tunnel(self.remote_host, self.remote_port, addr)
        except Exception as e:
            self.errors.append(f"{e.__class__.__name__}: {e}")
            sock.close()
            return
        with self._lock:
            self._open.update((sock, chan))
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([sock, chan], [], [], 0.5)
                if sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        break
                    chan.sendall(data)
                if chan in ready:
                    data = chan.recv(65536)
                    if not data:
                        break
                    sock.sendall(data)
        except OSError:
            pass  # either side went away: close both
        finally:
            with self._lock:
                self._open.discard(sock)
                self._open.discard(chan)
            for s in (chan, sock):
                with contextlib.suppress(Exception):
                    s.close()

    def probe(self) -> None:
        """Open (and close) one tunnel now, so a dead remote port fails the step, not later."""
        chan = self.conn.open_tunnel(self.remote_host, self.remote_port, ("127.0.0.1", 0))
        with contextlib.suppress(Exception):
            chan.close()

    def close(self) -> None:
        self._stop.set()
        # shutdown() stops the listening at once (close() alone waits for the blocked accept).
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.listener.close()
        self._thread.join(timeout=2)
        with self._lock:
            pairs = list(self._open)
        for s in pairs:
            with contextlib.suppress(Exception):
                s.close()
        self.conn.close()
