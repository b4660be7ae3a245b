"""ssh.run on a reused connection vs spawning the OpenSSH ``ssh`` client per command.

Both run the same trivial command against the same real sshd on loopback (started here
with tests/support/sshd.py), with the same key. ``ssh`` gets the options a script would
use to run unattended (no host key prompt, no known_hosts write, batch mode).

Figures:
  ssh.run_vs_ssh_ratio   median ``ssh`` per command / median ssh.run per command (target >= 20)
  ssh.run_ms             median ssh.run per command on the reused connection
  ssh.spawn_ms           median ``ssh`` client per command
  ssh.connect_ms         first ssh.run (connect, host key check, auth, command; paramiko
                         already imported)

Run alone: ``python bench/bench_ssh.py`` (or through ``python bench/run.py ssh``).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # tests.support lives in the repo, not in the package
    sys.path.insert(0, str(REPO))

COMMANDS = 30
COMMAND = "echo ok"


def _ssh_argv(srv: object) -> list[str]:
    return ["ssh", "-i", str(srv.key_path), "-p", str(srv.port),  # type: ignore[attr-defined]
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
            f"{srv.user}@{srv.host}", COMMAND]  # type: ignore[attr-defined]


def run() -> list[tuple[str, float, str]]:
    """Measure; returns (figure, value, unit) tuples."""
    import paramiko  # noqa: F401 - imported now so connect_ms is the connection, not the import

    from elematrix_tui.actions.ssh import Run
    from elematrix_tui.engine.standalone import StandaloneContext
    from tests.support.sshd import SshServer

    with SshServer() as srv, tempfile.TemporaryDirectory() as d:
        ctx = StandaloneContext(deployment_dir=Path(d))
        try:
            action = Run()
            inputs = srv.inputs(command=COMMAND)
            t = time.perf_counter()
            first = ctx.run(action, inputs)
            connect_ms = (time.perf_counter() - t) * 1000
            assert first.outputs["stdout"] == "ok\n", first.outputs
            for _ in range(3):  # warm up: first sessions on a connection are slower
                ctx.run(action, inputs)
            ours: list[float] = []
            for _ in range(COMMANDS):
                t = time.perf_counter()
                r = ctx.run(action, inputs)
                ours.append(time.perf_counter() - t)
                assert r.outputs["stdout"] == "ok\n"
        finally:
            ctx.close()
        argv = _ssh_argv(srv)
        spawn: list[float] = []
        for _ in range(COMMANDS):
            t = time.perf_counter()
            p = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                               stdin=subprocess.DEVNULL)
            spawn.append(time.perf_counter() - t)
            if p.returncode != 0 or p.stdout != "ok\n":
                raise RuntimeError(f"ssh failed ({p.returncode}): {p.stderr}")
    run_ms = statistics.median(ours) * 1000
    spawn_ms = statistics.median(spawn) * 1000
    return [("ssh.run_vs_ssh_ratio", round(spawn_ms / run_ms, 1), "x"),
            ("ssh.run_ms", round(run_ms, 2), "ms"),
            ("ssh.spawn_ms", round(spawn_ms, 1), "ms"),
            ("ssh.connect_ms", round(connect_ms, 1), "ms")]


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name}: {value} {unit}")
