"""Secrets: kept in the OS keyring, never in the journal, logs, plans or reports.

Service ``elematrix``, user name ``<deployment>/<name>``. A headless server often has
no usable keyring backend; then elematrix says so and, only if the operator opts in
with ``ELEMATRIX_SECRET_STORE=file``, keeps secrets in a 0600 JSON file in the user's
config directory (``~/.config/elematrix/secrets.json``) — deliberately outside the
state directory, which the operator may copy or attach to a ticket.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InputError
from .paths import config_dir

SERVICE = "elematrix"
MASK = "********"


class SecretStore:
    """Get and set secrets of deployments. Backend: keyring, or the opt-in 0600 file."""

    def __init__(self, backend: str | None = None) -> None:
        choice = (backend or os.environ.get("ELEMATRIX_SECRET_STORE") or "auto").lower()
        self._lock = threading.Lock()
        self._file: Path | None = None
        self._keyring: Any = None
        if choice == "file":
            self._file = config_dir() / "secrets.json"
        elif choice in ("auto", "keyring"):
            kr = _usable_keyring()
            if kr is None:
                raise InputError(
                    "no usable OS keyring backend on this machine (common on headless servers), "
                    "and elematrix keeps secrets only in a keyring. Either install and unlock a "
                    "keyring (e.g. gnome-keyring or the 'keyrings.alt' package), or opt in to a "
                    "0600 file in your config directory: export ELEMATRIX_SECRET_STORE=file "
                    f"(it is written to {config_dir() / 'secrets.json'})")
            self._keyring = kr
        else:
            raise InputError(f"ELEMATRIX_SECRET_STORE={choice!r}: use 'keyring' or 'file'")

    @property
    def description(self) -> str:
        if self._file is not None:
            return f"file {self._file} (0600, opted in with ELEMATRIX_SECRET_STORE=file)"
        return f"keyring ({type(self._keyring).__name__})"

    def get(self, deployment: str, name: str) -> str | None:
        if self._file is not None:
            return self._read_file().get(deployment, {}).get(name)
        value = self._keyring.get_password(SERVICE, f"{deployment}/{name}")
        return value if isinstance(value, str) else None

    def names(self, deployment: str) -> list[str]:
        """The secret names stored for a deployment, where the backend can list them (the
        file store can; a keyring cannot, and the journal's record of names serves)."""
        if self._file is not None:
            return sorted(self._read_file().get(deployment, {}))
        return []

    def set(self, deployment: str, name: str, value: str) -> None:
        if self._file is not None:
            with self._locked():
                data = self._read_file()
                data.setdefault(deployment, {})[name] = value
                self._write_file(data)
            return
        self._keyring.set_password(SERVICE, f"{deployment}/{name}", value)

    def delete(self, deployment: str, name: str) -> None:
        if self._file is not None:
            with self._locked():
                data = self._read_file()
                data.get(deployment, {}).pop(name, None)
                self._write_file(data)
            return
        try:
            self._keyring.delete_password(SERVICE, f"{deployment}/{name}")
        except Exception:  # absent already: deleting is idempotent
            pass

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Read-modify-write under an exclusive flock shared by every elematrix process.

        Runs of different deployments are separate processes sharing this one file; a
        thread lock alone let two of them interleave and lose each other's secrets. The
        lock is a separate file that is never replaced, so its inode stays the one locked.
        """
        assert self._file is not None
        self._file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._lock:
            fd = os.open(self._file.with_name(self._file.name + ".lock"),
                         os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing drops the flock

    def _read_file(self) -> dict[str, dict[str, str]]:
        assert self._file is not None
        try:
            data = json.loads(self._file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise InputError(f"{self._file}: cannot read the secrets file ({e}); it is left "
                             "as it is. Restore it from a backup, or move it away to start "
                             "an empty store (every secret in it is then lost)") from None
        # Anything but {deployment: {name: value}} is not ours to overwrite.
        if not isinstance(data, dict) or not all(
                isinstance(v, dict) and all(isinstance(x, str) for x in v.values())
                for v in data.values()):
            raise InputError(f"{self._file}: the secrets file is not a mapping of deployments "
                             "to secrets; it is left as it is. Restore it from a backup, or "
                             "move it away to start an empty store")
        return data

    def _write_file(self, data: dict[str, dict[str, str]]) -> None:
        assert self._file is not None
        folder = self._file.parent
        # A unique temporary name per writer (two writers never share one), fsynced before
        # the atomic rename, then the directory fsynced so the rename itself is durable.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{self._file.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _usable_keyring() -> Any:
    try:
        import keyring
        from keyring.backends import fail
    except Exception:
        return None
    kr = keyring.get_keyring()
    if isinstance(kr, fail.Keyring):
        return None
    try:
        chain = getattr(kr, "backends", None)
        if chain is not None and not chain:
            return None
        if getattr(kr, "priority", 1) <= 0:
            return None
    except Exception:
        return None
    return kr


# Secrets at least this long are masked wherever they appear; shorter ones only where they
# stand as a whole word. Masking every "abc" would mask ordinary words, make logs unreadable
# and give the value away by elimination; a short secret is printed as a word (key=value,
# quoted, alone on a line), and that is where it is masked.
SHORT_SECRET = 6


class Redactor:
    """Replaces every known secret value in text. Longest first, so no secret leaks partly."""

    def __init__(self) -> None:
        self._values: list[str] = []
        self._short: list[str] = []
        self._short_re: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def add(self, value: str | None) -> None:
        if not value or value in self._values or value in self._short:
            return
        with self._lock:
            if len(value) >= SHORT_SECRET:
                self._values = sorted([*self._values, value], key=len, reverse=True)
                return
            self._short = sorted([*self._short, value], key=len, reverse=True)
            self._short_re = re.compile(
                r"(?<![A-Za-z0-9])(?:" + "|".join(re.escape(v) for v in self._short)
                + r")(?![A-Za-z0-9])")

    def __call__(self, text: str) -> str:
        for v in self._values:
            if v in text:
                text = text.replace(v, MASK)
        if self._short_re is not None:
            text = self._short_re.sub(MASK, text)
        return text

    def value(self, obj: Any) -> Any:
        """Redact inside nested JSON-like data."""
        if not self._values and self._short_re is None:
            return obj
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, dict):
            return {k: self.value(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.value(v) for v in obj]
        return obj
