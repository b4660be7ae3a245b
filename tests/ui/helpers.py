"""Test helpers for the TUI: a scripted fake runner and waiting on the app."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot

from elematrix_tui.engine import events as ev
from elematrix_tui.ui.bridge import RunRequest

RUN_ID = "20260101-000000-abcdef"


class FakeRunner:
    """Plays a script of events into the sinks; the script may ask questions or block."""

    def __init__(self, req: RunRequest, script: Callable[[FakeRunner], int]) -> None:
        self.req = req
        self.script = script
        self.cancelled = threading.Event()
        self.paused = threading.Event()
        self.resumed: str | None = None

    def emit(self, e: ev.Event) -> None:
        for sink in self.req.sinks:
            sink(e)

    def run(self) -> int:
        return self.script(self)

    def resume(self, run_id: str) -> int:
        self.resumed = run_id
        return self.script(self)

    def request_pause(self) -> None:
        self.paused.set()

    def cancel(self) -> None:
        self.cancelled.set()


class FakeFactory:
    """A runner factory for ``ElematrixApp(runner_factory=...)``; keeps every request."""

    def __init__(self, script: Callable[[FakeRunner], int]) -> None:
        self.script = script
        self.requests: list[RunRequest] = []
        self.runners: list[FakeRunner] = []

    def __call__(self, req: RunRequest) -> FakeRunner:
        self.requests.append(req)
        r = FakeRunner(req, self.script)
        self.runners.append(r)
        return r


def started(phase: str, step: str, title: str, *, gate: bool = False,
            inputs: dict[str, Any] | None = None) -> ev.StepStarted:
    return ev.StepStarted(RUN_ID, phase_id=phase, step_id=step, title=title, action="local.noop",
                          attempt=1, is_gate=gate, inputs=inputs or {}, ts=0.0)


def finished(phase: str, step: str, status: str = "ok", *, gate: bool = False,
             **kw: Any) -> ev.StepFinished:
    return ev.StepFinished(RUN_ID, phase_id=phase, step_id=step, status=status, attempt=1,
                           duration=0.5, is_gate=gate, ts=0.0, **kw)


async def wait_for(pilot: Pilot[Any], cond: Callable[[], bool], timeout: float = 10.0,
                   what: str = "condition") -> None:
    """Let the app run until ``cond()`` holds (the engine runs in a thread)."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)


def shown(app: Any, cls: type) -> bool:
    """The modal of this class is on top and composed (its buttons exist)."""
    screen = app.screen
    return isinstance(screen, cls) and bool(screen.query("Button"))
