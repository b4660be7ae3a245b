"""`elematrix practice` in a real terminal (tmux).

With the machine's Docker engine: the banner says what practice does on this machine and
what it leaves out (its notes, on `?`), and an operator pressing `r` (answering every
confirmation with its own key `y`, typing the deployment name for the destructive one; keys
only, never Tab-hunting) takes all four phases to "passed", the deploy phase on the real
engine through the local host transport.

Without an engine (DOCKER_HOST at a socket nothing listens on, as on a machine without
one): the banner says so before anything runs, infra and configure run for real against the
embedded emulator, and the deploy phase is refused with the explanation."""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

from tests.conftest import require_binary
from tests.practice.conftest import NO_ENGINE
from tests.support.docker import engine
from tests.ui.test_tmux import Tmux


def _passed_gates(state_dir: Path) -> set[str]:
    db = state_dir / "deployments" / "practice" / "journal.sqlite"
    if not db.exists():
        return set()
    con = sqlite3.connect(db)
    try:
        # Read raw (the TUI under test holds the journal): the gates events of the log,
        # in order, as engine/state.py folds them.
        passed: set[str] = set()
        for kind, data in con.execute("SELECT kind, data FROM events WHERE kind IN "
                                      "('gates.passed', 'gates.cleared') ORDER BY seq"):
            phase = json.loads(data)["phase_id"]
            (passed.add if kind == "gates.passed" else passed.discard)(phase)
        return passed
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
        if "Type practice to confirm" in screen:  # destructive: type the deployment name
            t.keys("practice")
            time.sleep(0.3)
            t.keys("Enter")
        elif "y go ahead" in screen:  # a confirmation: its own key, no Tab-hunting
            t.keys("y")
        elif " running " not in screen and time.monotonic() - last_press > 5:
            t.keys("r")
            last_press = time.monotonic()
        time.sleep(0.2)
    raise AssertionError(f"{phase} did not pass; screen:\n{t.capture()}")


def _start(t: Tmux, elematrix: str, state_dir: Path, tmp_path: Path,
           extra: dict[str, str]) -> Path:
    exit_file = tmp_path / "exit-code"
    env = {"ELEMATRIX_STATE_DIR": str(state_dir),
           "ELEMATRIX_CONFIG_DIR": os.environ["ELEMATRIX_CONFIG_DIR"],
           "HOME": str(tmp_path / "home"), "TERM": "xterm-256color",
           "PATH": os.environ["PATH"], **extra}
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    cmd = (f"env -i {exports} {shlex.quote(elematrix)} practice; "
           f"echo $? > {shlex.quote(str(exit_file))}; sleep 30")
    subprocess.run([*t.base, "new-session", "-d", "-s", t.name, "-x", "160", "-y", "48", cmd],
                   check=True)
    return exit_file


def _notes(t: Tmux, text: str) -> str:
    """The banner folds the notices into one line; `?` shows them in full, escape closes."""
    t.wait_for("? shows", timeout=30)
    t.keys("?")
    screen = t.wait_for(text, timeout=20)
    t.keys("Escape")
    t.wait_for("r Run phase", timeout=20)
    return screen


def _quit(t: Tmux, exit_file: Path) -> None:
    t.keys("q")
    end = time.monotonic() + 15
    while not exit_file.exists() and time.monotonic() < end:
        time.sleep(0.1)
    assert exit_file.read_text().strip() == "0", t.capture()


def test_practice_without_docker_in_tmux(state_dir: Path, tmp_path: Path, elematrix: str) -> None:
    tmux = require_binary("tmux")
    t = Tmux(tmux, f"elematrix-practice-{uuid.uuid4().hex[:8]}")
    exit_file = _start(t, elematrix, state_dir, tmp_path, {"DOCKER_HOST": NO_ENGINE})
    try:
        t.wait_for("r Run phase", timeout=60)
        screen = _notes(t, "No Docker engine answers")
        assert "emulator on 127.0.0.1" in screen
        _run_phase("infra", state_dir, t)
        _run_phase("configure", state_dir, t)
        t.wait_for("passed · run", timeout=20)
        # `r` again until the refusal shows: a key that lands while the screen takes in
        # the run's end is (rightly) not a new run.
        screen = ""
        for _ in range(8):
            time.sleep(1)
            t.keys("r")
            try:
                # The toast wraps ("cannot" / "run in this session"): match its second half.
                screen = t.wait_for("in this session (only", timeout=4)
                break
            except AssertionError:
                continue
        assert "in this session (only" in screen, t.capture()
        assert "Deploy" in screen or "deploy" in screen
        assert "deploy" not in _passed_gates(state_dir)
        _quit(t, exit_file)
    finally:
        t.run("kill-server")


def test_practice_every_phase_in_tmux(state_dir: Path, tmp_path: Path, elematrix: str,
                                      practice_project: str) -> None:
    engine()
    tmux = require_binary("tmux")
    t = Tmux(tmux, f"elematrix-practice-{uuid.uuid4().hex[:8]}")
    started = time.monotonic()
    exit_file = _start(t, elematrix, state_dir, tmp_path,
                       {"COMPOSE_PROJECT_NAME": practice_project})
    try:
        t.wait_for("r Run phase", timeout=60)
        screen = _notes(t, "Practice deploys onto THIS machine")
        assert "emulator on 127.0.0.1" in screen
        # The whole notice is on the help screen: what is skipped and how to remove the stack.
        assert f"{practice_project} down -v" in screen.replace("\n", " "), screen
        times = {}
        for phase, limit in (("infra", 180), ("configure", 120), ("deploy", 600),
                             ("harden", 180)):
            t0 = time.monotonic()
            _run_phase(phase, state_dir, t, timeout=limit)
            times[phase] = time.monotonic() - t0
        assert {"infra", "configure", "deploy", "harden"} <= _passed_gates(state_dir)
        t.wait_for("passed · run", timeout=20)
        _quit(t, exit_file)
    finally:
        t.run("kill-server")
    print(f"practice tmux: {time.monotonic() - started:.1f} s "
          + " ".join(f"{k}={v:.1f}s" for k, v in times.items()))
