"""The contract between the engine and the actions that do the work.

An action is one kind of step (``aws.ensure``, ``ssh.run``, ``local.noop``...). It is
a small class with a pydantic model for its inputs, a read-only ``check`` and an
``apply``. The engine renders a step's ``with:`` block, validates it against
``Inputs``, and calls the action with a :class:`StepContext` through which the action
logs, reports progress, reads secrets and borrows per-run resources (an AWS session,
an SSH connection) that the engine closes at the end of the run.

Actions import their SDK (boto3, paramiko, nio) inside ``check``/``apply``, never at
module import time: validating a runbook or printing ``--help`` must stay fast.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, Protocol

from pydantic import BaseModel, ConfigDict

# typing_extensions (a dependency of pydantic) for PEP 696 defaults until Python 3.13.
from typing_extensions import TypeVar

Status = Literal["ok", "changed", "failed", "skipped"]

T = TypeVar("T")


class Inputs(BaseModel):
    """Base for action inputs: unknown keys are errors, so typos are caught at validate time."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


@dataclass
class Result:
    """What an ``apply`` (or a ``check`` that found nothing to do) produced.

    ``outputs`` are small, JSON-serialisable values the action always provides
    (they are journaled and visible as ``steps.<id>.<name>``). ``data`` is the raw
    result (an AWS response, a command's output) that a step's ``outputs:`` JMESPath
    selectors read from; it is not journaled.
    """

    status: Status
    outputs: dict[str, Any] = field(default_factory=dict)
    data: Any = None
    message: str = ""
    # For failures: why it failed in the operator's terms, and what to do next.
    diagnosis: str | None = None
    fix: str | None = None


@dataclass
class Check:
    """What ``check`` found, without changing anything.

    ``in_sync`` True means the desired state already holds: the engine records the
    step as ``ok`` with ``outputs``/``data`` and does not call ``apply``.
    ``in_sync`` None means the action cannot tell (it will run ``apply``).
    ``changes`` lists, in operator words, what ``apply`` would change.
    ``unknown_because`` says, when ``in_sync`` is None, why the action cannot tell (the
    plan shows "unknown, because ..."). ``creates`` says, when ``in_sync`` is False, that
    nothing of it exists yet (True: apply creates it) or that it exists and differs
    (False: apply changes it); None when the action does not say.
    """

    in_sync: bool | None
    changes: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    data: Any = None
    unknown_because: str | None = None
    creates: bool | None = None


class ActionFailed(Exception):
    """Raised by an action for an expected failure, with an operator-facing diagnosis."""

    def __init__(self, message: str, *, diagnosis: str | None = None, fix: str | None = None,
                 retry: bool = True):
        super().__init__(message)
        self.message = message
        self.diagnosis = diagnosis
        self.fix = fix
        # False: a refusal that another attempt cannot change (the account guard); the
        # step's retry policy is not applied.
        self.retry = retry


class Questions(Protocol):
    """How the engine asks the operator something. The TUI and the headless CLI implement it."""

    def confirm(self, step_id: str, title: str, changes: list[str], *, destructive: bool,
                type_to_confirm: str | None) -> bool: ...

    def approve(self, step_id: str, prompt: str) -> tuple[bool, str, str]:
        """Return (approved, who, comment)."""
        ...

    def secret(self, name: str, help: str) -> str: ...

    def choose(self, step_id: str, prompt: str, options: list[str]) -> str | None:
        """Pick one option (e.g. accept a host key fingerprint); None means refuse."""
        ...


