"""What one step attempt is handed and what it gives back: the ``StepContext`` actions
receive (``engine/action.py``) and the outcome the runner journals.

Cut from ``runner.py`` (its seam: everything an action sees of the runner goes through
``Context``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .action import Questions
from .events import Event, LogLine, Note, Progress
from .journal import Journal
from .model import Phase, Step
from .paths import deployment_dir
from .schedule import DEFAULT_PARALLEL
from .secrets import Redactor, SecretStore

T = TypeVar("T")


@dataclass
class RunOptions:
    """How one run goes (which phases, --yes, one step, skips...); ``Runner(options=...)``."""

    phases: list[str] | None = None  # None: every phase
    assume_yes: bool = False
    only_step: str | None = None  # run just this step (TUI "run one step")
    skip: set[str] = field(default_factory=set)  # operator-skipped (skippable steps only)
    # Seconds a cancelled action gets to stop by itself before the runner moves on.
    cancel_grace: float = 5.0
    # Secrets the operator explicitly allows a given value to replace (--replace-secret).
    replace_secrets: set[str] = field(default_factory=set)
    # At most this many steps of a phase at once, where the runbook's needs: allow it
    # (engine/schedule.py); 1: one after another whatever the runbook says.
    parallel: int = DEFAULT_PARALLEL


class ContextHost(Protocol):
    """What a ``Context`` uses of the runner (``engine.runner.Runner`` is one): named here
    so this module does not import the runner."""

    run_id: str
    deployment: str
    state_dir: Path
    params: dict[str, Any]
    questions: Questions
    options: RunOptions
    redact: Redactor
    journal: Journal | None
    _cancel: threading.Event

    @property
    def secret_store(self) -> SecretStore: ...

    def _emit(self, event: Event) -> None: ...

    def store_secret(self, name: str, value: str) -> None: ...

    def resource(self, key: str, factory: Callable[[], T],
                 close: Callable[[T], None] | None) -> T: ...

    def drop_resource(self, key: str) -> None: ...


class Interrupted(Exception):
    """The operator interrupted the run (state saved; resumable)."""


class Paused(Exception):
    """The operator asked to stop after the current step (state saved; resumable)."""


@dataclass
class StepOutcome:
    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    diagnosis: str | None = None
    fix: str | None = None
    retry: bool = True  # False: never retried (ActionFailed(retry=False), a refusal)


class Context:
    """The StepContext handed to actions (see engine/action.py)."""

    def __init__(self, runner: ContextHost, phase: Phase, step: Step, attempt: int) -> None:
        self._r = runner
        self.run_id = runner.run_id
        self.deployment = runner.deployment
        self.step_id = step.id
        self.phase_id = phase.id
        self.attempt = attempt
        self.deployment_dir = deployment_dir(runner.state_dir, runner.deployment)
        self.params = runner.params
        self.cancel = threading.Event()
        if runner._cancel.is_set():
            self.cancel.set()
        self.deadline = time.monotonic() + step.timeout if step.timeout else None
        self.questions = runner.questions
        self.assume_yes = runner.options.assume_yes
        self._started = time.monotonic()
        self._expected = step.expected_duration

    def log(self, line: str, stream: str = "stdout") -> None:
        self._r._emit(LogLine(self.run_id, step_id=self.step_id, line=self._r.redact(line),
                              stream=stream))

    def progress(self, message: str, done: float | None = None,
                 total: float | None = None) -> None:
        self._r._emit(Progress(self.run_id, step_id=self.step_id, message=self._r.redact(message),
                               elapsed=time.monotonic() - self._started, done=done, total=total,
                               expected=self._expected))

    def note(self, kind: str, **data: Any) -> None:
        self._r._emit(Note(self.run_id, step_id=self.step_id, name=kind,
                           data=self._r.redact.value(data)))

    def add_secret(self, value: str) -> None:
        self._r.redact.add(value)

    def get_secret(self, name: str) -> str | None:
        value = self._r.secret_store.get(self.deployment, name)
        if value:
            self._r.redact.add(value)
        return value

    def set_secret(self, name: str, value: str) -> None:
        self._r.store_secret(name, value)

    def resource(self, key: str, factory: Callable[[], T],
                 close: Callable[[T], None] | None = None) -> T:
        return self._r.resource(key, factory, close)

    def drop_resource(self, key: str) -> None:
        self._r.drop_resource(key)

    def get_meta(self, key: str) -> Any:
        assert self._r.journal is not None
        return self._r.journal.get_meta(key)

    def set_meta(self, key: str, value: Any) -> None:
        assert self._r.journal is not None
        self._r.journal.set_meta(key, value)


def jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    return str(v)
