"""Local image builds (scripts/build_images.py): cold and cached, on the real engine.

Figures:
- ``images.build_s_cold``: every image from nothing, debootstrap included, built under a
  throwaway tag namespace ``elematrix-bench-<pid>/`` (``--namespace``): the namespaced
  base is a fresh ``docker import``, so no layer of the shared engine's cache is reused and
  the stack's real tags (which other work on this machine uses) are not touched. The
  namespace's images are removed afterwards (``--remove-namespace``: only labelled ones).
- ``images.build_s_cached``: the same command again, when nothing changed (a no-op).

The cold build takes minutes and downloads Debian packages and Synapse from PyPI: run it
once for the figure, not in a loop. Without an engine or debootstrap it fails, saying
which.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILDER = REPO / "scripts" / "build_images.py"


def _build(namespace: str, *extra: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, str(BUILDER), "--namespace", namespace, *extra],
                   check=True, timeout=3600, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def run() -> list[tuple[str, float, str]]:
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed (scripts/setup.sh --test)")
    if subprocess.run(["docker", "info"], capture_output=True, check=False,
                      timeout=30).returncode != 0:
        raise RuntimeError("no Docker engine answers")
    namespace = f"elematrix-bench-{os.getpid()}"
    try:
        cold = _build(namespace)
        cached = _build(namespace)
    finally:
        subprocess.run([sys.executable, str(BUILDER), "--namespace", namespace,
                        "--remove-namespace"], check=False, timeout=600)
    return [("images.build_s_cold", cold, "s"), ("images.build_s_cached", cached, "s")]
