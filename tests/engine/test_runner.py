"""The runner's behaviour: order, gates and locks, retries, timeouts, failure handling."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from elematrix_tui.engine import events as ev
from elematrix_tui.engine.errors import InputError, LockedError
from elematrix_tui.engine.journal import Journal
from elematrix_tui.engine.lock import DeploymentLock
from elematrix_tui.engine.paths import deployment_dir
from elematrix_tui.engine.report import build_report

from .helpers import make_runner, write_runbook

TWO_PHASES = """
runbook: t
params:
  - {name: out, type: string}
phases:
  - id: one
    steps:
      - {id: a, action: local.write, with: {path: "{{ params.out }}/a", content: A}}
      - id: b
        action: local.noop
        with: {outputs: {value: "{{ steps.a.path }}", n: 3}}
    gates:
      - id: gate_one
        action: local.fail
        with: {unless_exists: "{{ params.out }}/ok", message: not yet,
               diagnosis: the marker is missing, fix: "touch {{ params.out }}/ok"}
  - id: two
    steps:
      - {id: c, action: local.noop, with: {outputs: {from_b: "{{ steps.b.value }}"}}}
"""


def test_outputs_flow_and_gate_locks_next_phase(tmp_path: Path, state_dir: Path) -> None:
    rb = write_runbook(tmp_path, TWO_PHASES)
    runner, sink = make_runner(rb, state_dir, params={"out": str(tmp_path)})
    assert runner.run() == 1
    gate = sink.of(ev.GateResult)[0]
    assert not gate.passed and gate.diagnosis == "the marker is missing"
    assert gate.fix == f"touch {tmp_path}/ok"
    # Phase two is locked until phase one's gates pass in this deployment.
    runner, sink = make_runner(rb, state_dir, params={"out": str(tmp_path)}, phases=["two"])
    assert runner.run() == 1
    assert sink.of(ev.PhaseLocked)
    (tmp_path / "ok").touch()
    runner, sink = make_runner(rb, state_dir, params={"out": str(tmp_path)})
    assert runner.run() == 0
    assert sink.statuses()["c"] == "ok"
    c = [e for e in sink.of(ev.StepFinished) if e.step_id == "c"][0]
    assert c.outputs == {"from_b": f"{tmp_path}/a"}
    # Now phase two alone runs, with outputs of phase one restored from the journal.
    runner, sink = make_runner(rb, state_dir, params={"out": str(tmp_path)}, phases=["two"])
    assert runner.run() == 0


def test_retry_with_backoff_then_success(tmp_path: Path, state_dir: Path) -> None:
    marker = tmp_path / "m"
    rb = write_runbook(tmp_path, f"""
runbook: t
phases:
  - id: one
    steps:
      - id: flaky
        action: local.fail
        with: {{unless_exists: "{marker}"}}
        retry: {{attempts: 3, delay: 0.2, backoff: 1.5}}
""")
    runner, sink = make_runner(rb, state_dir)
    threading.Timer(0.1, marker.touch).start()
    assert runner.run() == 0
    assert len(sink.of(ev.StepRetry)) == 1
    assert sink.of(ev.StepFinished)[-1].attempt == 2


def test_timeout_fails_with_advice(tmp_path: Path, state_dir: Path) -> None:
    rb = write_runbook(tmp_path, """
runbook: t
phases:
  - id: one
    steps:
      - {id: slow, action: local.sleep, with: {seconds: 30}, timeout: 0.3}
""")
    runner, sink = make_runner(rb, state_dir)
    assert runner.run() == 1
    fin = sink.of(ev.StepFinished)[-1]
    assert fin.status == "failed" and "timed out after 0.3 s" in fin.message and fin.fix


def test_on_failure_continue_and_cleanup(tmp_path: Path, state_dir: Path) -> None:
    rb = write_runbook(tmp_path, f"""
runbook: t
phases:
  - id: one
    steps:
      - {{id: soft, action: local.fail, on_failure: continue}}
      - {{id: after, action: local.noop}}
      - {{id: hard, action: local.fail, on_failure: undo}}
      - {{id: never, action: local.noop}}
    cleanup:
      - {{id: undo, action: local.write, with: {{path: "{tmp_path}/undone", content: x}}}}
""")
    runner, sink = make_runner(rb, state_dir)
    assert runner.run() == 1
    s = sink.statuses()
    assert s["soft"] == "failed" and s["after"] == "ok" and s["undo"] == "changed"
    assert "never" not in s and (tmp_path / "undone").exists()


def test_expect_and_when(tmp_path: Path, state_dir: Path) -> None:
    rb = write_runbook(tmp_path, """
runbook: t
params:
  - {name: flag, type: bool, default: false}
