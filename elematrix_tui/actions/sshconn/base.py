"""What every connection (SSH or local) shares: the result of a command, the bounded
output tail, the :class:`Connection` interface the actions use."""

from __future__ import annotations

import codecs
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .target import Target

# Outputs keep the tail of stdout/stderr: enough for a diagnosis, small enough to journal.
OUTPUT_CAP = 64 * 1024
# Names of environment variables a remote command may be given.
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

LineSink = Callable[[str, str], None]


@dataclass
class ExecResult:
    """What one command did."""

    exit_code: int
    stdout: str
    stderr: str
    duration: float
    # The connection died while the command ran: it may or may not have finished.
    dropped: bool = False
    timed_out: bool = False
    cancelled: bool = False
    # After a timeout or cancel: the command was signalled and ended (not left running).
    stopped: bool = False


class OutputTail:
    """Splits a byte stream into lines for the log, keeps the last ``cap`` characters."""

    def __init__(self, stream: str, sink: LineSink, cap: int = OUTPUT_CAP) -> None:
        self.stream = stream
        self.sink = sink
        self.cap = cap
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.partial = ""
        self.kept: deque[str] = deque()
        self.kept_len = 0

    def feed(self, data: bytes) -> None:
        text = self.partial + self.decoder.decode(data)
        *complete, self.partial = text.split("\n")
        for line in complete:
            self._line(line)
        # A line without newline that grows huge (progress bars) is still bounded.
        if len(self.partial) > self.cap:
            self._line(self.partial)
            self.partial = ""

    def _line(self, line: str) -> None:
        line = line.rstrip("\r")
        self.sink(line, self.stream)
        self.kept.append(line)
        self.kept_len += len(line) + 1
        while self.kept_len > self.cap and len(self.kept) > 1:
            self.kept_len -= len(self.kept.popleft()) + 1

    def finish(self) -> str:
        self.partial += self.decoder.decode(b"", final=True)
        if self.partial:
            self._line(self.partial)
            self.partial = ""
        return "\n".join(self.kept) + ("\n" if self.kept else "")


class Connection(Protocol):
    """What the actions need from a connection (SSH or local)."""

    target: Target

    def exec(self, command: str, *, timeout: float | None, cancel: threading.Event | None,
             sink: LineSink, stdin: bytes | None = None) -> ExecResult: ...

    def put_file(self, local: Path, remote: str, mode: int) -> None: ...

    def chmod(self, remote: str, mode: int) -> None: ...

    def open_tunnel(self, remote_host: str, remote_port: int,
                    origin: tuple[str, int]) -> Any: ...

    def is_alive(self) -> bool: ...

    def close(self) -> None: ...


def deadline_of(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout



class ChannelOpenError(Exception):
    """The command could not be started (nothing ran): safe to reconnect and retry."""
