"""A tiny recording HTTP proxy on 127.0.0.1 (CONNECT and absolute-URI forwarding).

It records the target of every connection it is asked to make (``seen``: "host:port")
and the request lines it got. Like a real proxy elsewhere on the network, it can never
reach the operator's own loopback: a loopback target is recorded and refused with 502
(a stand-in that reached it would be kinder than the real thing). Only addresses the
test gives it are contacted (the test's own stack).
"""

from __future__ import annotations

import ipaddress
import select
import socket
import socketserver
import threading
import urllib.parse


class _Handler(socketserver.StreamRequestHandler):
    server: RecordingProxy
    # Unbuffered: nothing after the request head may sit in a buffer the pipe misses.
    rbufsize = 0

    def handle(self) -> None:
        line = self.rfile.readline(8192).decode("latin-1")
        method, target, _ = [*line.split(" ", 2), "", ""][:3]
        headers = b""
        while True:
            h = self.rfile.readline(8192)
            headers += h
            if h in (b"\r\n", b"\n", b""):
                break
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
        else:
            u = urllib.parse.urlsplit(target)
            host, port = u.hostname or "", str(u.port or 80)
        host = host.strip("[]")
        with self.server.lock:
            self.server.seen.append(f"{host}:{port}")
            self.server.lines.append(line.strip())
        try:
            refused = ipaddress.ip_address(host).is_loopback
        except ValueError:
            refused = host == "localhost"
        if refused:
            self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        try:
            up = socket.create_connection((host, int(port)), timeout=10)
        except OSError:
            self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        with up:
            if method == "CONNECT":
                self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                # Forwarding: the first request as sent (absolute-form; nginx accepts it),
                # then both directions as bytes.
                up.sendall(line.encode("latin-1") + headers)
            self.wfile.flush()
            _pipe(self.connection, up)


def _pipe(a: socket.socket, b: socket.socket) -> None:
    while True:
        ready, _, _ = select.select([a, b], [], [], 30)
        if not ready:
            return
        for s in ready:
            data = s.recv(65536)
            if not data:
                return
            (b if s is a else a).sendall(data)


class RecordingProxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[str] = []
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
