"""poc-ec2's stack_source: which of render and adapt runs (the plan, offline: no AWS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from elematrix_tui.actions import default_registry
from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.engine.errors import InputError
from elematrix_tui.engine.loader import load_runbook
from elematrix_tui.engine.plan import build_plan

RUNBOOK = runbooks_dir() / "poc-ec2.yaml"
PARAMS = {"operator_cidr": "203.0.113.5/32"}
BUNDLED_ONLY = ("render", "render_awslogs", "upload_awslogs", "recreate_awslogs",
                "logs_flowing")


def _states(tmp_path: Path, **params: str) -> dict[str, str]:
    reg = default_registry()
    plan = build_plan(load_runbook(RUNBOOK, reg), deployment="byo", state_dir=tmp_path,
                      params={**PARAMS, **params}, phases=None, registry=reg, check=False)
    return {s.id: s.state for s in plan.steps()}


def test_bundled_is_the_default_and_adapt_is_skipped(tmp_path: Path) -> None:
    states = _states(tmp_path)
    assert states["adapt"] == "skip"
    assert all(states[s] != "skip" for s in BUNDLED_ONLY), states


def test_a_path_adapts_instead_of_rendering(tmp_path: Path) -> None:
    states = _states(tmp_path, stack_source=str(tmp_path / "my-stack"))
    assert states["adapt"] != "skip"
    assert {s: states[s] for s in BUNDLED_ONLY} == {s: "skip" for s in BUNDLED_ONLY}
    # Every later step of the bundled path still runs on the adapted copy.
    for sid in ("upload", "start_postgres", "db_locale", "start_synapse", "doctor_clean",
                "e2ee", "backup_in_bucket"):
        assert states[sid] != "skip", sid


def test_a_relative_stack_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="stack_source"):
        _states(tmp_path, stack_source="my-stack")
