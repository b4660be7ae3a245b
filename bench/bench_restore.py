"""restore.rto_s and restore.rpo_s: the restore runbook on the rehearsal.

Runs tests/rehearsal/test_restore_runbook.py (poc-ec2 infra+configure+deploy on the
FakeInstance's real sshd, the real Docker engine, a moto server; a change planted after the
first backup; `elematrix run restore`, gates, the change gone) and reads the figures it
prints: RTO is restore.sh's wall time (download to Synapse healthy), RPO the restored
backup's age. The same test then drills (`--set drill=true`: deploy `rehearsal-drill`
beside it, restore the copied backup with every gate, tear it down): restore.drill_rto_s
is the drill's restore.sh wall time, restore.drill_s the whole drill. Needs root, the
Docker engine and the stack's images, as the test does.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/rehearsal/test_restore_runbook.py"
# tests/rehearsal/test_restore_runbook.py's last line.
LINE = re.compile(r"restore: rpo (\d+) s, rto ([\d.]+) s, runbook ([\d.]+) s")
DRILL = re.compile(r"drill: rpo (\d+) s, rto ([\d.]+) s, drill ([\d.]+) s")


def run() -> list[tuple[str, float, str]]:
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                          TEST], cwd=ROOT, capture_output=True, text=True, timeout=2400)
    m = LINE.search(res.stdout)
    d = DRILL.search(res.stdout)
    if res.returncode != 0 or m is None or d is None:
        raise RuntimeError(f"{TEST} exited {res.returncode}: {res.stdout[-800:]}")
    return [("restore.rto_s", float(m.group(2)), "s"),
            ("restore.rpo_s", float(m.group(1)), "s"),
            ("restore.runbook_s", float(m.group(3)), "s"),
            ("restore.drill_rto_s", float(d.group(2)), "s"),
            ("restore.drill_s", float(d.group(3)), "s")]