phases:
  - id: one
    steps:
      - {id: skipped, action: local.noop, when: params.flag}
      - {id: checked, action: local.noop, with: {outputs: {code: 1}}, expect: {code: 0},
         fix: make the code zero}
""")
    runner, sink = make_runner(rb, state_dir)
    assert runner.run() == 1
    s = sink.statuses()
    assert s["skipped"] == "skipped"
    fin = sink.of(ev.StepFinished)[-1]
    assert "code is 1, expected 0" in fin.message and fin.fix == "make the code zero"


def test_confirm_declined_changes_nothing_and_is_resumable(tmp_path: Path,
                                                           state_dir: Path) -> None:
    rb = write_runbook(tmp_path, f"""
runbook: t
phases:
  - id: one
    steps:
      - {{id: w, action: local.write, with: {{path: "{tmp_path}/w", content: x}}, confirm: true}}
""")
    runner, sink = make_runner(rb, state_dir, answer=False)
    # Declined is its own outcome (engine/state.py DECLINED): exit 130 (stopped by the
    # operator, resumable), the step, phase and run all say "declined", nothing "failed".
    assert runner.run() == 130
    assert not (tmp_path / "w").exists()
    run_id = runner.run_id
    assert sink.statuses()["w"] == "declined"
    assert [e.status for e in sink.of(ev.PhaseFinished)] == ["declined"]
    assert [e.status for e in sink.of(ev.RunFinished)] == ["declined"]
    with Journal.open(state_dir, "test") as j:
        report = build_report(j, run_id)
    assert "declined" in report and "failed" not in report.lower()
    runner, sink = make_runner(rb, state_dir, answer=True)
    assert runner.resume(run_id) == 0
    assert (tmp_path / "w").read_text() == "x"


def test_confirm_skipped_when_already_in_sync(tmp_path: Path, state_dir: Path) -> None:
    (tmp_path / "w").write_text("x")
    (tmp_path / "w").chmod(0o644)
    rb = write_runbook(tmp_path, f"""
runbook: t
phases:
  - id: one
    steps:
      - {{id: w, action: local.write, with: {{path: "{tmp_path}/w", content: x}}, confirm: true}}
""")
    runner, sink = make_runner(rb, state_dir, answer=False)  # would decline if asked
    assert runner.run() == 0
    assert sink.statuses()["w"] == "ok"


def test_permanent_parameter_is_locked_by_a_step(tmp_path: Path, state_dir: Path) -> None:
    rb = write_runbook(tmp_path, """
runbook: t
params:
  - {name: server_name, type: hostname, permanent: true, permanent_reason: baked into user ids}
phases:
  - id: one
    steps:
      - {id: start, action: local.noop, locks: [server_name]}
""")
    runner, _ = make_runner(rb, state_dir, params={"server_name": "chat.example.org"})
    assert runner.run() == 0
    runner, _ = make_runner(rb, state_dir, params={"server_name": "other.example.org"})
    with pytest.raises(InputError) as exc:
        runner.run()
    assert "permanent" in str(exc.value) and "baked into user ids" in str(exc.value)
    # The remembered value is used when the operator does not repeat it.
    runner, _ = make_runner(rb, state_dir)
    assert runner.run() == 0


def test_missing_and_bad_params_are_input_errors(tmp_path: Path, state_dir: Path) -> None:
    rb = write_runbook(tmp_path, """
runbook: t
params:
  - {name: cidr, type: cidr}
  - {name: email, type: email}
phases:
  - id: one
    steps: [{id: s, action: local.noop}]
""")
    runner, _ = make_runner(rb, state_dir, params={"email": "nope", "bogus": "1"})
    with pytest.raises(InputError) as exc:
        runner.run()
    text = str(exc.value)
    assert "'cidr' is required" in text and "e-mail" in text and "unknown parameter 'bogus'" in text
    # Nothing was recorded for a run refused for bad input.
    j = Journal.open(state_dir, "test")
    assert j.runs() == []


def test_lock_refuses_a_second_run_and_says_who(tmp_path: Path, state_dir: Path) -> None:
    rb = write_runbook(tmp_path, "runbook: t\nphases:\n  - id: one\n    steps: "
                                 "[{id: s, action: local.noop}]\n")
    holder = DeploymentLock(deployment_dir(state_dir, "test") / "lock")
    holder.acquire("test", "run t")
    try:
        runner, _ = make_runner(rb, state_dir)
        with pytest.raises(LockedError) as exc:
            runner.run()
        assert "in use by pid" in str(exc.value) and "run t" in str(exc.value)
    finally:
        holder.release()
    runner, _ = make_runner(rb, state_dir)
    assert runner.run() == 0


def test_cancel_interrupts_and_resume_finishes(tmp_path: Path, state_dir: Path) -> None:
    rb = write_runbook(tmp_path, f"""
