"""upgrade.rollback_s (and the two upgrades' wall times): the upgrade runbook on the rehearsal.

Runs tests/rehearsal/test_upgrade_runbook.py (poc-ec2 infra+configure+deploy on the
FakeInstance's real sshd, the real Docker engine, a moto server; an upgrade that passes; an
upgrade whose Synapse refuses to start, rolled back and proven by the gates) and reads the
figures it prints: rollback_s is the rollback step's wall time (old images rendered and
uploaded, the stack up again, the four gates passed again). Needs root, the Docker engine
and the stack's images, as the test does.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/rehearsal/test_upgrade_runbook.py"
# tests/rehearsal/test_upgrade_runbook.py's last line.
LINE = re.compile(r"upgrade: passed in ([\d.]+) s; failed and rolled back in ([\d.]+) s "
                  r"\(rollback_s ([\d.]+)\)")


def run() -> list[tuple[str, float, str]]:
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
                          TEST], cwd=ROOT, capture_output=True, text=True, timeout=2400)
    m = LINE.search(res.stdout)
    if res.returncode != 0 or m is None:
        raise RuntimeError(f"{TEST} exited {res.returncode}: {res.stdout[-800:]}")
    return [("upgrade.rollback_s", float(m.group(3)), "s"),
            ("upgrade.passed_s", float(m.group(1)), "s"),
            ("upgrade.failed_and_rolled_back_s", float(m.group(2)), "s")]
