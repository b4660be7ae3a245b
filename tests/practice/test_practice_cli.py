"""`elematrix practice --headless`: infra and configure for real against the embedded
emulator; without a Docker engine it stops before deploy and says why. A second start
replays the emulator's state: every resource is found again, nothing is created twice."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def _practice(elematrix: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([elematrix, "practice", "--headless"], env=env, capture_output=True,
                          text=True, timeout=600)


def test_practice_headless_runs_infra_and_configure_then_explains(elematrix: str,
                                                                   tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("ELEMATRIX_SECRET_STORE", None)  # practice chooses the file store itself
    env["HOME"] = str(tmp_path / "home")  # never the operator's ~/.ssh or ~/.aws
    first = _practice(elematrix, env)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert "AWS is an emulator on 127.0.0.1" in first.stdout
    assert "No Docker engine answers on this machine" in first.stdout
    assert "deploy" not in [line.split()[0] for line in first.stdout.splitlines()
                            if line.startswith(("deploy ", "harden "))]
    second = _practice(elematrix, env)
    assert second.returncode == 0, second.stdout[-4000:]
    rows = [line.split() for line in second.stdout.splitlines()
            if line.startswith(("infra ", "configure "))]
    assert rows and all(r[2] == "ok" for r in rows), rows
