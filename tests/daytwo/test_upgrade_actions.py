"""The upgrade runbook's own actions, in-process (tests/rehearsal/test_upgrade_runbook.py runs
the whole runbook on the rehearsal).

- upgrade.pins: the images of the deployment's rendered compose file against IMAGES (the
  one table), with per-image overrides; a bad override or no rendering is a clear failure.
- upgrade.schema: Synapse migrates forward and refuses a database newer than its own
  SCHEMA_VERSION, so a downgrade across a schema change is refused unless a backup is
  restored first.
- upgrade.yaml uploads the stack with exactly poc-ec2's modes and owners.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from elematrix_tui.actions.upgrade import (
    Pins,
    PinsInputs,
    Schema,
    SchemaInputs,
    parse_overrides,
    schema_verdict,
)
from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.engine.action import ActionFailed
from elematrix_tui.engine.journal import Journal
from elematrix_tui.engine.standalone import StandaloneContext
from elematrix_tui.stack.values import IMAGES


def _ctx(tmp_path: Path, images: dict[str, str] | None) -> StandaloneContext:
    ctx = StandaloneContext(deployment_dir=tmp_path)
    if images is not None:
        (tmp_path / "stack").mkdir()
        services = {k: {"image": v} for k, v in images.items()}
        (tmp_path / "stack" / "docker-compose.yml").write_text(
            yaml.safe_dump({"services": services}))
    return ctx


def test_pins_old_to_new_with_an_override(tmp_path: Path) -> None:
    old = {**IMAGES, "element": "vectorim/element-web:v1.11.85"}
    ctx = _ctx(tmp_path, old)
    check = Pins().check(ctx, PinsInputs(images="synapse=example/synapse:v2"))
    assert check.in_sync is False
    assert check.changes == [f"synapse: {IMAGES['synapse']} -> example/synapse:v2",
                             f"element: vectorim/element-web:v1.11.85 -> {IMAGES['element']}"]
    res = Pins().apply(ctx, PinsInputs(images="synapse=example/synapse:v2"))
    assert res.outputs["old"] == old and res.outputs["count"] == 2
    assert res.outputs["refs"] == ["example/synapse:v2", IMAGES["element"]]
    assert res.outputs["synapse_changed"] is True


def test_pins_in_sync_and_failures(tmp_path: Path) -> None:
    assert Pins().check(_ctx(tmp_path, dict(IMAGES)), PinsInputs()).in_sync is True
    with pytest.raises(ActionFailed, match="not <image>=<reference>"):
        parse_overrides("redis=redis:7")
    with pytest.raises(ActionFailed, match="no rendered stack"):
        Pins().apply(_ctx(tmp_path / "none", None), PinsInputs())


def test_schema_guard() -> None:
    assert schema_verdict(94, 94, "") == (True, "schema 94 unchanged")
    assert schema_verdict(94, 95, "")[0] is True
    assert schema_verdict(95, 94, "")[0] is False
    assert schema_verdict(95, 94, "prod/20260101T000000Z")[0] is True
    ctx = StandaloneContext(deployment_dir=Path("/nonexistent"))
    with pytest.raises(ActionFailed, match="downgrade across a database schema change"):
        Schema().apply(ctx, SchemaInputs(facts="db 95\ncode 94\n"))
    out = Schema().apply(ctx, SchemaInputs(facts="db 94\ncode 95\n")).outputs
    assert out == {"db_version": 94, "code_version": 95, "schema_moves": True,
                   "verdict": "Synapse migrates the schema 94 -> 95 at start"}
    with pytest.raises(ActionFailed, match="could not read the schema versions"):
        Schema().apply(ctx, SchemaInputs(facts="db \ncode 94\n"))


def test_upgrade_uploads_like_poc_ec2() -> None:
    def upload(runbook: str, step: str) -> dict[str, object]:
        doc = yaml.safe_load((runbooks_dir() / runbook).read_text())
        steps = [s for ph in doc["phases"] for s in ph["steps"]]
        return next(s["with"] for s in steps if s["id"] == step)

    mine, theirs = upload("upgrade.yaml", "upgrade_upload"), upload("poc-ec2.yaml", "upload")
    for key in ("source", "modes", "sudo"):
        assert mine[key] == theirs[key], key
    # Owners: from the rendering's layout on both sides, never spelt out (stack/layout.py).
    assert mine["owners"] == "{{ steps.upgrade_render.owners }}"
    assert "steps.render.owners" in theirs["owners"]


def test_day_two_runbooks_never_reuse_the_step_ids_they_read_from_poc_ec2() -> None:
    """deploy.recorded reads the latest outputs by step id across every run of the
    deployment: a restore or upgrade step named like a poc-ec2 step it reads (a gate named
    ``canary``) would replace those outputs, and the next run would read its own instead."""
    from elematrix_tui.actions import default_registry
    from elematrix_tui.engine.loader import load_runbook

    for name in ("restore.yaml", "upgrade.yaml"):
        rb = load_runbook(runbooks_dir() / name, default_registry())
        steps = [s for _, s, _ in rb.all_steps()]
        recorded = next(s for s in steps if s.action == "deploy.recorded")
        read = {ref.split(".", 1)[0] for ref in recorded.with_["values"].values()}
        assert read, name
        assert not read & {s.id for s in steps}, (name, read & {s.id for s in steps})


def test_an_adapted_stack_of_your_own_is_refused_before_anything_changes(
        tmp_path: Path) -> None:
    """A deployment whose last stack step was stack.adapt (stack_source) runs the operator's
    compose file: upgrade.pins, the runbook's first step after the tunnel, refuses it with
    what to do instead, before the backup and the snapshot; a later bundled rendering
    makes the deployment upgradable again."""
    from elematrix_tui.engine.events import StepFinished, StepStarted

    ctx = _ctx(tmp_path, dict(IMAGES))
    path = tmp_path / "journal.sqlite"

    def step(run: str, action: str, inputs: dict[str, str]) -> None:
        with _journal(path) as j:
            j.record(StepStarted(run, phase_id="configure", step_id=action.split(".")[1],
                                 title="t", action=action, attempt=1, inputs=inputs))
            j.record(StepFinished(run, phase_id="configure", step_id=action.split(".")[1],
                                  status="changed", attempt=1, duration=0.1))

    step("r1", "stack.render", {"server_name": "x"})
    assert Pins().check(ctx, PinsInputs()).in_sync is True
    step("r2", "stack.adapt", {"source": "/srv/mystack"})
    with pytest.raises(ActionFailed, match=r"runs your own stack \(stack_source=/srv/mystack\)"):
        Pins().apply(ctx, PinsInputs())
    check = Pins().check(ctx, PinsInputs())
    assert check.in_sync is None and "your own stack" in (check.unknown_because or "")
    step("r3", "stack.render", {"server_name": "x"})
    assert Pins().check(ctx, PinsInputs()).in_sync is True


def _journal(path: Path) -> Journal:
    """The deployment's journal file, made as Journal.open makes one."""
    from elematrix_tui.engine.journal import _create

    if not path.exists():
        _create(path)
    return Journal(path)
