"""The real ``elematrix`` command in a real terminal (tmux): the start screen and a short run.

Proof that the app works outside the test harness: keys go through tmux, the screen is
read back with ``capture-pane``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from elematrix_tui.ui import catalog
from tests.conftest import require_binary

from .conftest import DATA


class Tmux:
    """One session on a private tmux server (-L): the test never touches the user's tmux."""

    def __init__(self, tmux: str, name: str) -> None:
        self.base = [tmux, "-L", name]
        self.name = name

    def run(self, *args: str) -> str:
        return subprocess.run([*self.base, *args], capture_output=True, text=True,
                              check=False).stdout

    def capture(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.name)

    def keys(self, *keys: str) -> None:
        for k in keys:
            self.run("send-keys", "-t", self.name, k)
            time.sleep(0.15)

    def wait_for(self, text: str, timeout: float = 15.0) -> str:
        end = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < end:
            screen = self.capture()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared; screen:\n{screen}")


@pytest.fixture
def tmux_app(state_dir: Path, tmp_path: Path, elematrix: str) -> Iterator[tuple[Tmux, Path]]:
    tmux = require_binary("tmux")
    t = Tmux(tmux, f"elematrix-test-{uuid.uuid4().hex[:8]}")
    exit_file = tmp_path / "exit-code"
    names = ("ELEMATRIX_STATE_DIR", "ELEMATRIX_CONFIG_DIR", "ELEMATRIX_SECRET_STORE",
             "ELEMATRIX_RUNBOOK_DIR", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
             "AWS_ENDPOINT_URL")
    exports = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in names)
    # Textual draws on stderr: leave it on the terminal. The pane stays open after exit
    # (sleep) so a crash's traceback can be read in the failure message.
    cmd = (f"env {exports} TERM=xterm-256color {shlex.quote(elematrix)}; "
           f"echo $? > {shlex.quote(str(exit_file))}; sleep 30")
    subprocess.run([*t.base, "new-session", "-d", "-s", t.name, "-x", "80", "-y", "24", cmd],
                   check=True)
    try:
        yield t, exit_file
    finally:
        t.run("kill-server")


@pytest.fixture
def prepared(state_dir: Path) -> None:
    catalog.write_settings(state_dir, "demo", {"runbook_name": "ui-long",
                                               "runbook_path": str(DATA / "ui-long.yaml"),
                                               "params": {"wait": 0}})


def test_start_screen_and_short_run_in_a_real_terminal(prepared: None,
                                                       tmux_app: tuple[Tmux, Path]) -> None:
    t, exit_file = tmux_app
    t.wait_for("never run")  # the deployments table is filled
    screen = t.wait_for("n New deployment")
    assert "elematrix · deploy Matrix/Element" in screen
    assert "demo" in screen and "never run" in screen
    assert "ui-flow" in screen, screen
    t.keys("Enter")
    t.wait_for("Wait for something slow")
    t.wait_for("r Run phase")
    t.keys("r")
    screen = t.wait_for("passed · run")
    assert "✓ Finish" in screen
    assert "quick part done" in screen  # live log pane
    t.keys("q")
    end = time.monotonic() + 10
    while not exit_file.exists() and time.monotonic() < end:
        time.sleep(0.1)
    assert exit_file.read_text().strip() == "0"