class StepContext(Protocol):
    """What an action may use while it runs. Implemented by the engine's runner."""

    run_id: str
    deployment: str
    step_id: str
    phase_id: str
    attempt: int
    # The deployment's own directory in the state dir (journal, rendered stack, keys).
    deployment_dir: Path
    # Every parameter value (secrets included: treat them as such).
    params: dict[str, Any]
    # Set when the operator interrupts or the step's timeout elapses: stop promptly.
    cancel: threading.Event
    # Monotonic deadline for this attempt (None: no timeout).
    deadline: float | None
    # The same questions interface the engine uses, for actions that must ask (host keys).
    questions: Questions
    # True when the operator passed --yes (confirmations answered yes, never host-key trust).
    assume_yes: bool

    def log(self, line: str, stream: str = "stdout") -> None:
        """One line of live output; redacted for every known secret before anyone sees it."""
        ...

    def progress(self, message: str, done: float | None = None,
                 total: float | None = None) -> None:
        """A progress report for long waits (elapsed time is added by the engine)."""
        ...

    def note(self, kind: str, **data: Any) -> None:
        """A structured event (e.g. ``aws.call`` with service, operation, request id)."""
        ...

    def add_secret(self, value: str) -> None:
        """Make a value (a generated token, a password) redacted from now on."""
        ...

    def get_secret(self, name: str) -> str | None:
        """Read a secret of this deployment from the secret store."""
        ...

    def set_secret(self, name: str, value: str) -> None:
        """Store a secret of this deployment (and redact it from now on)."""
        ...

    def resource(self, key: str, factory: Callable[[], T],
                 close: Callable[[T], None] | None = None) -> T:
        """A per-run shared object (client, connection), created once, closed at run end."""
        ...

    def drop_resource(self, key: str) -> None:
        """Close and forget a per-run resource (e.g. after a dropped connection)."""
        ...

    def get_meta(self, key: str) -> Any:
        """Deployment-level facts kept across runs (e.g. the AWS account id of the first run)."""
        ...

    def set_meta(self, key: str, value: Any) -> None: ...


InputsT = TypeVar("InputsT", bound=Inputs, default=Any)
"""The inputs model of an action. The default (``Any``) keeps a bare ``Action`` (the
registry's ``type[Action]``, the runner's) meaning "an action of any inputs"."""


class Action(Generic[InputsT]):
    """Base class of every action. Subclasses set ``name``, ``Inputs`` and override ``apply``.

    An action is generic in its inputs model: ``class Run(Action[RunInputs])`` with
    ``Inputs = RunInputs`` gets the validated ``RunInputs`` in ``check``/``apply``/
    ``describe``, typed, without casts. The runner validates ``with:`` against ``Inputs``
    and passes the model.

    ``check`` must never change anything. Its default says "cannot tell", which makes
    the engine apply again on resume: override it for any action whose apply is not
    harmless to repeat.
    """

    name: ClassVar[str] = ""
    # Not a ClassVar only because a ClassVar cannot name a type variable: set it on the class.
    Inputs: type[InputsT] = Inputs  # type: ignore[assignment]
    # Read-only actions (gates, asserts) never need confirmation and are safe to re-run.
    read_only: ClassVar[bool] = False
    # Names of input fields whose values are secret (masked in plan, journal, report).
    secret_inputs: ClassVar[frozenset[str]] = frozenset()
    # Names of secrets the action keeps in the store (ctx.set_secret): every run of a
    # runbook that uses it masks them from the start, also when nothing in that run reads them.
    stored_secrets: ClassVar[frozenset[str]] = frozenset()
    # Output names the action always provides; when set, the loader checks references to them.
    output_names: ClassVar[frozenset[str] | None] = None
    # The effect lives only in this process (an SSH tunnel): on resume the step is applied
    # again instead of being restored from the journal, whose outputs would point at nothing.
    process_local: ClassVar[bool] = False
    # The action's check reads the facts exactly and cheaply (a host's containers, a unit
    # file's hash): the engine checks before every apply, not only on resume, so a re-run
    # applies nothing whose facts already hold (counted in tests/rehearsal).
    check_first: ClassVar[bool] = False

    def local_effects(self, with_: dict[str, Any]) -> list[str]:
        """What this step does on the operator's own machine beyond its sandbox (runs a
        command, writes or reads a file outside the deployment dir), in operator words.

        ``with_`` is the step's ``with:`` block, raw (validate: values may still be
        expressions) or rendered (plan). Shown by validate and plan before anything runs.
        """
        return []

    def check(self, ctx: StepContext, inputs: InputsT) -> Check:
        """What ``apply`` would change, read-only. Default: cannot tell."""
        return Check(in_sync=None)

    def apply(self, ctx: StepContext, inputs: InputsT) -> Result:
        """Do the step's work (converge, run, wait) and say what came of it."""
        raise NotImplementedError

    def describe(self, inputs: InputsT) -> str:
        """One line for the plan: what this step will do with these inputs."""
        return self.name

    @classmethod
    def plan_notes(cls, rendered: dict[str, Any]) -> list[str]:
        """Facts the plan shows under the step, from its rendered (unvalidated) inputs.

        ``rendered`` may still hold ``<steps.x.y>`` placeholders of outputs not known
        yet: a note must not depend on those. Default: none.
        """
        return []
