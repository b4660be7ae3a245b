"""The plan asks each action's read-only ``check`` what a run would change: the real
poc-ec2 infra phase against in-process moto (no account), before and after a real run.

moto stands in for AWS here; what the checks read (describe/get/list calls) is what moto
implements (FACTS.md, "AWS and moto"); nothing is patched.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from elematrix_tui.actions import default_registry
from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.engine.loader import load_runbook
from elematrix_tui.engine.plan import build_plan
from elematrix_tui.engine.runner import Runner, RunOptions
from elematrix_tui.engine.standalone import AutoQuestions

RUNBOOK = runbooks_dir() / "poc-ec2.yaml"
PARAMS = {"operator_cidr": "203.0.113.5/32", "host_key_wait": 0}
LIVE = frozenset({"aws.preflight", "aws.assert"})


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the hash of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


def test_plan_of_infra_says_create_before_a_run_and_in_place_after(
        moto: None, tmp_path: Path, monkeypatch: object) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh key: the key pair is generated
    reg = default_registry()
    rb = load_runbook(RUNBOOK, reg)
    state = tmp_path / "state"
    infra = [s for s in rb.phases[0].steps if s.action == "aws.ensure"]

    before = build_plan(rb, deployment="planck", state_dir=state, params=dict(PARAMS),
                        phases=["infra"], registry=reg, live_actions=LIVE)
    assert not state.exists() or not any(state.rglob("*")), "a plan wrote to the state dir"
    states = {s.id: s.state for s in before.steps()}
    assert {s.id: states[s.id] for s in infra} == {s.id: "create" for s in infra}, before
    assert states["preflight"] == "read" and before.step("preflight").found  # type: ignore
    # The security group was really checked (preflight's vpc_id known): it says what.
    sg = before.step("security_group")
    assert sg is not None and sg.why is None and any("create security group" in c
                                                     for c in sg.changes), sg
    assert before.counts()["create"] == len(infra)

    runner = Runner(rb, deployment="planck", state_dir=state, params=dict(PARAMS),
                    questions=AutoQuestions(), registry=reg, runbook_path=RUNBOOK,
                    options=RunOptions(phases=["infra"], assume_yes=True))
    assert runner.run() == 0

    files = _snapshot(state)
    after = build_plan(rb, deployment="planck", state_dir=state, params=dict(PARAMS),
                       phases=["infra"], registry=reg, live_actions=LIVE)
    assert _snapshot(state) == files, "a plan changed the state dir"
    states = {s.id: s.state for s in after.steps()}
    in_place = {s.id for s in infra if states[s.id] == "in_place"}
    # Every ensure whose check can tell: all of them in this runbook.
    assert in_place == {s.id for s in infra}, states
    assert after.counts()["create"] == 0 and after.counts()["change"] == 0
    # The same deployment with a changed operator address: the rule is a change, in place.
    moved = build_plan(rb, deployment="planck", state_dir=state,
                       params={**PARAMS, "operator_cidr": "198.51.100.7/32"},
                       phases=["infra"], registry=reg, live_actions=LIVE)
    sg = moved.step("security_group")
    assert sg is not None and sg.state == "change", sg
    assert any("198.51.100.7/32" in c for c in sg.changes), sg.changes
    assert _snapshot(state) == files
