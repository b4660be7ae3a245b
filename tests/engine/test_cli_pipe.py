"""`elematrix ... | head`: a reader that leaves early gets no traceback."""

from __future__ import annotations

import subprocess
import sys


def test_a_closed_pipe_is_not_a_traceback() -> None:
    # validate of the bundled runbook prints more than one line; head reads only the first.
    proc = subprocess.run(
        f"{sys.executable} -m elematrix_tui.cli validate poc-ec2 teardown verify | head -1",
        shell=True, capture_output=True, text=True, timeout=120)
    assert proc.stdout.count("\n") == 1, proc.stdout
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
