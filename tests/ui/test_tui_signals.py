"""SIGTERM and SIGHUP reach the real TUI (``elematrix`` in tmux) during a run: the run is
journaled interrupted (not left "running"), the exit code is 128 + the signal, and a
message says how to resume (issue 20, lower: handled like Ctrl-C)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from elematrix_tui.ui import catalog

from .conftest import DATA
from .test_tmux import Tmux, tmux_app

__all__ = ["tmux_app"]  # the fixture


@pytest.fixture
def prepared_long(state_dir: Path) -> None:
    catalog.write_settings(state_dir, "demo", {"runbook_name": "ui-long",
                                               "runbook_path": str(DATA / "ui-long.yaml"),
                                               "params": {"wait": 30}})


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_interrupts_the_tui_run_and_saves_it(prepared_long: None, sig: signal.Signals,
                                                      tmux_app: tuple[Tmux, Path],
                                                      state_dir: Path, elematrix: str) -> None:
    t, exit_file = tmux_app
    t.wait_for("never run")
    t.keys("Enter")
    t.wait_for("r Run phase")
    t.keys("r")
    t.wait_for("quick part done")
    lock = state_dir / "deployments" / "demo" / "lock"
    pid = json.loads(lock.read_text())["pid"]
    os.kill(pid, sig)
    end = time.monotonic() + 20
    while not exit_file.exists() and time.monotonic() < end:
        time.sleep(0.1)
    assert exit_file.exists(), t.capture()
    assert exit_file.read_text().strip() == str(128 + sig), t.capture()
    assert "resume" in t.capture()
    listing = subprocess.run([elematrix, "runs", "--deployment", "demo"], capture_output=True,
                             text=True, env=dict(os.environ), timeout=30)
    assert "interrupted" in listing.stdout and "running" not in listing.stdout
    run_id = next(w for w in listing.stdout.split() if w[:1] == "2")
    report = subprocess.run([elematrix, "report", run_id, "--format", "json"],
                            capture_output=True, text=True, env=dict(os.environ), timeout=30)
    assert json.loads(report.stdout)["status"] == "interrupted"
