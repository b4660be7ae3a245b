"""Typed events the engine emits while it runs. Sinks (TUI, CLI printer, journal) observe them.

Every event is a frozen dataclass with a ``kind``; ``to_dict`` gives the JSON form that
the journal stores and the report reads back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

_FIELDS: dict[type, tuple[str, ...]] = {}


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = "event"
    run_id: str
    ts: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies every value, which is most of
        # the engine's cost per streamed log line; event payloads are plain JSON already.
        names = _FIELDS.get(type(self))
        if names is None:
            names = _FIELDS[type(self)] = tuple(f.name for f in fields(self))
        d = {n: getattr(self, n) for n in names}
        d["kind"] = self.kind
        return d


@dataclass(frozen=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run.started"
    runbook: str
    deployment: str
    resumed: bool = False


@dataclass(frozen=True)
class RunFinished(Event):
    kind: ClassVar[str] = "run.finished"
    status: str  # passed | failed | interrupted
    exit_code: int
    message: str = ""


@dataclass(frozen=True)
class PhaseStarted(Event):
    kind: ClassVar[str] = "phase.started"
    phase_id: str
    title: str


@dataclass(frozen=True)
class PhaseFinished(Event):
    kind: ClassVar[str] = "phase.finished"
    phase_id: str
    status: str  # passed | failed | skipped | interrupted


@dataclass(frozen=True)
class PhaseLocked(Event):
    kind: ClassVar[str] = "phase.locked"
    phase_id: str
    reason: str


@dataclass(frozen=True)
class StepStarted(Event):
    kind: ClassVar[str] = "step.started"
    phase_id: str
    step_id: str
    title: str
    action: str
    attempt: int
    is_gate: bool = False
    inputs: dict[str, Any] = field(default_factory=dict)  # rendered, secrets masked


@dataclass(frozen=True)
class StepFinished(Event):
    kind: ClassVar[str] = "step.finished"
    phase_id: str
    step_id: str
    status: str  # ok | changed | failed | skipped | interrupted
    attempt: int
    duration: float
    is_gate: bool = False
    message: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)  # secrets masked
    diagnosis: str | None = None
    fix: str | None = None
    restored: bool = False  # taken from the journal on resume, not run again


@dataclass(frozen=True)
class StepRetry(Event):
    kind: ClassVar[str] = "step.retry"
    step_id: str
    attempt: int
    delay: float
    reason: str


@dataclass(frozen=True)
class LogLine(Event):
    kind: ClassVar[str] = "log"
    step_id: str
    line: str
    stream: str = "stdout"


@dataclass(frozen=True)
class Progress(Event):
    kind: ClassVar[str] = "progress"
    step_id: str
    message: str
    elapsed: float
    done: float | None = None
    total: float | None = None
    expected: float | None = None


@dataclass(frozen=True)
class Note(Event):
    """A structured fact from an action (an AWS call with its request id, a pinned key...)."""

    kind: ClassVar[str] = "note"
    step_id: str
    name: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GateResult(Event):
    kind: ClassVar[str] = "gate.result"
    phase_id: str
    gate_id: str
    passed: bool
    message: str = ""
    diagnosis: str | None = None
    fix: str | None = None
    duration: float = 0.0


@dataclass(frozen=True)
class Question(Event):
    kind: ClassVar[str] = "question"
    step_id: str
    question: str  # confirm | approve | secret | choose
    prompt: str
    answer: str | None = None  # filled in the journal copy, never a secret


Sink = Callable[[Event], None]
