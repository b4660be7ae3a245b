"""The machine's real Docker engine for tests: is it there, are the stack's images there, and
the machine-wide lock a test holds while a stack is up.

Minimal version (branch real-engine-rehearsal); the docker-images branch owns the full one
with the same three names, which the lead reconciles to.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# The rendered stack publishes 127.0.0.1:8008 and the http port on every interface, so only
# one stack can run on the machine (one engine serves every engineer's tests).
STACK_LOCK = Path("/tmp/elematrix-docker-stack.lock")
# Written by the docker-images work when its images are in the engine: names the builder.
IMAGES_READY = Path("/work/wt/IMAGES-READY")


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def engine_answers() -> bool:
    """``docker info`` reaches a daemon (not just a client on PATH)."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        r = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"],
                           capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0 and bool(r.stdout.strip())


def engine() -> str:
    """The docker client's path when an engine answers; else skip (fail under CI=true)."""
    docker = shutil.which("docker")
    if docker is not None and engine_answers():
        r = subprocess.run([docker, "compose", "version"], capture_output=True, text=True,
                           timeout=20)
        if r.returncode == 0:
            return docker
        why = "the docker compose plugin ('docker compose version' fails)"
    else:
        why = "a Docker engine ('docker info' does not answer)"
    if _ci():
        pytest.fail(f"CI=true and this machine lacks {why}")
    pytest.skip(f"needs {why}")


def missing_images(images: list[str]) -> list[str]:
    docker = shutil.which("docker") or "docker"
    return [i for i in images if subprocess.run([docker, "image", "inspect", i],
                                                capture_output=True).returncode != 0]


def ensure_images() -> None:
    """The stack's images (``elematrix_tui.stack.values.IMAGES``) are in the engine, built
    by the builder IMAGES-READY names when missing; else skip (fail under CI=true)."""
    from elematrix_tui.stack.values import IMAGES

    engine()
    wanted = sorted(IMAGES.values())
    missing = missing_images(wanted)
    if missing and IMAGES_READY.exists():
        builder = next((w for w in IMAGES_READY.read_text().split()
                        if w.endswith((".py", ".sh")) and Path(w).exists()), None)
        if builder is not None:
            cmd = [builder] if builder.endswith(".sh") else ["python3", builder]
            subprocess.run(cmd, timeout=3600, check=False)
            missing = missing_images(wanted)
    if missing:
        msg = f"the stack's images in the engine (missing: {', '.join(missing)})"
        if _ci():
            pytest.fail(f"CI=true and this machine lacks {msg}")
        pytest.skip(f"needs {msg}")


@contextlib.contextmanager
def stack_lock(timeout: float = 1800.0) -> Iterator[None]:
    """Hold the machine-wide stack lock (exclusive flock) while a stack is up."""
    fd = os.open(STACK_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        end = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > end:
                    raise TimeoutError(f"{STACK_LOCK} held by another stack for {timeout:.0f} s"
                                       ) from None
                time.sleep(1)
        yield
    finally:
        os.close(fd)
