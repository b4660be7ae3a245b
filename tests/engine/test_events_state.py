"""Events round-trip through their one (de)serialisation; the fold derives state from them."""

from __future__ import annotations

from elematrix_tui.engine import events as ev
from elematrix_tui.engine.model import Runbook
from elematrix_tui.engine.state import RunState

R = "run-1"

SAMPLES: list[ev.Event] = [
    ev.RunStarted(R, runbook="t", deployment="d", resumed=True),
    ev.RunFinished(R, status="failed", exit_code=1, message="m"),
    ev.PhaseStarted(R, phase_id="p", title="P"),
    ev.PhaseFinished(R, phase_id="p", status="passed"),
    ev.PhaseLocked(R, phase_id="p", reason="r"),
    ev.StepStarted(R, phase_id="p", step_id="s", title="S", action="local.noop", attempt=2,
                   is_gate=True, inputs={"a": [1, {"b": None}]}, role="gate"),
    ev.StepFinished(R, phase_id="p", step_id="s", status="ok", attempt=2, duration=0.5,
                    outputs={"x": 1}, diagnosis="d", fix="f", restored=True, role="cleanup"),
    ev.StepRetry(R, step_id="s", attempt=3, delay=1.5, reason="throttled"),
    ev.LogLine(R, step_id="", line="hello", stream="stderr"),
    ev.Progress(R, step_id="s", message="m", elapsed=1.0, done=1, total=2, expected=3),
    ev.Note(R, step_id="s", name="aws.call", data={"request_id": "r"}),
    ev.GateResult(R, phase_id="p", gate_id="g", passed=False, diagnosis="x", duration=2.0),
    ev.Question(R, step_id="s", question="confirm", prompt="go?", answer="yes"),
    ev.GatesCleared(R, phase_id="p"),
    ev.GatesPassed(R, phase_id="p"),
]


def test_every_kind_round_trips_and_is_known() -> None:
    assert {e.kind for e in SAMPLES} == set(ev.KINDS)
    for e in SAMPLES:
        assert ev.parse_event(e.to_dict()) == e, e.kind


def test_journal_form_without_run_id_and_with_extra_keys() -> None:
    d = SAMPLES[5].to_dict()
    d.pop("run_id")
    d["seq"] = 9
    assert ev.parse_event(d, R) == SAMPLES[5]


def test_unknown_or_damaged_forms_are_skipped_not_raised() -> None:
    assert ev.parse_event({"kind": "from.the.future", "run_id": R}) is None
    assert ev.parse_event({"kind": "step.finished", "run_id": R}) is None  # fields missing
    assert ev.parse_event({"run_id": R}) is None


RB = Runbook.model_validate({"runbook": "t", "phases": [
    {"id": "a", "steps": [{"id": "s1", "action": "local.noop"}],
     "gates": [{"id": "g1", "action": "local.noop"}]},
    {"id": "b", "steps": [{"id": "s2", "action": "local.noop"}]},
]})


def started(step: str, attempt: int = 1, run: str = R) -> ev.StepStarted:
    return ev.StepStarted(run, phase_id="a", step_id=step, title=step, action="local.noop",
                          attempt=attempt)


def finished(step: str, status: str, attempt: int = 1, run: str = R,
             **kw: object) -> ev.StepFinished:
    return ev.StepFinished(run, phase_id="a", step_id=step, status=status, attempt=attempt,
                           duration=0.1, **kw)  # type: ignore[arg-type]


def test_fold_steps_attempts_outputs_and_the_lock_rule() -> None:
    st = RunState()
    assert st.lock_reason(RB.phases, "b", "d") is not None  # a's gates have not passed
    assert "deployment 'd'" in (st.lock_reason(RB.phases, "b", "d") or "")
    assert st.lock_reason(RB.phases, "a") is None
    for e in [ev.RunStarted(R, runbook="t", deployment="d"),
              ev.GatesCleared(R, phase_id="a"),
              started("s1"), finished("s1", "failed"),
              ev.StepRetry(R, step_id="s1", attempt=2, delay=0, reason="x"),
              started("s1", 2), finished("s1", "changed", 2, outputs={"o": 1}),
              started("g1"), finished("g1", "ok"),
              ev.GateResult(R, phase_id="a", gate_id="g1", passed=True),
              ev.GatesPassed(R, phase_id="a"),
              started("s2"),
              ev.RunFinished(R, status="interrupted", exit_code=130)]:
        st.apply(e)
    steps = st.steps(R)
    assert (steps["s1"].status, steps["s1"].attempt) == ("changed", 2)
    info = st.run(R)
    assert info is not None
    assert [(a.step_id, a.status) for a in info.attempts] == [
        ("s1", "failed"), ("s1", "changed"), ("g1", "ok"), ("s2", "interrupted")]
    assert steps["s2"].status == "interrupted"  # the run ended under it
    assert st.outputs == {"s1": {"o": 1}, "g1": {}}
    assert st.changed and st.passed == {"a": R}
    assert st.lock_reason(RB.phases, "b") is None
    # Resume gets copies: the run going on cannot change them under it.
    prev = st.resume_from(R)
    st.apply(started("s1", 3))
    assert prev["s1"].status == "changed" and st.steps(R)["s1"].status == "running"
    # A phase with gates starting again locks the next one until they pass again.
    st.apply(ev.GatesCleared("run-2", phase_id="a"))
    assert st.lock_reason(RB.phases, "b") is not None


def test_restored_steps_keep_their_attempts_and_count_no_change() -> None:
    st = RunState.fold([ev.RunStarted(R, runbook="t", deployment="d"),
                        started("s1"), finished("s1", "changed", outputs={"o": 1})])
    st.changed = False
    st.apply(ev.RunStarted(R, runbook="t", deployment="d", resumed=True))
    st.apply(finished("s1", "changed", restored=True, outputs={"o": 1}))
    info = st.run(R)
    assert info is not None and info.restored == ["s1"] and len(info.attempts) == 1
    assert not st.changed
