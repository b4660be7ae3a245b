"""The plan as data: one resolver with run (plan refuses what run refuses), stable JSON
(a golden file), a read-only context for checks, and a state dir left byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, ClassVar

import pytest

from elematrix_tui.actions import default_registry
from elematrix_tui.engine.action import (
    Action,
    ActionFailed,
    Check,
    Inputs,
    Result,
    StepContext,
)
from elematrix_tui.engine.errors import InputError
from elematrix_tui.engine.loader import load_runbook
from elematrix_tui.engine.plan import build_plan, change_lines
from elematrix_tui.engine.registry import Registry
from elematrix_tui.engine.runner import Runner, RunOptions
from elematrix_tui.engine.standalone import AutoQuestions

DATA = Path(__file__).resolve().parent / "data"
GOLDEN = DATA / "plan-golden.json"

LOCKED = """
runbook: locked
params:
  - {name: server_name, type: string, permanent: true, help: the name}
  - {name: colour, type: string, default: red}
  - {name: once, type: bool, default: false, remember: false}
phases:
  - id: one
    steps:
      - id: name
        action: local.noop
        locks: [server_name]
        with: {log: ["{{ params.server_name }} {{ params.colour }} {{ params.once }}"]}
"""


def _run(rb_path: Path, state: Path, params: dict[str, Any]) -> int:
    reg = default_registry()
    rb = load_runbook(rb_path, reg)
    runner = Runner(rb, deployment="dep", state_dir=state, params=params,
                    questions=AutoQuestions(), registry=reg, runbook_path=rb_path,
                    options=RunOptions(assume_yes=True))
    return runner.run()


def _plan(rb_path: Path, state: Path, params: dict[str, Any]) -> Any:
    reg = default_registry()
    return build_plan(load_runbook(rb_path, reg), deployment="dep", state_dir=state,
                      params=params, phases=None, registry=reg)


def test_plan_refuses_exactly_what_run_refuses_and_uses_what_it_remembers(
        tmp_path: Path) -> None:
    """Fails before the one resolver: plan ignored the permanent lock (and showed the new
    server_name that run then refused)."""
    rb = tmp_path / "rb.yaml"
    rb.write_text(LOCKED)
    state = tmp_path / "state"
    assert _run(rb, state, {"server_name": "a.example", "colour": "blue", "once": "yes"}) == 0
    with pytest.raises(InputError) as by_run:
        _run(rb, state, {"server_name": "b.example"})
    with pytest.raises(InputError) as by_plan:
        _plan(rb, state, {"server_name": "b.example"})
    assert [str(e) for e in by_plan.value.errors] == [str(e) for e in by_run.value.errors]
    assert "is permanent in deployment 'dep'" in str(by_plan.value)
    # Remembered values are the run's: colour from the last run; once (remember: false) not.
    plan = _plan(rb, state, {"server_name": "a.example"})
    values = {p.name: (p.value, p.origin) for p in plan.params}
    assert values["colour"] == ("blue", "remembered")
    assert values["once"] == (False, "default")
    assert plan.step("name").inputs == {"log": ["a.example blue False"]}


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _cli(elematrix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([elematrix, *args], capture_output=True, text=True, timeout=60)


def test_plan_json_is_stable_masked_and_writes_nothing(elematrix: str, tmp_path: Path,
                                                       state_dir: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    args = ["plan", str(DATA / "plan-golden.yaml"), "--deployment", "gold",
            "--set", f"out={out}", "--set", "server_name=example.org"]
    res = _cli(elematrix, *args, "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout.replace(str(out), "<out>").replace(str(state_dir),
                                                                   "<state>"))
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    assert data == json.loads(GOLDEN.read_text()), "plan --json changed: update docs/plan.md"
    assert not state_dir.exists() or not any(state_dir.rglob("*"))
    assert not any(out.iterdir())
    # The text is the same data: a symbol per step, then the summary line.
    text = _cli(elematrix, *args).stdout
    assert "+ step w1 (local.write)" in text and "! step w3" not in text
    assert "\nPlan: 3 to create, 0 to change, 0 unknown, 2 read-only, 1 skipped.\n" in \
        text + "\n", text
    # After a real run: in place, and the plan changes no byte of the state dir.
    run = _cli(elematrix, "run", *args[1:], "--yes")
    assert run.returncode == 0, run.stdout + run.stderr
    before = _snapshot(state_dir)
    again = json.loads(_cli(elematrix, *args, "--json").stdout)
    assert _snapshot(state_dir) == before
    assert {s["id"]: s["state"] for ph in again["phases"] for s in ph["steps"]
            if s["action"] == "local.write"} == {"w1": "in_place", "w2": "in_place",
                                                  "w3": "in_place"}
    token = json.loads((Path(os.environ["ELEMATRIX_CONFIG_DIR"]) / "secrets.json")
                       .read_text())["gold"]["token"]
    assert token not in json.dumps(again) and token not in text


class _Writes(Inputs):
    what: str = "meta"


class WritingCheck(Action):
    """An action whose check breaks the contract (writes or asks)."""

    name = "test.writing_check"
    Inputs = _Writes
    calls: ClassVar[list[str]] = []

    def check(self, ctx: StepContext, inputs: _Writes) -> Check:
        self.calls.append(inputs.what)
        if inputs.what == "meta":
            ctx.set_meta("x", 1)
        elif inputs.what == "secret":
            ctx.set_secret("x", "y")
        else:
            ctx.questions.confirm(ctx.step_id, "?", [], destructive=False, type_to_confirm=None)
        return Check(in_sync=True)

    def apply(self, ctx: StepContext, inputs: _Writes) -> Result:
        return Result("ok")


def test_a_check_that_writes_or_asks_in_plan_mode_is_named_a_bug(tmp_path: Path) -> None:
    reg = Registry()
    reg.add("test.writing_check", WritingCheck)
    rb = load_runbook_text(tmp_path, """
