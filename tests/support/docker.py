"""The real Docker engine for tests: start it when needed, build the images, one stack.

- :func:`engine` makes an engine answer (starting ``dockerd`` the way
  ``scripts/engine.py`` does when none answers) and remembers whether it started one;
  :func:`release_engine` stops only a daemon started here. The session fixture
  ``docker_engine`` does both. Without an engine a test skips, but under ``CI=true`` it
  fails: CI must have the engine, it never skips silently.
- :func:`ensure_images` builds the stack's images that are missing or stale through the
  same builder scripts/setup.sh uses (``scripts/build_images.py``), and never touches a
  tag that came from a registry. The session fixture ``docker_images`` calls it.
- :func:`stack_lock` is the machine-wide lock a test holds while a stack built from the
  rendered compose file is up: that file publishes ``127.0.0.1:8008`` and the http port,
  so only one such stack can run on a machine at a time.

The two fixtures are registered for the whole suite in ``tests/conftest.py``; a test just
names ``docker_engine`` or ``docker_images``.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
STACK_LOCK = Path("/tmp/elematrix-docker-stack.lock")
# A cold build of all four images takes a few minutes (docs/test-images.md has figures).
BUILD_TIMEOUT_S = 1800.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _load(name: str) -> ModuleType:
    """A stdlib-only script under scripts/ as a module (setup runs them without a venv)."""
    mod_name = f"elematrix_scripts_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    spec.loader.exec_module(mod)
    return mod


def builder() -> ModuleType:
    """``scripts/build_images.py``, imported."""
    return _load("build_images")


def engine_module() -> ModuleType:
    """``scripts/engine.py``, imported."""
    return _load("engine")


@dataclass
class Engine:
    """The engine this session uses; ``started_pid`` is set when we started dockerd."""

    server_version: str
    started_pid: int | None = None


_ENGINE: Engine | None = None


def _unavailable(why: str) -> None:
    if _in_ci():
        pytest.fail(f"no Docker engine: {why}; .ci/run must provide one (CI never skips)")
    pytest.skip(f"no Docker engine: {why}")


def engine() -> Engine:
    """An answering engine for this session (started here if none answered)."""
    global _ENGINE
    if _ENGINE is not None:
        return _ENGINE
    eng = engine_module()
    try:
        pid = eng.start(quiet=True)
    except eng.EngineError as e:
        _unavailable(str(e))
        raise  # unreachable: skip/fail raise
    proc = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                          capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        _unavailable(proc.stderr.strip() or "docker version failed")
    _ENGINE = Engine(proc.stdout.strip(), pid)
    return _ENGINE


def release_engine() -> None:
    """Stop the dockerd this session started, if any; an engine found running stays."""
    global _ENGINE
    if _ENGINE is not None and _ENGINE.started_pid is not None:
        engine_module().stop(_ENGINE.started_pid)
    _ENGINE = None


_SHARED_PID: int | None = None


def start_shared_engine() -> None:
    """The xdist controller's engine: started (when none answers) before any worker, so no
    worker owns it; a worker that started it would stop it at its own end, under the
    stacks of the workers still running. A missing engine is left to the tests to report
    (engine() fails under CI)."""
    global _SHARED_PID
    eng = engine_module()
    try:
        _SHARED_PID = eng.start(quiet=True)
    except eng.EngineError:
        _SHARED_PID = None


def stop_shared_engine() -> None:
    """Stop the controller's engine, if it started one, after the last worker ended."""
    global _SHARED_PID
    if _SHARED_PID is not None:
        engine_module().stop(_SHARED_PID)
    _SHARED_PID = None


def ensure_images(namespace: str = "") -> dict[str, str]:
    """Build the missing or stale stack images; {ref: built|cached|foreign}."""
    engine()
    b = builder()
    try:
        return dict(b.ensure_images(namespace))
    except b.BuildError as e:
        if _in_ci():
            pytest.fail(f"the local images could not be built: {e}")
        pytest.skip(f"the local images could not be built: {e}")
        raise  # unreachable


def need_chromium() -> None:
    """Skip without Debian's chromium and certutil (fail under CI: setup --test has them)."""
    import shutil

    if shutil.which("chromium") is None or shutil.which("certutil") is None:
        if _in_ci():
            pytest.fail("chromium/certutil missing: scripts/setup.sh --test installs them")
        pytest.skip("chromium/certutil not installed (scripts/setup.sh --test)")


@contextlib.contextmanager
def stack_lock(timeout: float = 900.0) -> Iterator[None]:
    """Hold the machine-wide lock while a stack from the rendered compose file is up."""
    fd = os.open(STACK_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{STACK_LOCK} held by another stack for {timeout:.0f} s")
                time.sleep(1.0)
        _sweep_stale_stacks()
        yield
    finally:
        os.close(fd)


def _sweep_stale_stacks() -> None:
    # Whoever holds the lock is the only one allowed a stack on 127.0.0.1:8008, so a
    # container still publishing it now belongs to a holder that was killed before its
    # teardown; left up, it makes every later stack fail to bind.
    ps = subprocess.run(["docker", "ps", "-a", "--filter", "publish=8008", "--format",
                         '{{.ID}} {{.Label "com.docker.compose.project"}}'],
                        capture_output=True, text=True, timeout=60, check=False)
    projects: set[str] = set()
    ids: list[str] = []
    for line in ps.stdout.splitlines():
        cid, _, project = line.partition(" ")
        if project:
            projects.add(project)
        else:
            ids.append(cid)
    for project in sorted(projects):
        print(f"stack_lock: removing stale compose project {project}", file=sys.stderr)
        subprocess.run(["docker", "compose", "-p", project, "down", "-v", "--remove-orphans",
                        "-t", "5"], capture_output=True, timeout=300, check=False)
    if ids:
        subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True, timeout=120,
                       check=False)


def compose(project_dir: Path, project: str, *args: str, timeout: float = 300.0,
            compose_file: str = "docker-compose.yml",
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """``docker compose -p <project> -f <file> <args>`` in ``project_dir``."""
    cmd = ["docker", "compose", "-p", project, "-f", compose_file, *args]
    proc = subprocess.run(cmd, cwd=project_dir, capture_output=True, text=True,
                          timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def docker(*args: str, timeout: float = 120.0, check: bool = True,
           input_: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """``docker <args>``, output captured as text; raises with the output on failure."""
    raw = subprocess.run(["docker", *args], capture_output=True, timeout=timeout,
                         check=False, input=input_)
    proc = subprocess.CompletedProcess(raw.args, raw.returncode,
                                       raw.stdout.decode(errors="replace"),
                                       raw.stderr.decode(errors="replace"))
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def wait_exit(container: str, timeout: float = 120.0) -> int:
    """Wait for a container to stop; its exit code."""
    proc = docker("wait", container, timeout=timeout)
    return int(proc.stdout.strip().splitlines()[-1])


def down(project_dir: Path, project: str, compose_file: str = "docker-compose.yml",
         extra: Sequence[str] = ()) -> None:
    """Bring a test's project down with its volumes (never anybody else's)."""
    compose(project_dir, project, "down", "-v", "--remove-orphans", "-t", "5", *extra,
            compose_file=compose_file, check=False, timeout=180)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[Engine]:
    """The real engine for the whole session; a dockerd started for it is stopped after."""
    eng = engine()
    yield eng
    release_engine()


@pytest.fixture(scope="session")
def docker_images(docker_engine: Engine) -> dict[str, str]:
    """The stack's images in the engine (built locally when missing or stale)."""
    return ensure_images()
