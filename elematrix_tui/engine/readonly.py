"""The StepContext a plan hands to an action's ``check``: it can read, never write or ask.

``check`` must never change anything (engine/action.py). A plan holds it to that: a
``set_secret``, ``set_meta`` or a question from a check in plan mode is a bug in the
action, and raises :class:`ReadOnlyViolation` (the plan shows that step as unknown and
names the bug). Reads work: the deployment's journal meta as it was when the plan started,
its stored secrets, per-plan resources (an AWS session) closed when the plan ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .action import Questions
from .secrets import Redactor

T = TypeVar("T")


class ReadOnlyViolation(Exception):
    """A write or a question from a check in plan mode (a bug in the action)."""


class NeedsKnownInputs(Exception):
    """A check that would reach a service (a per-run resource) while some of its inputs are
    still placeholders of outputs not known yet: it is not run (never sent anywhere)."""


def is_read_only(ctx: object) -> bool:
    """Whether ``ctx`` is a plan's read-only context (an action may then skip a write it
    would otherwise make, e.g. binding a new deployment to its AWS account)."""
    return isinstance(ctx, ReadOnlyContext)


class _NoQuestions:
    """Questions in plan mode: every one is a bug, never an answer."""

    def _refuse(self, what: str, step_id: str) -> Any:
        raise ReadOnlyViolation(f"{what} asked in plan mode (step {step_id!r})")

    def confirm(self, step_id: str, title: str, changes: list[str], *, destructive: bool,
                type_to_confirm: str | None) -> bool:
        return bool(self._refuse("a confirmation", step_id))

    def approve(self, step_id: str, prompt: str) -> tuple[bool, str, str]:
        return self._refuse("an approval", step_id)  # type: ignore[no-any-return]

    def secret(self, name: str, help: str) -> str:
        return str(self._refuse(f"secret {name!r}", "-"))

    def choose(self, step_id: str, prompt: str, options: list[str]) -> str | None:
        return self._refuse(f"a choice ({prompt})", step_id)  # type: ignore[no-any-return]


class ReadOnlyContext:
    """A StepContext for plans. One per plan; ``for_step`` points it at the next step."""

    def __init__(self, *, deployment: str, deployment_dir: Path, params: dict[str, Any],
                 meta: Mapping[str, Any], secret: Callable[[str], str | None],
                 redact: Redactor) -> None:
        self.run_id = "plan"
        self.deployment = deployment
        self.deployment_dir = deployment_dir
        self.params = params
        self.step_id = ""
        self.phase_id = ""
        self.attempt = 1
        self.cancel = threading.Event()
        self.deadline: float | None = None
        self.questions: Questions = _NoQuestions()
        self.assume_yes = False
        self._meta = dict(meta)
        self._secret = secret
        self._redact = redact
        self.logs: list[str] = []
        # False while a check runs on inputs that still hold placeholders.
        self.may_connect = True
        self._resources: dict[str, tuple[Any, Callable[[Any], None] | None]] = {}
        # Resources whose factory failed in this plan, and how.
        self._failed: dict[str, Exception] = {}

    def for_step(self, phase_id: str, step_id: str) -> ReadOnlyContext:
        """The same context for the next step; its log starts empty."""
        self.phase_id, self.step_id = phase_id, step_id
        self.logs = []
        return self

    def log(self, line: str, stream: str = "stdout") -> None:
        self.logs.append(self._redact(line))

    def progress(self, message: str, done: float | None = None,
                 total: float | None = None) -> None:
        pass

    def note(self, kind: str, **data: Any) -> None:
        pass

    def add_secret(self, value: str) -> None:
        self._redact.add(value)

    def get_secret(self, name: str) -> str | None:
        value = self._secret(name)
        if value:
            self._redact.add(value)
        return value

    def set_secret(self, name: str, value: str) -> None:
        raise ReadOnlyViolation(f"step {self.step_id!r} tried to store secret {name!r} in "
                                f"plan mode")

    def resource(self, key: str, factory: Callable[[], T],
                 close: Callable[[T], None] | None = None) -> T:
        if not self.may_connect:
            raise NeedsKnownInputs(key)
        if key in self._failed:
            raise self._failed[key]
        if key not in self._resources:
            try:
                self._resources[key] = (factory(), close)
            except Exception as e:
                # A plan reads for seconds; a host that did not answer will not start to
                # halfway through. Each later step that needs the same connection is told
                # the same at once, instead of waiting out its own connect timeout (after
                # the production runbook's harden phase closed SSH: 10 s per host step).
                self._failed[key] = e
                raise
        return self._resources[key][0]  # type: ignore[no-any-return]

    def drop_resource(self, key: str) -> None:
        obj, close = self._resources.pop(key, (None, None))
        if obj is not None and close is not None:
            try:
                close(obj)
            except Exception:  # closing a client must never fail a plan
                pass

    def get_meta(self, key: str) -> Any:
        return self._meta.get(key)

    def set_meta(self, key: str, value: Any) -> None:
        raise ReadOnlyViolation(f"step {self.step_id!r} tried to write journal meta {key!r} "
                                f"in plan mode")

    def close(self) -> None:
        for key in reversed(list(self._resources)):
            self.drop_resource(key)
