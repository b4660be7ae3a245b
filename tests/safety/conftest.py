"""Shared bits of the input-safety tests (issue 20): the real CLI, bounded."""

from __future__ import annotations

import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent


def cli(elematrix: str, *args: str, timeout: float = 60,
        **kw: object) -> subprocess.CompletedProcess[str]:
    """Run the real console script; a hang fails the test instead of the CI job."""
    res = subprocess.run([elematrix, *args], capture_output=True, timeout=timeout,
                         **kw)  # type: ignore[call-overload]
    # Decoded by hand: text=True would turn a bare CR into a newline and hide it.
    return subprocess.CompletedProcess(res.args, res.returncode, res.stdout.decode(),
                                       res.stderr.decode())
