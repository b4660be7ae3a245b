"""What the run screen shows, folded from engine events. Pure Python: no textual here.

The same fold serves a live run (events from the runner's sinks) and a resumed one
(events read back from the journal), so a restored screen is exactly the screen that
was lost.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableSet
from dataclasses import dataclass, field
from typing import Any

from ..engine import events as ev
from ..engine.model import Runbook, Step
from ..engine.state import DECLINED, RunState

# Statuses that end a step attempt for good (a retry starts a new attempt).
FINAL_STEP = frozenset({"ok", "changed", "failed", "skipped", "interrupted", DECLINED})


@dataclass
class StepView:
    """One step (or gate, or cleanup step) as the operator sees it."""

    phase_id: str
    step_id: str
    title: str
    action: str
    role: str = "step"  # step | gate | cleanup
    confirm: bool = False
    destructive: bool = False
    skippable: bool = False
    expected: float | None = None
    status: str = "pending"
    attempt: int = 0
    duration: float | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    diagnosis: str | None = None
    fix: str | None = None
    retry_reason: str | None = None
    restored: bool = False
    notes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    progress: ev.Progress | None = None
    log_lines: int = 0

    @property
    def is_gate(self) -> bool:
        return self.role == "gate"

    @property
    def label(self) -> str:
        return self.title or self.step_id

    @classmethod
    def from_step(cls, phase_id: str, step: Step, role: str) -> StepView:
        return cls(phase_id=phase_id, step_id=step.id, title=step.title, action=step.action,
                   role=role, confirm=step.confirm, destructive=step.destructive,
                   skippable=step.skippable, expected=step.expected_duration)


@dataclass
class PhaseView:
    """One phase: its steps, its gates and its state (locked/ready/running/passed/failed)."""

    phase_id: str
    title: str
    description: str = ""
    steps: list[StepView] = field(default_factory=list)
    gates: list[StepView] = field(default_factory=list)
    cleanup: list[StepView] = field(default_factory=list)
    state: str = "locked"
    reason: str = ""

    @property
    def label(self) -> str:
        return self.title or self.phase_id

    def all(self) -> list[StepView]:
        return self.steps + self.gates + self.cleanup


class PassedPhases(MutableSet[str]):
    """The phases whose gates passed, as a set: a view of the fold's ``RunState.passed``
    (one record; adding here is what the engine's ``gates.passed`` does)."""

    def __init__(self, state: RunState) -> None:
        self._state = state

    def __contains__(self, phase_id: object) -> bool:
        return phase_id in self._state.passed

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._state.passed))

    def __len__(self) -> int:
        return len(self._state.passed)

    def add(self, phase_id: str) -> None:
        self._state.passed.setdefault(phase_id, "")

    def discard(self, phase_id: str) -> None:
        self._state.passed.pop(phase_id, None)


