"""`elematrix practice` in a real terminal (tmux) on a machine without a Docker engine:
the banner says so before anything runs, infra and configure run for real against the
embedded emulator, and the deploy phase is refused with the explanation."""

from __future__ import annotations

import os
import shlex
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

from tests.conftest import require, require_binary
from tests.ui.test_tmux import Tmux


def _passed_gates(state_dir: Path) -> set[str]:
    db = state_dir / "deployments" / "practice" / "journal.sqlite"
    if not db.exists():
        return set()
    con = sqlite3.connect(db)
    try:
        return {r[0] for r in con.execute("SELECT phase_id FROM gates")}
    except sqlite3.OperationalError:
        return set()
    finally:
        con.close()


def _run_phase(phase: str, state_dir: Path, t: Tmux, timeout: float = 120) -> None:
    """Press `r` as an operator would, answer confirmations, until the phase's gates pass.

    `r` is pressed again if nothing started: a key that arrives while the screen is still
    taking in the previous run's end is (rightly) not queued as a new run."""
    end = time.monotonic() + timeout
    last_press = 0.0
    while time.monotonic() < end:
        if phase in _passed_gates(state_dir):
            return
        screen = t.capture()
        if "Go ahead" in screen:  # a confirmation: move to "Go ahead" and press it
            t.keys("BTab", "Enter")
        elif " running " not in screen and time.monotonic() - last_press > 5:
            t.keys("r")
            last_press = time.monotonic()
        time.sleep(0.2)
    raise AssertionError(f"{phase} did not pass; screen:\n{t.capture()}")


def test_practice_without_docker_in_tmux(state_dir: Path, tmp_path: Path, elematrix: str) -> None:
    from elematrix_tui.practice import docker_answers

    require(not docker_answers(), "a machine without a Docker engine (this one has one)")
    tmux = require_binary("tmux")
    t = Tmux(tmux, f"elematrix-practice-{uuid.uuid4().hex[:8]}")
    exit_file = tmp_path / "exit-code"
    env = {"ELEMATRIX_STATE_DIR": str(state_dir),
           "ELEMATRIX_CONFIG_DIR": os.environ["ELEMATRIX_CONFIG_DIR"],
           "HOME": str(tmp_path / "home"), "TERM": "xterm-256color",
           "PATH": os.environ["PATH"]}
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    cmd = (f"env -i {exports} {shlex.quote(elematrix)} practice; "
           f"echo $? > {shlex.quote(str(exit_file))}; sleep 30")
    subprocess.run([*t.base, "new-session", "-d", "-s", t.name, "-x", "160", "-y", "48", cmd],
                   check=True)
    try:
        screen = t.wait_for("No Docker engine answers", timeout=60)
        assert "emulator on 127.0.0.1" in screen
        t.wait_for("r Run phase", timeout=30)
        _run_phase("infra", state_dir, t)
        _run_phase("configure", state_dir, t)
        t.wait_for("passed · run", timeout=20)
        time.sleep(1)
        t.keys("r")
        screen = t.wait_for("cannot run", timeout=20)
        assert "Deploy" in screen or "deploy" in screen
        assert "deploy" not in _passed_gates(state_dir)
        t.keys("q")
        end = time.monotonic() + 15
        while not exit_file.exists() and time.monotonic() < end:
            time.sleep(0.1)
        assert exit_file.read_text().strip() == "0", t.capture()
    finally:
        t.run("kill-server")