runbook: w
phases:
  - id: one
    steps:
      - {id: m, action: test.writing_check, with: {what: meta}}
      - {id: s, action: test.writing_check, with: {what: secret}}
      - {id: q, action: test.writing_check, with: {what: question}}
""", reg)
    offline = build_plan(rb, deployment="w", state_dir=tmp_path / "state", params={},
                         phases=None, registry=reg, check=False)
    assert WritingCheck.calls == [], "--offline renders only: no check runs"
    assert {s.state for s in offline.steps()} == {"unknown"} and not offline.checked
    plan = build_plan(rb, deployment="w", state_dir=tmp_path / "state", params={},
                      phases=None, registry=reg, secrets=None)
    assert WritingCheck.calls == ["meta", "secret", "question"]
    for s in plan.steps():
        assert s.state == "unknown" and s.why is not None and "a bug in" in s.why, s
    assert not (tmp_path / "state").exists()


def load_runbook_text(tmp: Path, text: str, reg: Registry) -> Any:
    path = tmp / "rb.yaml"
    path.write_text(text)
    return load_runbook(path, reg)


def test_the_confirmation_shows_the_plans_change() -> None:
    assert change_lines(Check(in_sync=False, changes=["write /x"]), recorded=False) == \
        ["+ write /x"]
    assert change_lines(Check(in_sync=False, changes=["rule"], creates=False),
                        recorded=False) == ["~ rule"]
    assert change_lines(None, recorded=True, error="boom") == ["? unknown, because boom"]
    assert change_lines(Check(in_sync=None, unknown_because="a command"), recorded=True) == \
        ["? unknown, because a command"]


class _Recording(AutoQuestions):
    def __init__(self) -> None:
        super().__init__()
        self.shown: dict[str, list[str]] = {}

    def confirm(self, step_id: str, title: str, changes: list[str], *, destructive: bool,
                type_to_confirm: str | None) -> bool:
        self.shown[step_id] = list(changes)
        return True


def test_the_runners_confirmation_shows_what_the_plan_shows(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    rb_text = f"""
runbook: asks
phases:
  - id: one
    steps:
      - {{id: w, action: local.write, confirm: true, with: {{path: "{out}/f", content: "x"}}}}