class RunModel:
    """Phases and steps of one runbook for one deployment, kept current by :meth:`apply`.

    Step states (status, attempt, outputs, message...), passed gates and phase locks come
    from the engine's fold (``engine.state.RunState``), the same one resume, the headless
    summary and the report use; this class adds only what a screen shows besides (log
    line counts, progress, notes, the phase tree's running/failed/ready states)."""

    def __init__(self, runbook: Runbook, passed_phases: Iterable[str] = ()) -> None:
        self.runbook = runbook
        self.state = RunState()
        self.phases: list[PhaseView] = []
        self.steps: dict[str, StepView] = {}
        self.passed = set(passed_phases)
        # Phases that passed in what this screen has seen (those without gates too).
        self._passed_here: set[str] = set()
        self.run_id: str | None = None
        self.status: str = "idle"  # idle | running | passed | failed | interrupted
        self.exit_code: int | None = None
        self.message: str = ""
        # The steps running now, in the order they started (several in a phase whose
        # runbook lets steps overlap: engine/schedule.py).
        self.running: list[str] = []
        for ph in runbook.phases:
            pv = PhaseView(phase_id=ph.id, title=ph.title, description=ph.description)
            pv.steps = [StepView.from_step(ph.id, s, "step") for s in ph.steps]
            pv.gates = [StepView.from_step(ph.id, s, "gate") for s in ph.gates]
            pv.cleanup = [StepView.from_step(ph.id, s, "cleanup") for s in ph.cleanup]
            for sv in pv.all():
                self.steps[sv.step_id] = sv
            self.phases.append(pv)
        self.recompute_locks()

    @property
    def passed(self) -> PassedPhases:
        """Phases whose gates passed in this deployment (a live view of the fold)."""
        return PassedPhases(self.state)

    @passed.setter
    def passed(self, phases: Iterable[str]) -> None:
        keep = set(phases)
        self.state.passed = {p: self.state.passed.get(p, "") for p in keep}

    # -- queries --------------------------------------------------------------
    def phase(self, phase_id: str) -> PhaseView | None:
        for pv in self.phases:
            if pv.phase_id == phase_id:
                return pv
        return None

    def next_phase(self) -> PhaseView | None:
        """The first phase that is ready or failed: what "run phase" runs by default."""
        for pv in self.phases:
            if pv.state in ("ready", "failed"):
                return pv
        return None

    def failed_steps(self) -> list[StepView]:
        return [s for s in self.steps.values() if s.status == "failed"]

    # -- state ----------------------------------------------------------------
    def recompute_locks(self) -> None:
        """Phase states from the engine's lock rule (``RunState.lock_reason``). Running and
        failed phases keep their state."""
        for pv in self.phases:
            if pv.phase_id in self.state.passed or pv.phase_id in self._passed_here:
                pv.state = "passed"
            elif pv.state not in ("running", "failed"):
                reason = self.state.lock_reason(self.runbook.phases, pv.phase_id)
                if reason is not None:
                    pv.state = "locked"
                    pv.reason = pv.reason or reason
                else:
                    pv.state = "ready"
                    pv.reason = ""

    def _step(self, phase_id: str | None, step_id: str, **kw: Any) -> StepView:
        sv = self.steps.get(step_id)
        if sv is None:
            # A step the runbook on screen does not know (changed runbook): show it anyway.
            sv = StepView(phase_id=phase_id or "", step_id=step_id, title=kw.get("title", ""),
                          action=kw.get("action", ""), role=kw.get("role", "step"))
            self.steps[step_id] = sv
            pv = self.phase(sv.phase_id)
            if pv is not None:
                (pv.gates if sv.is_gate else pv.steps).append(sv)
        return sv

    def _sync(self, sv: StepView, run_id: str) -> None:
        """The step's state as the fold has it."""
        st = self.state.steps(run_id).get(sv.step_id)
        if st is None:
            return
        sv.status, sv.attempt, sv.duration = st.status, st.attempt, st.duration
        sv.inputs, sv.outputs, sv.message = dict(st.inputs), dict(st.outputs), st.message
        sv.diagnosis, sv.fix, sv.restored = st.diagnosis, st.fix, st.restored

    def apply(self, e: ev.Event) -> set[str]:
        """Fold one event in; return what changed: step ids, phase ids, and/or ``"run"``."""
        if isinstance(e, ev.LogLine):
            sv = self.steps.get(e.step_id)
            if sv is not None:
                sv.log_lines += 1
            return set()
        self.state.apply(e)
        if isinstance(e, ev.RunStarted):
            self.run_id = e.run_id
            self.status = "running"
            self.exit_code = None
            self.message = ""
            return {"run"}
        if isinstance(e, ev.RunFinished):
            self.status = e.status
            self.exit_code = e.exit_code
            self.message = e.message
            self.running = []
            changed = {"run"}
            for pv in self.phases:
                if pv.state == "running":
                    pv.state = "failed" if e.status == "failed" else "ready"
                    changed.add(pv.phase_id)
            for sv in self.steps.values():
                if sv.status in ("running", "retrying"):
                    self._sync(sv, e.run_id)
                    if sv.status in ("running", "retrying"):  # a run this view never saw
                        sv.status = "interrupted"
                    sv.progress = None
                    changed.add(sv.step_id)
            self.recompute_locks()
            return changed
        if isinstance(e, ev.PhaseStarted):
            ph = self.phase(e.phase_id)
            self._passed_here.discard(e.phase_id)
            if ph is not None:
                ph.state = "running"
                ph.reason = ""
            return {e.phase_id}
        if isinstance(e, ev.PhaseFinished):
            ph = self.phase(e.phase_id)
            if ph is not None:
                if e.status == "passed":
                    self._passed_here.add(e.phase_id)
                    ph.state = "passed"
                elif e.status in ("failed", "stopped"):
                    ph.state = "failed"
                else:
                    ph.state = "ready"
                self.recompute_locks()
            return {p.phase_id for p in self.phases}
        if isinstance(e, ev.PhaseLocked):
            ph = self.phase(e.phase_id)
            if ph is not None:
                ph.state = "locked"
                ph.reason = e.reason
            return {e.phase_id}
        if isinstance(e, (ev.GatesPassed, ev.GatesCleared)):
            self.recompute_locks()
            return {p.phase_id for p in self.phases}
        if isinstance(e, ev.StepStarted):
            sv = self._step(e.phase_id, e.step_id, title=e.title, action=e.action,
                            role="gate" if e.is_gate else "step")
            self._sync(sv, e.run_id)
            sv.retry_reason = None
            sv.progress = None
            if e.attempt <= 1:
                sv.notes = []
            if e.step_id not in self.running:
                self.running.append(e.step_id)
            ph = self.phase(e.phase_id)
            if ph is not None and ph.state != "running":
                ph.state = "running"
                return {e.step_id, e.phase_id, "run"}
            return {e.step_id, "run"}
        if isinstance(e, ev.StepFinished):
            sv = self._step(e.phase_id, e.step_id, role="gate" if e.is_gate else "step")
            self._sync(sv, e.run_id)
            sv.progress = None
            if e.step_id in self.running:
                self.running.remove(e.step_id)
            return {e.step_id, "run"}
        if isinstance(e, ev.StepRetry):
            sv = self.steps.get(e.step_id)
            if sv is None:
                return set()
            self._sync(sv, e.run_id)
            sv.retry_reason = e.reason
            sv.attempt = max(sv.attempt, e.attempt)
            return {e.step_id}
        if isinstance(e, ev.Progress):
            sv = self.steps.get(e.step_id)
            if sv is None:
                return set()
            sv.progress = e
            return {e.step_id}
        if isinstance(e, ev.Note):
            sv = self.steps.get(e.step_id)
            if sv is None:
                return set()
            sv.notes.append((e.name, dict(e.data)))
            return {e.step_id}
        if isinstance(e, ev.Question):
            sv = self.steps.get(e.step_id)
            if sv is None:
                return set()
            # The answer as the engine journaled it (never a secret).
            sv.notes.append(("asked", {"question": e.question, "prompt": e.prompt,
                                       "answer": e.answer}))
            return {e.step_id}
        if isinstance(e, ev.GateResult):
            sv = self.steps.get(e.gate_id)
            if sv is None:
                return set()
            self._sync(sv, e.run_id)
            if not e.passed:
                sv.status = "failed"  # a gate result for a gate this view never saw start
            return {e.gate_id}
        return set()


def event_from_dict(d: dict[str, Any], run_id: str = "") -> ev.Event | None:
    """Rebuild an event from its journal form (``Journal.events``); None for unknown kinds.

    The one parser is the engine's (``engine.events.parse_event``); this name stays for
    the screens that replay journal rows."""
    return ev.parse_event(d, run_id)
