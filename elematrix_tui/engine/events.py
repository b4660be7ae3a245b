"""Typed events the engine emits while it runs. Sinks (TUI, CLI printer, journal) observe them.

Every event is a frozen dataclass with a literal ``kind``; together they form a pydantic
discriminated union on ``kind`` (:data:`AnyEvent`). The two directions live here and
nowhere else: :meth:`Event.to_dict` gives the JSON form the journal stores, and
:func:`parse_event` turns that form back into the typed event. The event log is the one
record of a run; ``engine/state.py`` folds it.

Plain dataclasses rather than pydantic models on purpose: a streamed log line is built
for every line of host output, and a dataclass costs a fraction of a validated model;
pydantic validates only what is read back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError

_FIELDS: dict[type, tuple[str, ...]] = {}


@dataclass(frozen=True)
class Event:
    run_id: str
    ts: float = field(default_factory=time.time, kw_only=True)
    kind: str = field(default="event", kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies every value, which is most of
        # the engine's cost per streamed log line; event payloads are plain JSON already.
        names = _FIELDS.get(type(self))
        if names is None:
            names = _FIELDS[type(self)] = tuple(f.name for f in fields(self))
        return {n: getattr(self, n) for n in names}


@dataclass(frozen=True)
class RunStarted(Event):
    runbook: str
    deployment: str
    resumed: bool = False
    kind: Literal["run.started"] = field(default="run.started", kw_only=True)


@dataclass(frozen=True)
class RunFinished(Event):
    status: str  # passed | failed | interrupted | paused | stopped | declined
    exit_code: int
    message: str = ""
    kind: Literal["run.finished"] = field(default="run.finished", kw_only=True)


@dataclass(frozen=True)
class PhaseStarted(Event):
    phase_id: str
    title: str
    kind: Literal["phase.started"] = field(default="phase.started", kw_only=True)


@dataclass(frozen=True)
class PhaseFinished(Event):
    phase_id: str
    status: str  # passed | failed | skipped | interrupted | paused | stopped | declined
    kind: Literal["phase.finished"] = field(default="phase.finished", kw_only=True)


@dataclass(frozen=True)
class PhaseLocked(Event):
    phase_id: str
    reason: str
    kind: Literal["phase.locked"] = field(default="phase.locked", kw_only=True)


@dataclass(frozen=True)
class StepStarted(Event):
    phase_id: str
    step_id: str
    title: str
    action: str
    attempt: int
    is_gate: bool = False
    inputs: dict[str, Any] = field(default_factory=dict)  # rendered, secrets masked
    # step | gate | cleanup; "" in journals before format 2 (is_gate then decides).
    role: str = ""
    kind: Literal["step.started"] = field(default="step.started", kw_only=True)


@dataclass(frozen=True)
class StepFinished(Event):
    phase_id: str
    step_id: str
    status: str  # ok | changed | failed | skipped | interrupted | declined (state.DECLINED)
    attempt: int
    duration: float
    is_gate: bool = False
    message: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)  # secrets masked
    diagnosis: str | None = None
    fix: str | None = None
    restored: bool = False  # taken from the journal on resume, not run again
    role: str = ""  # as in StepStarted
    kind: Literal["step.finished"] = field(default="step.finished", kw_only=True)


@dataclass(frozen=True)
class StepRetry(Event):
    step_id: str
    attempt: int
    delay: float
    reason: str
    kind: Literal["step.retry"] = field(default="step.retry", kw_only=True)


@dataclass(frozen=True)
class LogLine(Event):
    step_id: str
    line: str
    stream: str = "stdout"
    kind: Literal["log"] = field(default="log", kw_only=True)


@dataclass(frozen=True)
class Progress(Event):
    step_id: str
    message: str
    elapsed: float
    done: float | None = None
    total: float | None = None
    expected: float | None = None
    kind: Literal["progress"] = field(default="progress", kw_only=True)


@dataclass(frozen=True)
class Note(Event):
    """A structured fact from an action (an AWS call with its request id, a pinned key...)."""

    step_id: str
    name: str
    data: dict[str, Any] = field(default_factory=dict)
    kind: Literal["note"] = field(default="note", kw_only=True)


@dataclass(frozen=True)
class GateResult(Event):
    phase_id: str
    gate_id: str
    passed: bool
    message: str = ""
    diagnosis: str | None = None
    fix: str | None = None
    duration: float = 0.0
    kind: Literal["gate.result"] = field(default="gate.result", kw_only=True)


@dataclass(frozen=True)
class Question(Event):
    step_id: str
    question: str  # confirm | approve | secret | choose
    prompt: str
    answer: str | None = None  # filled in the journal copy, never a secret
    kind: Literal["question"] = field(default="question", kw_only=True)


@dataclass(frozen=True)
class GatesCleared(Event):
    """A phase with gates starts again: its earlier pass no longer unlocks the next phase."""

    phase_id: str
    kind: Literal["gates.cleared"] = field(default="gates.cleared", kw_only=True)


@dataclass(frozen=True)
class GatesPassed(Event):
    """Every gate of the phase passed in this run: the next phase is unlocked."""

    phase_id: str
    kind: Literal["gates.passed"] = field(default="gates.passed", kw_only=True)


Sink = Callable[[Event], None]

AnyEvent = Annotated[
    RunStarted | RunFinished | PhaseStarted | PhaseFinished | PhaseLocked | StepStarted
    | StepFinished | StepRetry | LogLine | Progress | Note | GateResult | Question
    | GatesCleared | GatesPassed,
    Field(discriminator="kind")]
"""Every event this version knows, told apart by ``kind``."""

_ADAPTER: TypeAdapter[Event] = TypeAdapter(AnyEvent)
# Event classes by kind, for callers that dispatch on the journal's kind column.
KINDS: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (RunStarted, RunFinished, PhaseStarted, PhaseFinished, PhaseLocked,
                StepStarted, StepFinished, StepRetry, LogLine, Progress, Note, GateResult,
                Question, GatesCleared, GatesPassed)
}


def parse_event(data: dict[str, Any], run_id: str = "") -> Event | None:
    """The typed event of a JSON form (``Event.to_dict``, or a journal row).

    Keys the event does not have (a journal row's ``seq``) are ignored. ``run_id`` fills
    in one the form lacks (the journal keeps it in a column). None for a kind this version
    does not know or a form that is not that event (damage): the caller skips it.
    """
    if data.get("kind") not in KINDS:
        return None
    if "run_id" not in data:
        data = {**data, "run_id": run_id}
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError:
        return None
