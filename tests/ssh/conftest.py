"""Fixtures for the ssh.* tests: a real OpenSSH sshd on loopback (tests/support/sshd.py)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from elematrix_tui.engine.standalone import StandaloneContext
from tests.support.sshd import SSHD, SshServer


def _require_sshd() -> None:
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        msg = f"{SSHD} / ssh-keygen missing: apt-get install -y openssh-server openssh-client"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)  # in CI a missing service is a failure, never a skip
        pytest.skip(msg)


@pytest.fixture(scope="session")
def sshd() -> Iterator[SshServer]:
    """One sshd for the tests that do not break connections."""
    _require_sshd()
    with SshServer() as srv:
        yield srv


@pytest.fixture
def own_sshd() -> Iterator[SshServer]:
    """A fresh sshd for tests that kill or freeze its session processes."""
    _require_sshd()
    with SshServer() as srv:
        yield srv


class TimedContext(StandaloneContext):
    """A StandaloneContext that also records when each log line arrived."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.log_times: list[tuple[float, str, str]] = []

    def log(self, line: str, stream: str = "stdout") -> None:
        self.log_times.append((time.monotonic(), stream, line))
        super().log(line, stream)


class Operator:
    """Questions that accept (or refuse) the offered host key, and remember what was asked."""

    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.prompts: list[tuple[str, list[str]]] = []

    def confirm(self, step_id: str, title: str, changes: list[str], *, destructive: bool,
                type_to_confirm: str | None) -> bool:
        return True

    def approve(self, step_id: str, prompt: str) -> tuple[bool, str, str]:
        return True, "test", ""

    def secret(self, name: str, help: str) -> str:
        raise RuntimeError("no secrets here")

    def choose(self, step_id: str, prompt: str, options: list[str]) -> str | None:
        self.prompts.append((prompt, options))
        return options[0] if self.accept else None


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[TimedContext]:
    c = TimedContext(deployment_dir=tmp_path / "deployment")
    c.deployment_dir.mkdir()
    yield c
    c.close()


def later(delay: float, fn: Any, *args: Any) -> threading.Thread:
    """Run ``fn(*args)`` after ``delay`` seconds in a thread (to break things mid-command)."""
    def go() -> None:
        time.sleep(delay)
        fn(*args)
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t
