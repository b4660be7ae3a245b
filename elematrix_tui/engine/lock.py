"""One run at a time per deployment: an flock on the deployment directory and on
``<deployment>/lock``.

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
from types import TracebackType
from typing import Any, NoReturn

from .errors import LockedError

# Attempts to lock the file at the path when it is replaced between open and flock.
_INODE_RETRIES = 5


class DeploymentLock:
    """The lock of one deployment; ``with lock.acquire(...):`` releases it on any exit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._dir_fd: int | None = None

    def __enter__(self) -> DeploymentLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

    def acquire(self, deployment: str, what: str) -> DeploymentLock:
        """Take the deployment's lock or raise LockedError naming who holds it.

        Two locks: the deployment directory itself, which cannot be deleted under a run
        while it holds the journal (an operator who deletes the ``lock`` file no longer
        lets a second run in), and the ``lock`` file, which says who holds it. After the
        file's flock, the inode locked must still be the one at the path (a file deleted
        and re-created between our open and our flock is not a lock): else retry.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        dir_fd = os.open(self.path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(dir_fd)
            self._refuse(deployment)
        fd = -1
        for _ in range(_INODE_RETRIES):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                os.close(dir_fd)
                self._refuse(deployment)
            if _same_file(fd, self.path):
                break
            os.close(fd)  # locked a file that is no longer at the path
            fd = -1
        if fd < 0:
            os.close(dir_fd)
            raise LockedError(f"deployment {deployment!r}: its lock file {self.path} keeps "
                              f"being replaced while elematrix takes it; is another program "
                              f"deleting it? Try again when it has stopped.")
        info = {"pid": os.getpid(), "host": socket.gethostname(), "user": _user(),
                "what": what, "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        self._dir_fd = dir_fd
        return self

    def _refuse(self, deployment: str) -> NoReturn:
        holder = self.holder()
        who = (f"pid {holder.get('pid')} on {holder.get('host')} (user {holder.get('user')}, "
               f"{holder.get('what')}, since {holder.get('since')})") if holder else \
            "another process"
        raise LockedError(
            f"deployment {deployment!r} is in use by {who}. Wait for that run to finish, "
            f"or stop it (its state is saved) and then run 'elematrix resume --deployment "
            f"{deployment}'.") from None

    def is_held(self) -> bool:
        """Whether some live process holds the lock now (a crashed holder does not)."""
        for target in (self.path.parent, self.path):
            try:
                fd = os.open(target, os.O_RDONLY)
            except (FileNotFoundError, NotADirectoryError):
                continue
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
        if self._dir_fd is not None:
            os.close(self._dir_fd)  # closing drops the directory's flock
            self._dir_fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (st.st_dev, st.st_ino)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())
