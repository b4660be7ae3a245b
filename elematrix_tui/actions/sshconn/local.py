"""``host: local``: the connection interface on this machine (``/bin/sh -c``, file
copies), so runbooks can be rehearsed without an SSH server."""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from .base import ExecResult, LineSink, OutputTail, deadline_of
from .target import Target


class LocalConnection:
    """The same interface on this machine: ``/bin/sh -c`` and file copies."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.server_fingerprint: str | None = None

    def exec(self, command: str, *, timeout: float | None, cancel: threading.Event | None,
             sink: LineSink, stdin: bytes | None = None) -> ExecResult:
        start = time.monotonic()
        deadline = deadline_of(timeout)
        out, err = OutputTail("stdout", sink), OutputTail("stderr", sink)
        proc = subprocess.Popen(["/bin/sh", "-c", command],
                                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)  # own group: a timeout kills it all
        if stdin and proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(stdin)
            proc.stdin.close()
        assert proc.stdout is not None and proc.stderr is not None
        streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
        timed_out = cancelled = False
        while streams:
            if deadline is not None and time.monotonic() >= deadline:
                timed_out = True
                break
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            wait = 0.25 if deadline is None else max(0.0, min(0.25, deadline - time.monotonic()))
            ready, _, _ = select.select(list(streams), [], [], wait)
            for fd in ready:
                data = os.read(fd, 65536)
                if data:
                    streams[fd].feed(data)
                else:
                    del streams[fd]
        if timed_out or cancelled:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        return ExecResult(exit_code=code if code >= 0 else -1, stdout=out.finish(),
                          stderr=err.finish(), duration=time.monotonic() - start,
                          timed_out=timed_out, cancelled=cancelled,
                          stopped=timed_out or cancelled)

    def put_file(self, local: Path, remote: str, mode: int) -> None:
        dest = Path(remote)
        tmp = dest.with_name(f".{dest.name}.elematrix-{secrets.token_hex(4)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as f, local.open("rb") as src:
                os.fchmod(f.fileno(), mode)  # umask must not weaken nor widen it
                shutil.copyfileobj(src, f, 256 * 1024)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def chmod(self, remote: str, mode: int) -> None:
        os.chmod(remote, mode)

    def open_tunnel(self, remote_host: str, remote_port: int, origin: tuple[str, int]) -> Any:
        return socket.create_connection((remote_host, remote_port), timeout=10)

    def is_alive(self) -> bool:
        return True

    def close(self) -> None:
        pass
