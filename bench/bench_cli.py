"""cli.help_s: median wall time of `elematrix --help` (a fresh process each time)."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run() -> list[tuple[str, float, str]]:
    exe = Path(sys.executable).parent / "elematrix"
    cmd = [str(exe)] if exe.exists() else [shutil.which("elematrix") or "elematrix"]
    samples = []
    for _ in range(11):
        t0 = time.perf_counter()
        subprocess.run([*cmd, "--help"], check=True, capture_output=True)
        samples.append(time.perf_counter() - t0)
    return [("cli.help_s", statistics.median(samples), "s")]
