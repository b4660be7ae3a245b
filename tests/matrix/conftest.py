"""A real Matrix stack for the matrix.* tests: PostgreSQL (C collation) + Synapse + nginx.

One stack per test session (~5 s to start), configured from the project's own stack
templates (tests/support/services.py adapts them to loopback). Broken nginx variants are
extra nginx processes in front of the same Synapse; only "registration disabled" needs a
second Synapse (module-scoped, sharing the PostgreSQL cluster).

A missing PostgreSQL, nginx or Synapse FAILS under CI=true; without CI it skips.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from elematrix_tui.actions.matrix import Validate
from elematrix_tui.engine.action import ActionFailed, Result
from elematrix_tui.engine.standalone import StandaloneContext
from tests.support.services import MatrixStack, StackSettings, missing_binaries


def require_stack() -> None:
    missing = missing_binaries()
    if not missing:
        return
    msg = ("a native Matrix stack needs: " + "; ".join(missing)
           + " (.ci/run must install PostgreSQL 15, nginx and the Synapse venv)")
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg)  # in CI a missing service is a failure, never a skip
    pytest.skip(msg)


@pytest.fixture(scope="session")
def matrix_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MatrixStack]:
    require_stack()
    stack = MatrixStack(tmp_path_factory.mktemp("matrix-stack"))
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def noreg_stack(matrix_stack: MatrixStack, tmp_path_factory: pytest.TempPathFactory,
                ) -> Iterator[MatrixStack]:
    """A second Synapse with enable_registration: false + registration_requires_token."""
    settings = StackSettings(enable_registration=False, registration_requires_token=True,
                             postgres_password=matrix_stack.settings.postgres_password)
    stack = MatrixStack(tmp_path_factory.mktemp("matrix-noreg"), settings,
                        postgres=matrix_stack.postgres, database="synapse_noreg")
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def validate_inputs(stack: MatrixStack, **over: Any) -> dict[str, Any]:
    inputs: dict[str, Any] = {
        "base_url": stack.base_url, "server_name": stack.server_name,
        "admin_url": stack.admin_url,
        "registration_shared_secret": stack.registration_shared_secret,
        "timeout": 10, "total_timeout": 60,
    }
    inputs.update(over)
    return inputs


def run_validate(tmp_path: Path, stack: MatrixStack, **over: Any,
                 ) -> tuple[Result | ActionFailed, StandaloneContext]:
    """Run matrix.validate standalone; returns (Result or the ActionFailed, context)."""
    ctx = StandaloneContext(deployment_dir=tmp_path)
    try:
        res: Result | ActionFailed = ctx.run(Validate(), validate_inputs(stack, **over))
    except ActionFailed as e:
        res = e
    return res, ctx


def checks(ctx: StandaloneContext) -> dict[str, dict[str, Any]]:
    """The gate.check notes by check name."""
    return {d["check"]: d for kind, d in ctx.notes if kind == "gate.check"}
