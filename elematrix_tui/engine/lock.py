"""One run at a time per deployment: an flock on ``<deployment>/lock``.

The kernel releases an flock when its process dies (SIGKILL included), so a crashed run
never leaves a stale lock; the file's text only says who holds it, for the message.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from .errors import LockedError


class DeploymentLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, deployment: str, what: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.holder()
            who = (f"pid {holder.get('pid')} on {holder.get('host')} (user {holder.get('user')}, "
                   f"{holder.get('what')}, since {holder.get('since')})") if holder else \
                "another process"
            raise LockedError(
                f"deployment {deployment!r} is in use by {who}. Wait for that run to finish, "
                f"or stop it (its state is saved) and then run 'elematrix resume --deployment "
                f"{deployment}'.") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "user": _user(),
                "what": what, "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def is_held(self) -> bool:
        """Whether some live process holds the lock now (a crashed holder does not)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops our probe lock too
        return False

    def holder(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())
