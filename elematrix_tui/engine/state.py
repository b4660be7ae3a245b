"""The one fold of the event log: what a deployment's runs did, derived from their events.

The journal's event log is the one record of a run (see ``journal.py``). Everything that
asks "what state is this step in", "which phases have passed their gates", "what did the
step output last time", "is this phase locked" folds the same events with
:meth:`RunState.apply`: resume in the runner, the TUI's run model, the headless summary
and the report. The phase-lock rule lives here and nowhere else (:meth:`RunState.lock_reason`).

One ``RunState`` can fold one run or a whole deployment (every run, in journal order):
step states are kept per run, while passed gates, latest outputs and "changed anything"
are facts of the deployment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from . import events as ev

# A step that ended in one of these is done: resume never applies it again.
FINISHED = ("ok", "changed", "skipped")
# Statuses a step is in while an attempt has not ended.
RUNNING = ("running", "retrying")
# The operator said no to a confirmation: the one word for it, for a step (its
# step.finished), its phase (phase.finished) and the run (run.finished). Nothing was
# changed by the step and nothing failed: the phase stays ready to run, resume asks again
# (a declined step is not FINISHED), and every view (TUI, headless summary, report) says
# "declined", never "failed". The run's exit code is the runner's EXIT_INTERRUPTED (130:
# stopped by the operator, state saved, resumable), as for a pause.
DECLINED = "declined"


class PhaseLike(Protocol):
    """What the lock rule needs of a phase (``engine.model.Phase``)."""

    @property
    def id(self) -> str: ...

    @property
    def gates(self) -> Sequence[Any]: ...


@dataclass
class StepState:
    """One step of one run: its latest attempt (or, in ``RunInfo.attempts``, one attempt)."""

    phase_id: str
    step_id: str
    role: str = "step"  # step | gate | cleanup
    title: str = ""
    action: str = ""
    status: str = "pending"  # pending | running | retrying | ok | changed | failed | declined ...
    attempt: int = 0
    started: float | None = None  # wall-clock time the attempt started
    duration: float | None = None
    inputs: dict[str, Any] = field(default_factory=dict)  # rendered, secrets masked
    outputs: dict[str, Any] = field(default_factory=dict)  # secrets masked
    message: str = ""
    diagnosis: str | None = None
    fix: str | None = None
    restored: bool = False  # taken from the journal on resume, not run again

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


@dataclass
class RunInfo:
    """One run, as its events tell it."""

    run_id: str
    runbook: str = ""
    status: str = "running"  # running | passed | failed | interrupted | paused | stopped | declined
    exit_code: int | None = None
    message: str = ""
    started: float | None = None
    finished: float | None = None
    steps: dict[str, StepState] = field(default_factory=dict)  # latest attempt per step
    attempts: list[StepState] = field(default_factory=list)  # every attempt, in order
    restored: list[str] = field(default_factory=list)  # step ids restored on resume
    phases: dict[str, str] = field(default_factory=dict)  # phase id -> its last status
    locked: dict[str, str] = field(default_factory=dict)  # phase id -> why it was locked
    gates: list[ev.GateResult] = field(default_factory=list)
    notes: list[ev.Note] = field(default_factory=list)
    questions: list[ev.Question] = field(default_factory=list)


def _role(is_gate: bool, role: str) -> str:
    # Journals before format 2 did not record the role: a gate said so, the rest were steps.
    return "gate" if is_gate else (role or "step")


class RunState:
    """Folds events (live from the runner, or read back from the journal) into state."""

    def __init__(self) -> None:
        self.runs: dict[str, RunInfo] = {}
        self.current: str | None = None  # the run of the latest run.started
        # phase id -> the run in which all its gates last passed (this deployment).
        self.passed: dict[str, str] = {}
        # step id -> outputs of its latest successful attempt, in any run (masked).
        self.outputs: dict[str, dict[str, Any]] = {}
        # Whether any run changed something (a step ended "changed").
        self.changed = False

    @classmethod
    def fold(cls, events: Iterable[ev.Event]) -> RunState:
        state = cls()
        for e in events:
            state.apply(e)
        return state

    # -- queries ----------------------------------------------------------------------
    def run(self, run_id: str | None = None) -> RunInfo | None:
        """A run by id (default: the latest one started)."""
        rid = self.current if run_id is None else run_id
        return self.runs.get(rid) if rid is not None else None

    def steps(self, run_id: str | None = None) -> dict[str, StepState]:
        """The latest attempt of each step of a run (empty for an unknown run)."""
        info = self.run(run_id)
        return info.steps if info is not None else {}

    def resume_from(self, run_id: str) -> dict[str, StepState]:
        """What resume needs of a run: a copy of each step's latest attempt, which the run
        about to continue cannot change under the caller."""
        return {k: replace(v, inputs=dict(v.inputs), outputs=dict(v.outputs))
                for k, v in self.steps(run_id).items()}

    def lock_reason(self, phases: Sequence[PhaseLike], phase_id: str,
                    deployment: str | None = None) -> str | None:
        """Why a phase is locked, or None. The rule: a phase is locked while the phase
        before it (in the runbook) has gates that have not passed in this deployment."""
        ids = [p.id for p in phases]
        if phase_id not in ids:
            return None
        index = ids.index(phase_id)
        if index == 0:
            return None
        before = phases[index - 1]
        if not before.gates or before.id in self.passed:
            return None
        where = f"deployment {deployment!r}" if deployment else "this deployment"
        return (f"phase {phase_id!r} is locked: the gates of phase {before.id!r} have not "
                f"passed in {where}. Run that phase first (--phase {before.id}).")

    # -- the fold ---------------------------------------------------------------------
    def _info(self, run_id: str) -> RunInfo:
        info = self.runs.get(run_id)
        if info is None:
            info = self.runs[run_id] = RunInfo(run_id)
        return info

    def apply(self, e: ev.Event) -> None:
        """Fold one event in. Log lines and progress change no state (the hot path)."""
        handler = _HANDLERS.get(e.kind)
        if handler is not None:
            handler(self, e)

    def _run_started(self, e: ev.RunStarted) -> None:
        info = self._info(e.run_id)
        info.runbook = e.runbook
        info.status, info.exit_code, info.message, info.finished = "running", None, "", None
        if info.started is None:
            info.started = e.ts
        self.current = e.run_id

    def _run_finished(self, e: ev.RunFinished) -> None:
        info = self._info(e.run_id)
        info.status, info.exit_code, info.message, info.finished = (
            e.status, e.exit_code, e.message, e.ts)
        for st in [*info.steps.values(), *info.attempts]:
            if st.status in RUNNING:
                st.status = "interrupted"  # the run ended under it

    def _phase_started(self, e: ev.PhaseStarted) -> None:
        info = self._info(e.run_id)
        info.phases[e.phase_id] = "running"
        info.locked.pop(e.phase_id, None)

    def _phase_finished(self, e: ev.PhaseFinished) -> None:
        self._info(e.run_id).phases[e.phase_id] = e.status

    def _phase_locked(self, e: ev.PhaseLocked) -> None:
        info = self._info(e.run_id)
        info.phases[e.phase_id] = "locked"
        info.locked[e.phase_id] = e.reason

    def _gates_cleared(self, e: ev.GatesCleared) -> None:
        self.passed.pop(e.phase_id, None)

    def _gates_passed(self, e: ev.GatesPassed) -> None:
        self.passed[e.phase_id] = e.run_id

    def _step_started(self, e: ev.StepStarted) -> None:
        info = self._info(e.run_id)
        st = StepState(phase_id=e.phase_id, step_id=e.step_id, role=_role(e.is_gate, e.role),
                       title=e.title, action=e.action, status="running", attempt=e.attempt,
                       started=e.ts, inputs=dict(e.inputs))
        info.steps[e.step_id] = st
        info.attempts.append(replace(st))

    def _step_finished(self, e: ev.StepFinished) -> None:
        info = self._info(e.run_id)
        st = info.steps.get(e.step_id)
        if st is None:
            st = info.steps[e.step_id] = StepState(phase_id=e.phase_id, step_id=e.step_id,
                                                   role=_role(e.is_gate, e.role))
        st.status, st.duration, st.message = e.status, e.duration, e.message
        st.attempt = max(st.attempt, e.attempt)
        st.outputs, st.diagnosis, st.fix, st.restored = (
            dict(e.outputs), e.diagnosis, e.fix, e.restored)
        if st.started is None:
            st.started = e.ts - e.duration
        if e.status in ("ok", "changed"):
            self.outputs[e.step_id] = dict(e.outputs)
        if e.restored:
            info.restored.append(e.step_id)
            return  # its attempts are already in this run's record
        if e.status == "changed":
            self.changed = True
        attempt = next((a for a in reversed(info.attempts)
                        if a.step_id == e.step_id and a.attempt == e.attempt), None)
        if attempt is None:
            attempt = replace(st, inputs={})
            info.attempts.append(attempt)
        attempt.status, attempt.duration, attempt.message = e.status, e.duration, e.message
        attempt.outputs, attempt.diagnosis, attempt.fix = dict(e.outputs), e.diagnosis, e.fix

    def _step_retry(self, e: ev.StepRetry) -> None:
        st = self._info(e.run_id).steps.get(e.step_id)
        if st is not None:
            st.status = "retrying"

    def _gate_result(self, e: ev.GateResult) -> None:
        info = self._info(e.run_id)
        info.gates.append(e)
        st = info.steps.get(e.gate_id)
        if st is None:
            return
        if not e.passed:
            st.status = "failed"
        elif st.status not in FINISHED:
            # A skipped gate (its `when` was false) lets the phase pass but proved nothing:
            # it stays "skipped", never shown as ok.
            st.status = "ok"
        st.message = e.message or st.message
        st.diagnosis = e.diagnosis or st.diagnosis
        st.fix = e.fix or st.fix
        if e.duration:
            st.duration = e.duration

    def _note(self, e: ev.Note) -> None:
        self._info(e.run_id).notes.append(e)

    def _question(self, e: ev.Question) -> None:
        self._info(e.run_id).questions.append(e)


_HANDLERS: dict[str, Any] = {
    "run.started": RunState._run_started,
    "run.finished": RunState._run_finished,
    "phase.started": RunState._phase_started,
    "phase.finished": RunState._phase_finished,
    "phase.locked": RunState._phase_locked,
    "gates.cleared": RunState._gates_cleared,
    "gates.passed": RunState._gates_passed,
    "step.started": RunState._step_started,
    "step.finished": RunState._step_finished,
    "step.retry": RunState._step_retry,
    "gate.result": RunState._gate_result,
    "note": RunState._note,
    "question": RunState._question,
}
