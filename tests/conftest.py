"""Shared test setup: every test gets its own state dir, config dir and secret store.

Secrets go to an opt-in 0600 file (``ELEMATRIX_SECRET_STORE=file``) in a per-test config
dir: CI machines have no keyring backend, and tests must never touch a real keyring.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

# The real Docker engine and the stack's images, for every test that names them (session
# fixtures: a dockerd started for the session is stopped at its end).
from tests.support.docker import (  # noqa: F401
    docker_engine,
    docker_images,
    release_engine,
    start_shared_engine,
    stop_shared_engine,
)

# moto reads this when its IAM backend first starts in a process; whichever test gets there
# first decides for the whole session, so it is set here, once, before any test imports moto
# (infra attaches the CloudWatch agent and SSM core managed policies).
os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")

# moto's default VPCs lack the internet gateway AWS gives them; the infra phase refuses a
# subnet without an internet route, so every in-process moto (mock_aws and the servers the
# fixtures start) gets AWS's default VPC. One home: elematrix_tui/practice.py.
from elematrix_tui.practice import default_vpc_like_aws
from elematrix_tui.practice_dlm import ENV_ENDPOINT, DlmStandIn

default_vpc_like_aws()

# moto has no DLM: one stand-in per test process (elematrix_tui/practice_dlm.py, its
# docstring says what it copies), on 127.0.0.1, reached through boto3's per-service
# endpoint variable by in-process moto, the moto servers the fixtures start and the CLIs
# they run. Its policies live as long as the moto IAM backend their roles are in.
DLM = DlmStandIn().start()
os.environ[ENV_ENDPOINT] = DLM.url

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, what: str) -> None:
    """Skip when something a test needs is missing — but fail under CI, which must have it."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{what} is missing; .ci/run must install/start it (CI never skips)")
    pytest.skip(f"{what} is missing")


def require_binary(name: str) -> str:
    path = shutil.which(name) or (str(VENV_BIN / name) if (VENV_BIN / name).exists() else None)
    require(path is not None, f"the {name!r} program")
    assert path is not None
    return path


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path_factory.mktemp("elematrix")
    monkeypatch.setenv("ELEMATRIX_STATE_DIR", str(base / "state"))
    monkeypatch.setenv("ELEMATRIX_CONFIG_DIR", str(base / "config"))
    monkeypatch.setenv("ELEMATRIX_SECRET_STORE", "file")


@pytest.fixture
def state_dir() -> Path:
    return Path(os.environ["ELEMATRIX_STATE_DIR"])


@pytest.fixture
def elematrix() -> str:
    """The installed console script (the real command line)."""
    path = VENV_BIN / "elematrix"
    if not path.exists():
        found = shutil.which("elematrix")
        assert found, "elematrix is not installed: pip install -e .[dev]"
        return found
    return str(path)


# Under pytest-xdist (`-n N --dist loadgroup`, the README's test command), tests that use
# the real Docker engine run on any worker: stack_lock() serialises the stacks that
# publish fixed ports, and the rest overlap. (One "engine" group, one worker, was the
# intent until session 6, but it was never applied, see below; applied, the engine tests
# took over 55 minutes one after another, against about 35 overlapping.) The engine is
# then started by the controller, before any worker, and stopped by it after the last
# one: a worker that started it stopped it at its own end, under the stacks of workers
# still running (dockerd's shutdown stops their containers: a synapse "exited (0)" in CI).
# Native Synapse is CPU-heavy at start: tests/matrix share one worker and one server.
# Found from the code, not a list, so a new engine test is treated so without anyone noticing.
_ENGINE_WORDS = ("ensure_images(", "engine()", "stack_lock(", "FakeInstance(")
_SOURCE_CACHE: dict[object, bool] = {}


def _mentions_engine(obj: object) -> bool:
    if obj not in _SOURCE_CACHE:
        import inspect
        try:
            src = inspect.getsource(obj)  # type: ignore[arg-type]
        except (OSError, TypeError):
            src = ""
        _SOURCE_CACHE[obj] = any(w in src for w in _ENGINE_WORDS)
    return _SOURCE_CACHE[obj]


def _uses_engine(item: pytest.Item) -> bool:
    if _mentions_engine(getattr(item, "module", None)):
        return True
    info = getattr(item, "_fixtureinfo", None)
    return any(_mentions_engine(d.func) for defs in (info.name2fixturedefs.values() if info
                                                      else ()) for d in defs)


def _shares_a_module_stack(item: pytest.Item) -> bool:
    """A module-scoped fixture of the engine (a stack its tests share): with its tests on
    three workers it was brought up three times (seen: tests/docker/test_workers_on_engine
    .py's worker stack, 2-3 minutes each under load, on gw0, gw1 and gw2)."""
    info = getattr(item, "_fixtureinfo", None)
    return any(d.scope == "module" and _mentions_engine(d.func)
               for defs in (info.name2fixturedefs.values() if info else ()) for d in defs)


def _xdist_group(item: pytest.Item) -> str | None:
    path = Path(str(item.fspath))
    if path.is_relative_to(ROOT / "tests" / "matrix"):
        return "synapse"
    if _shares_a_module_stack(item):
        return f"module:{path.relative_to(ROOT)}"  # its tests on one worker, one stack
    return None


def _xdist_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and bool(
        getattr(config.option, "numprocesses", None))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    if _xdist_controller(session.config):
        start_shared_engine()


# tryfirst: xdist's worker turns each item's xdist_group mark into its node id in its own
# pytest_collection_modifyitems (xdist/remote.py), and that plugin is registered after this
# conftest, so it ran first and found no mark: no group was ever applied (seen:
# test_builder's tests on gw0, gw1 and gw2, each worker with a Synapse of its own).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        group = _xdist_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
        # A stack test's time includes the wait for stack_lock and a whole stack's boot on
        # a machine the other workers share: the suite's 300 s would kill the worker (the
        # thread method exits the process) in the middle of a healthy run. Its own
        # subprocess timeouts (900 s) bound it instead; an explicit marker still wins.
        if _uses_engine(item) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(1200))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A dockerd this session started is stopped, also when only plain calls to
    ``engine()`` (rehearsal, practice fixtures) started it and no test named the session
    fixture ``docker_engine`` (a narrow run): the next session or CI finds none running.
    Under xdist the controller stops the one it started, after every worker has ended."""
    release_engine()
    if _xdist_controller(session.config):
        stop_shared_engine()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """An ActionFailed's diagnosis and fix in the failure's report: its message alone (the
    traceback's last line) names the failed checks but not why, and CI keeps only the
    report (seen: "1 of 6 Matrix checks failed: e2ee_roundtrip", and nothing more)."""
    from elematrix_tui.engine.action import ActionFailed

    outcome = yield
    exc = call.excinfo.value if call.excinfo is not None else None
    if isinstance(exc, ActionFailed):
        outcome.get_result().sections.append(
            ("ActionFailed", f"diagnosis: {exc.diagnosis}\nfix: {exc.fix}"))
