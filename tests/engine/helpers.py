"""Helpers for engine tests: run a runbook text in-process and collect its events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from elematrix_tui.actions import default_registry
from elematrix_tui.engine import events as ev
from elematrix_tui.engine.loader import load_runbook
from elematrix_tui.engine.runner import Runner, RunOptions
from elematrix_tui.engine.standalone import AutoQuestions


class Collect:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    def __call__(self, e: ev.Event) -> None:
        self.events.append(e)

    def of(self, kind: type[ev.Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def statuses(self) -> dict[str, str]:
        return {e.step_id: e.status for e in self.of(ev.StepFinished)}


def write_runbook(tmp: Path, text: str, name: str = "rb.yaml") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def make_runner(path: Path, state_dir: Path, *, deployment: str = "test",
                params: dict[str, Any] | None = None, answer: bool = True,
                **options: Any) -> tuple[Runner, Collect]:
    rb = load_runbook(path, default_registry())
    sink = Collect()
    runner = Runner(rb, deployment=deployment, state_dir=state_dir, params=params or {},
                    questions=AutoQuestions(answer=answer), sinks=[sink],
                    registry=default_registry(), options=RunOptions(**options),
                    runbook_path=path)
    return runner, sink