runbook: t
phases:
  - id: one
    steps:
      - {{id: a, action: local.write, with: {{path: "{tmp_path}/a", content: A}}}}
      - {{id: wait, action: local.sleep, with: {{seconds: 20}}}}
      - {{id: b, action: local.write, with: {{path: "{tmp_path}/b", content: B}}}}
""")
    runner, sink = make_runner(rb, state_dir)
    threading.Timer(0.4, runner.cancel).start()
    assert runner.run() == 130
    assert sink.statuses()["wait"] == "interrupted"
    run_id = runner.run_id
    rb.write_text(rb.read_text().replace("seconds: 20", "seconds: 0.01"))
    runner, sink = make_runner(rb, state_dir)
    assert runner.resume(run_id) == 0
    restored = [e.step_id for e in sink.of(ev.StepFinished) if e.restored]
    assert restored == ["a"]
    assert (tmp_path / "b").read_text() == "B"


def test_pause_stops_after_current_step(tmp_path: Path, state_dir: Path) -> None:
    rb = write_runbook(tmp_path, """
runbook: t
phases:
  - id: one
    steps:
      - {id: a, action: local.sleep, with: {seconds: 0.3}}
      - {id: b, action: local.noop}
""")
    runner, sink = make_runner(rb, state_dir)
    threading.Timer(0.1, runner.request_pause).start()
    assert runner.run() == 130
    assert sink.statuses() == {"a": "ok"}
    assert sink.of(ev.RunFinished)[-1].status == "paused"


def test_process_local_steps_are_applied_again_on_resume(tmp_path: Path,
                                                        state_dir: Path) -> None:
    from elematrix_tui.actions import default_registry
    from elematrix_tui.actions.local import Noop
    from elematrix_tui.engine.loader import load_runbook
    from elematrix_tui.engine.runner import Runner, RunOptions
    from elematrix_tui.engine.standalone import AutoQuestions

    class Tunnel(Noop):
        name = "test.tunnel"
        process_local = True

    registry = default_registry()
    registry.add("test.tunnel", Tunnel)
    rb_path = write_runbook(tmp_path, """
runbook: t
phases:
  - id: one
    steps:
      - {id: tunnel, action: test.tunnel, with: {outputs: {url: "http://127.0.0.1:1"}}}
      - {id: plain, action: local.noop}
      - {id: stop_here, action: local.fail, with: {unless_exists: "GO"}}
""".replace("GO", f"{tmp_path}/go"))
    rb = load_runbook(rb_path, registry)

    def runner() -> tuple[Runner, list[ev.Event]]:
        seen: list[ev.Event] = []
        return Runner(rb, deployment="test", state_dir=state_dir, questions=AutoQuestions(),
                      sinks=[seen.append], registry=registry, options=RunOptions(),
                      runbook_path=rb_path), seen

    first, _ = runner()
    assert first.run() == 1
    (tmp_path / "go").touch()
    second, seen = runner()
    assert second.resume(first.run_id) == 0
    restored = {e.step_id for e in seen if isinstance(e, ev.StepFinished) and e.restored}
    applied = {e.step_id for e in seen if isinstance(e, ev.StepStarted)}
    assert restored == {"plain"} and "tunnel" in applied


def test_remembered_params_merge_across_runbooks_and_confirmations_are_forgotten(
        tmp_path: Path, state_dir: Path) -> None:
    deploy = write_runbook(tmp_path, """
runbook: deploy
params:
  - {name: operator_cidr, type: cidr}
phases:
  - id: one
    steps: [{id: s, action: local.noop, with: {outputs: {c: "{{ params.operator_cidr }}"}}}]
""", "deploy.yaml")
    teardown = write_runbook(tmp_path, """
runbook: teardown
params:
  - {name: confirm, type: string, default: "", remember: false}
phases:
  - id: one
    steps: [{id: t, action: local.noop, with: {outputs: {c: "{{ params.confirm }}"}}}]
""", "teardown.yaml")
    runner, _ = make_runner(deploy, state_dir, params={"operator_cidr": "203.0.113.7/32"})
    assert runner.run() == 0
    runner, _ = make_runner(teardown, state_dir, params={"confirm": "test"})
    assert runner.run() == 0
    runner, sink = make_runner(teardown, state_dir)
    assert runner.run() == 0
    assert [e for e in sink.of(ev.StepFinished) if e.step_id == "t"][0].outputs == {"c": ""}
    runner, sink = make_runner(deploy, state_dir)  # operator_cidr still remembered
    assert runner.run() == 0