"""
    reg = default_registry()
    rb = load_runbook_text(tmp_path, rb_text, reg)
    plan = build_plan(rb, deployment="asks", state_dir=tmp_path / "state", params={},
                      phases=None, registry=reg)
    step = plan.step("w")
    assert step is not None and step.state == "create"
    questions = _Recording()
    runner = Runner(rb, deployment="asks", state_dir=tmp_path / "state", params={},
                    questions=questions, registry=reg, runbook_path=tmp_path / "rb.yaml")
    assert runner.run() == 0
    assert questions.shown["w"] == [f"{step.symbol} {c}" for c in step.changes] == \
        [f"+ write {out}/f"]


def test_a_skipped_step_is_neither_refused_nor_blocked(tmp_path: Path) -> None:
    reg = default_registry()
    rb = load_runbook_text(tmp_path, """
runbook: skips
params:
  - {name: enabled, type: bool, default: false}
  - {name: need, type: string, required: true}
phases:
  - id: one
    steps:
      - {id: bad, action: local.sleep, when: "{{ params.enabled }}", with: {seconds: "{{ 'abc' }}"}}
      - {id: needs, action: local.noop, when: "{{ params.enabled }}", with: {message: "{{ params.need }}"}}
      - {id: refused, action: local.sleep, with: {seconds: "{{ 'abc' }}"}}
""", reg)
    plan = build_plan(rb, deployment="s", state_dir=tmp_path / "state", params={},
                      phases=None, registry=reg)
    for sid in ("bad", "needs"):
        step = plan.step(sid)
        assert step is not None and step.state == "skip" and not step.blocked_by
        assert step.refused is None
    refused = plan.step("refused")
    assert refused is not None and refused.state == "blocked" and refused.refused
    assert [b.kind for b in refused.blocked_by] == ["inputs"]


class _Leaky(Action):
    """A check that shows a stored secret it never read through get_secret."""

    name = "test.leaky"
    Inputs = _Writes
    stored_secrets = frozenset({"kept"})

    def check(self, ctx: StepContext, inputs: _Writes) -> Check:
        return Check(in_sync=False, changes=[f"rotate {inputs.what}"])

    def apply(self, ctx: StepContext, inputs: _Writes) -> Result:
        return Result("ok")


def test_every_secret_of_the_deployment_is_masked_in_the_plan(tmp_path: Path) -> None:
    from elematrix_tui.engine.secrets import SecretStore

    value = "kept-secret-value-1234567"
    SecretStore().set("leak", "kept", value)
    reg = Registry()
    reg.add("test.leaky", _Leaky)
    rb = load_runbook_text(tmp_path, f"""
runbook: leak
phases:
  - id: one
    steps:
      - {{id: l, action: test.leaky, with: {{what: "{value}"}}}}
""", reg)
    plan = build_plan(rb, deployment="leak", state_dir=tmp_path / "state", params={},
                      phases=None, registry=reg)
    assert value not in plan.to_json() and "rotate ********" in plan.to_json()


class _Connects(Action):
    """A check that needs a connection (as every host-fact check needs the run's SSH)."""

    name = "test.connects"
    Inputs = _Writes
    opened: ClassVar[list[str]] = []

    def check(self, ctx: StepContext, inputs: _Writes) -> Check:
        def factory() -> object:
            self.opened.append(inputs.what)
            raise ActionFailed(f"SSH to {inputs.what}: timed out", diagnosis="no answer")

        ctx.resource(f"ssh:{inputs.what}", factory)
        return Check(in_sync=True)

    def apply(self, ctx: StepContext, inputs: _Writes) -> Result:
        return Result("ok")


def test_a_connection_that_failed_is_not_tried_again_in_the_same_plan(tmp_path: Path) -> None:
    """After ``harden`` closed SSH each host step of a plan waited out its own connect
    timeout; one attempt per connection is what a plan can learn."""
    reg = Registry()
    reg.add("test.connects", _Connects)
    rb = load_runbook_text(tmp_path, """
runbook: c
phases:
  - id: one
    steps:
      - {id: a, action: test.connects, with: {what: host1}}
      - {id: b, action: test.connects, with: {what: host1}}
      - {id: c, action: test.connects, with: {what: host2}}
""", reg)
    plan = build_plan(rb, deployment="c", state_dir=tmp_path / "state", params={},
                      phases=None, registry=reg)
    assert _Connects.opened == ["host1", "host2"]
    why = {s.id: s.why for s in plan.steps()}
    assert {s.state for s in plan.steps()} == {"unknown"}
    assert why["a"] == why["b"] and "SSH to host1: timed out" in (why["a"] or ""), why
    assert "host2" in (why["c"] or ""), why
