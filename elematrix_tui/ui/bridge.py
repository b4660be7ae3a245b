"""The seam between the engine (its own thread) and the UI (the event loop).

The engine calls sinks from its thread. Posting one message per log line would flood
the message queue during a 100k-line stream, so the sink only appends to a deque
(thread-safe for append/popleft); the run screen drains it once per refresh tick and
writes the log lines of that tick in one ``write_lines`` call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..engine.action import Questions
from ..engine.events import Event, Sink
from ..engine.model import Runbook


class EventPump:
    """A sink that queues events for the UI thread.

    The engine side appends under a lock (cheap, uncontended almost always); the UI side
    swaps the whole buffer out in O(1), however many lines arrived since the last tick.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf: list[Event] = []

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._buf.append(event)

    def drain(self) -> list[Event]:
        """Every queued event, oldest first."""
        with self._lock:
            out, self._buf = self._buf, []
        return out

    def __len__(self) -> int:
        return len(self._buf)


class RunnerLike(Protocol):
    """What the UI needs from ``engine.runner.Runner``."""

    def run(self) -> int: ...

    def resume(self, run_id: str) -> int: ...

    def request_pause(self) -> None: ...

    def cancel(self) -> None: ...


@dataclass
class RunRequest:
    """Everything needed to build a runner for one press of "run" (the screen's terms:
    phases, one step, skipped steps); ``engine_runner_factory`` turns it into the engine's
    ``wiring.RunRequest``."""

    runbook: Runbook
    runbook_path: Path | None
    deployment: str
    state_dir: Path
    params: dict[str, Any]
    questions: Questions
    sinks: list[Sink]
    phases: list[str] | None = None
    steps: list[str] | None = None
    skip: list[str] = field(default_factory=list)


class RunnerFactory(Protocol):
    def __call__(self, req: RunRequest) -> RunnerLike: ...


def engine_runner_factory(req: RunRequest) -> RunnerLike:
    """Build the real engine runner (imported late: the start screen must not pay for it)."""
    from ..actions import default_registry
    from ..engine import wiring
    from ..engine.runner import RunOptions

    opts = RunOptions(phases=req.phases, assume_yes=False,
                      only_step=req.steps[0] if req.steps else None, skip=set(req.skip),
                      replace_secrets=wiring.typed_secrets(req.runbook, req.params))
    return wiring.build_runner(wiring.RunRequest(
        runbook=req.runbook, runbook_path=req.runbook_path, deployment=req.deployment,
        state_dir=req.state_dir, params=req.params, questions=req.questions, sinks=req.sinks,
        options=opts), default_registry())
