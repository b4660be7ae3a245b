#!/usr/bin/env python3
"""Make a Docker engine answer on this machine (standard library only).

    python3 scripts/engine.py start    start dockerd when none answers, say what happened
    python3 scripts/engine.py status   exit 0 when an engine answers

Used by scripts/setup.sh and by the tests' fixture (tests/support/docker.py), so both
start the engine the same way:

- an engine that already answers (``docker info``) is used as it is;
- with systemd running, ``systemctl start docker``;
- otherwise ``dockerd`` is started in the background (its own session, log in
  /var/log/elematrix-dockerd.log). First with its default flags; when it dies because
  iptables cannot be changed (a sandbox without netfilter rights, like the CI machines),
  again with ``--iptables=false --ip6tables=false``, and that is said. Containers then
  have no NAT: the image builder uses ``--network host``, published ports still answer
  through docker-proxy.

``start`` returns the pid of a dockerd it started itself (None otherwise), so a caller
can stop exactly that one and nothing else.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

DOCKERD_LOG = Path(os.environ.get("ELEMATRIX_DOCKERD_LOG", "/var/log/elematrix-dockerd.log"))
NO_IPTABLES = ("--iptables=false", "--ip6tables=false")
START_TIMEOUT_S = 60.0


class EngineError(RuntimeError):
    """No engine answers and none could be started; the message says why."""


def say(msg: str) -> None:
    # stderr: setup.sh captures stdout (the pid) of engine.start().
    print(f"engine: {msg}", file=sys.stderr, flush=True)


def answers(timeout: float = 15.0) -> bool:
    """True when ``docker info`` reaches a daemon."""
    if shutil.which("docker") is None:
        return False
    try:
        proc = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())


def _wait(proc: subprocess.Popen[bytes] | None, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if answers(timeout=5):
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.5)
    return False


def _log_tail(start: int, lines: int = 15) -> str:
    try:
        with DOCKERD_LOG.open("rb") as f:
            f.seek(start)
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _spawn(flags: tuple[str, ...]) -> tuple[subprocess.Popen[bytes], int]:
    DOCKERD_LOG.parent.mkdir(parents=True, exist_ok=True)
    start = DOCKERD_LOG.stat().st_size if DOCKERD_LOG.exists() else 0
    with DOCKERD_LOG.open("ab") as out:
        proc = subprocess.Popen(["dockerd", *flags], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    return proc, start


def start(quiet: bool = False) -> int | None:
    """Make an engine answer; the pid of the dockerd started here, or None."""
    if answers():
        return None
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        if not quiet:
            say("no Docker engine answers: systemctl start docker")
        subprocess.run(["systemctl", "start", "docker"], check=False, timeout=120)
        if _wait(None, time.monotonic() + START_TIMEOUT_S):
            return None
        raise EngineError("systemctl start docker did not make an engine answer "
                          "(journalctl -u docker says why)")
    if shutil.which("dockerd") is None:
        raise EngineError("no Docker engine answers and dockerd is not installed "
                          "(scripts/setup.sh installs Debian's docker.io)")
    if os.geteuid() != 0:
        raise EngineError("no Docker engine answers; starting dockerd needs root")
    if not quiet:
        say(f"no Docker engine answers: starting dockerd (log {DOCKERD_LOG})")
    proc, offset = _spawn(())
    if _wait(proc, time.monotonic() + START_TIMEOUT_S):
        return proc.pid
    tail = _log_tail(offset)
    _stop_proc(proc)
    if "iptables" not in tail:
        raise EngineError(f"dockerd did not answer within {START_TIMEOUT_S:.0f} s:\n{tail}")
    if not quiet:
        say("dockerd cannot use iptables here: starting it with "
            "--iptables=false --ip6tables=false (no NAT for containers)")
    proc, offset = _spawn(NO_IPTABLES)
    if _wait(proc, time.monotonic() + START_TIMEOUT_S):
        return proc.pid
    tail = _log_tail(offset)
    _stop_proc(proc)
    raise EngineError(f"dockerd did not answer within {START_TIMEOUT_S:.0f} s:\n{tail}")


def _stop_proc(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def stop(pid: int, timeout: float = 30.0) -> None:
    """Stop the dockerd with this pid (one this module started), and wait for it."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # Our child when started in this process; otherwise just poll for it.
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:
            if not Path(f"/proc/{pid}").exists():
                return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def main(argv: list[str]) -> int:
    cmd = argv[1] if len(argv) > 1 else "status"
    if cmd == "status":
        return 0 if answers() else 1
    if cmd == "start":
        try:
            pid = start()
        except EngineError as e:
            print(f"engine: error: {e}", file=sys.stderr)
            return 1
        if pid is not None:
            say(f"dockerd started (pid {pid}); it keeps running after setup")
        return 0
    print("usage: engine.py start|status", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
