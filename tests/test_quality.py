"""The repository's own standards, run as tests so CI and developers see one verdict:
ruff clean, mypy --strict clean on the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_ruff_clean() -> None:
    res = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=ROOT, capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout[-4000:]


def test_mypy_strict_clean() -> None:
    res = subprocess.run([str(BIN / "mypy")], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:]
