"""The deployment lock and the journal under operator accidents (issue 20 #9 and the
lower journal items), through real processes and the real ``elematrix`` command."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

SLOW = ("runbook: slow\nphases:\n  - id: one\n    steps:\n"
        "      - {id: a, action: local.noop}\n"
        "      - {id: wait, action: local.sleep, with: {seconds: SECONDS}}\n"
        "      - {id: b, action: local.noop}\n")


def run(elematrix: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([elematrix, *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ))


def _start_slow(elematrix: str, rb: Path, dep: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([elematrix, "run", str(rb), "--deployment", dep, "--yes"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stdout is not None
    deadline = time.time() + 30
    while time.time() < deadline:
        if "wait (local.sleep)" in proc.stdout.readline():
            return proc
    proc.kill()
    raise AssertionError("the slow run never reached its sleep")


def test_deleting_the_lock_file_does_not_let_a_second_run_in(
        elematrix: str, tmp_path: Path, state_dir: Path) -> None:
    rb = tmp_path / "slow.yaml"
    rb.write_text(SLOW.replace("SECONDS", "6"))
    proc = _start_slow(elematrix, rb, "ll")
    try:
        lock = state_dir / "deployments" / "ll" / "lock"
        assert lock.exists()
        lock.unlink()
        res = run(elematrix, "run", str(rb), "--deployment", "ll", "--yes")
        assert res.returncode == 1, res.stdout + res.stderr
        assert "in use" in res.stderr and "Traceback" not in res.stderr
    finally:
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, out + err
    # Once the first run is done, the deployment is free again.
    rb.write_text(SLOW.replace("SECONDS", "0.01"))
    assert run(elematrix, "run", str(rb), "--deployment", "ll", "--yes").returncode == 0


def test_sigterm_and_sighup_save_state_like_ctrl_c(elematrix: str, tmp_path: Path) -> None:
    rb = tmp_path / "slow.yaml"
    rb.write_text(SLOW.replace("SECONDS", "30"))
    for n, sig in enumerate((signal.SIGTERM, signal.SIGHUP)):
        dep = f"sig{n}"
        proc = _start_slow(elematrix, rb, dep)
        time.sleep(0.3)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 128 + sig, out + err
        assert "interrupted" in out + err and "resume" in err
        listing = run(elematrix, "runs", "--deployment", dep)
        assert "interrupted" in listing.stdout and "running" not in listing.stdout
        report = run(elematrix, "report", next(
            w for w in listing.stdout.split() if w[:1] == "2"), "--format", "json")
        assert '"interrupted"' in report.stdout


def test_a_corrupt_journal_is_a_located_error_and_runs_lists_the_others(
        elematrix: str, tmp_path: Path, state_dir: Path) -> None:
    rb = tmp_path / "quick.yaml"
    rb.write_text(SLOW.replace("SECONDS", "0.01"))
    assert run(elematrix, "run", str(rb), "--deployment", "good", "--yes").returncode == 0
    assert run(elematrix, "run", str(rb), "--deployment", "bad", "--yes").returncode == 0
    journal = state_dir / "deployments" / "bad" / "journal.sqlite"
    for extra in journal.parent.glob("journal.sqlite-*"):
        extra.unlink()
    journal.write_bytes(b"this is not a database" * 100)
    res = run(elematrix, "runs")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "good" in res.stdout and "Traceback" not in res.stdout + res.stderr
    assert "bad" in res.stdout + res.stderr and str(journal) in res.stdout + res.stderr
    res = run(elematrix, "run", str(rb), "--deployment", "bad", "--yes")
    assert res.returncode == 2, res.stdout + res.stderr
    assert str(journal) in res.stderr and "Traceback" not in res.stderr


def test_an_empty_journal_is_refused_not_a_new_deployment(
        elematrix: str, tmp_path: Path, state_dir: Path) -> None:
    rb = tmp_path / "quick.yaml"
    rb.write_text(SLOW.replace("SECONDS", "0.01"))
    assert run(elematrix, "run", str(rb), "--deployment", "zero", "--yes").returncode == 0
    journal = state_dir / "deployments" / "zero" / "journal.sqlite"
    for extra in journal.parent.glob("journal.sqlite-*"):
        extra.unlink()
    journal.write_bytes(b"")
    res = run(elematrix, "run", str(rb), "--deployment", "zero", "--yes")
    assert res.returncode == 2, res.stdout + res.stderr
    assert str(journal) in res.stderr and "empty" in res.stderr
    assert journal.stat().st_size == 0  # left for the operator to restore
