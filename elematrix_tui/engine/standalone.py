"""A StepContext that runs an action outside a runbook: for tests, benchmarks and the doctor.

It keeps logs, progress and notes in lists and secrets in a dict. Resources are closed
by :meth:`close`. The runner has its own context; this one only mirrors the contract.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .action import Action, Check, Result

T = TypeVar("T")


class AutoQuestions:
    """Answers every question with a fixed reply (tests and --yes)."""

    def __init__(self, answer: bool = True, who: str = "test", choice: str | None = None) -> None:
        self.answer = answer
        self.who = who
        self.choice = choice
        self.asked: list[tuple[str, str]] = []

    def confirm(self, step_id: str, title: str, changes: list[str], *, destructive: bool,
                type_to_confirm: str | None) -> bool:
        self.asked.append(("confirm", step_id))
        return self.answer

    def approve(self, step_id: str, prompt: str) -> tuple[bool, str, str]:
        self.asked.append(("approve", step_id))
        return self.answer, self.who, "auto"

    def secret(self, name: str, help: str) -> str:
        self.asked.append(("secret", name))
        raise RuntimeError(f"no value for secret {name!r}")

    def choose(self, step_id: str, prompt: str, options: list[str]) -> str | None:
        self.asked.append(("choose", step_id))
        return self.choice


@dataclass
class StandaloneContext:
    deployment_dir: Path
    params: dict[str, Any] = field(default_factory=dict)
    run_id: str = "test-run"
    deployment: str = "test"
    step_id: str = "step"
    phase_id: str = "phase"
    attempt: int = 1
    deadline: float | None = None
    assume_yes: bool = False
    questions: Any = field(default_factory=AutoQuestions)
    cancel: threading.Event = field(default_factory=threading.Event)
    logs: list[tuple[str, str]] = field(default_factory=list)
    progress_reports: list[str] = field(default_factory=list)
    notes: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    _resources: dict[str, tuple[Any, Callable[[Any], None] | None]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def log(self, line: str, stream: str = "stdout") -> None:
        with self._lock:
            self.logs.append((stream, line))

    def progress(self, message: str, done: float | None = None,
                 total: float | None = None) -> None:
        self.progress_reports.append(message)

    def note(self, kind: str, **data: Any) -> None:
        self.notes.append((kind, data))

    def add_secret(self, value: str) -> None:
        pass

    def get_secret(self, name: str) -> str | None:
        return self.secrets.get(name)

    def set_secret(self, name: str, value: str) -> None:
        self.secrets[name] = value

    def resource(self, key: str, factory: Callable[[], T],
                 close: Callable[[T], None] | None = None) -> T:
        if key not in self._resources:
            self._resources[key] = (factory(), close)
        return self._resources[key][0]  # type: ignore[no-any-return]

    def drop_resource(self, key: str) -> None:
        obj, close = self._resources.pop(key, (None, None))
        if obj is not None and close is not None:
            close(obj)

    def get_meta(self, key: str) -> Any:
        return self.meta.get(key)

    def set_meta(self, key: str, value: Any) -> None:
        self.meta[key] = value

    def close(self) -> None:
        for key in list(self._resources):
            self.drop_resource(key)

    def run(self, action: Action, inputs: dict[str, Any]) -> Result:
        """Validate inputs and apply, as the runner would (without journal or retries)."""
        return action.apply(self, action.Inputs.model_validate(inputs))

    def check(self, action: Action, inputs: dict[str, Any]) -> Check:
        return action.check(self, action.Inputs.model_validate(inputs))
