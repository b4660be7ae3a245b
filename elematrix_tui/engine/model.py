"""The runbook file format, as pydantic models.

A runbook is data: parameters, then phases of steps, each phase closed by gates.
Every field is documented in ``docs/runbook-format.md``; unknown keys are errors so a
typo never silently does nothing.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .posture import Posture

ID_RE = re.compile(r"^[a-z][a-z0-9_]*$")
PHASE_ID_RE = re.compile(r"^[a-z][a-z0-9_-]*$")

ParamType = Literal["string", "int", "bool", "choice", "cidr", "email", "hostname", "secret",
                    "ssh_public_key"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Param(_Strict):
    name: str
    type: ParamType = "string"
    help: str = ""
    default: Any = None
    required: bool | None = None  # default: required unless it has a default or generate
    pattern: str | None = None
    choices: list[str] | None = None
    min: int | None = None
    max: int | None = None
    # Values that can never change once the deployment has used them (server_name).
    permanent: bool = False
    permanent_reason: str | None = None
    # Remember the value for later runs of this deployment (false: ask every time, e.g. a
    # typed confirmation that must never carry over to the next teardown).
    remember: bool = True
    # Secrets only: generate a random value of this many characters when none is stored.
    generate: int | None = Field(default=None, ge=16, le=256)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not ID_RE.fullmatch(v):
            raise ValueError(f"parameter name {v!r} must be snake_case (a-z, 0-9, _)")
        return v

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as e:
                raise ValueError(f"pattern is not a valid regular expression: {e}") from e
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Param:
        if self.type == "choice" and not self.choices:
            raise ValueError("a choice parameter needs 'choices'")
        if self.type != "choice" and self.choices:
            raise ValueError("'choices' only applies to type: choice")
        if self.generate is not None and self.type != "secret":
            raise ValueError("'generate' only applies to type: secret")
        if self.type == "secret" and self.default is not None:
            raise ValueError("a secret cannot have a default: use 'generate' or ask for it")
        return self

    @property
    def is_required(self) -> bool:
        if self.required is not None:
            return self.required
        return self.default is None and self.generate is None


class Retry(_Strict):
    attempts: int = Field(default=1, ge=1, le=100)
    delay: float = Field(default=2.0, ge=0, le=3600)
    backoff: float = Field(default=1.0, ge=1.0, le=10.0)


class Step(_Strict):
    id: str
    title: str = ""
    action: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    # name -> JMESPath over the action's result data.
    outputs: dict[str, str] = Field(default_factory=dict)
    when: str | None = None
    retry: Retry = Field(default_factory=Retry)
    timeout: float | None = Field(default=None, gt=0, le=86400)
    confirm: bool = False
    # Destructive steps need the operator to type the deployment name (also in the TUI).
    destructive: bool = False
    # abort (default) | continue | the id of a cleanup step of this phase.
    on_failure: str = "abort"
    # Operator may skip this step (recorded in the journal).
    skippable: bool = False
    # output name -> expected value; checked after the action ran.
    expect: dict[str, Any] = Field(default_factory=dict)
    # Operator-facing advice shown when the step fails and the action gives none.
    fix: str | None = None
    # Expected duration in seconds, for the progress bar of long waits.
    expected_duration: float | None = Field(default=None, gt=0)
    # Permanent parameters whose values are locked in this deployment once this step succeeds
    # (server_name: once Synapse has started, user ids carry it forever). A list locks the
    # parameters' values; a mapping {name: expression} locks the value the deployment really
    # used (the server name configure chose and rendered, not this run's --set).
    locks: list[str] | dict[str, str] = Field(default_factory=list)
    # The steps of this phase this one waits for (engine/schedule.py). Absent: every step
    # before it in the phase (one after another, as always). Given (also []): only these,
    # plus the steps its expressions read (steps.<id>), so it may run beside others.
    needs: list[str] | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not ID_RE.fullmatch(v):
            raise ValueError(
                f"step id {v!r} must be snake_case (a-z, 0-9, _): it is a name in expressions"
            )
        return v


class Phase(_Strict):
    id: str
    title: str = ""
    description: str = ""
    steps: list[Step] = Field(default_factory=list)
    gates: list[Step] = Field(default_factory=list)
    # Steps run only when named by another step's on_failure.
    cleanup: list[Step] = Field(default_factory=list)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not PHASE_ID_RE.fullmatch(v):
            raise ValueError(f"phase id {v!r} must be lower case (a-z, 0-9, _, -)")
        return v


class Runbook(_Strict):
    """A runbook file. Top-level keys starting with ``x-`` are free: a home for YAML anchors
    (``x-ssh: &ssh {...}`` then ``with: {<<: *ssh, command: ...}``), as in Compose files."""

    runbook: str
    title: str = ""
    description: str = ""
    version: int = 1
    params: list[Param] = Field(default_factory=list)
    phases: list[Phase] = Field(min_length=1)
    # The controls the phases satisfy and the ones accepted failing (engine/posture.py).
    posture: Posture | None = None

    @model_validator(mode="before")
    @classmethod
    def _extensions(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not str(k).startswith("x-")}
        return data

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None

    def phase(self, phase_id: str) -> Phase | None:
        for ph in self.phases:
            if ph.id == phase_id:
                return ph
        return None

    def all_steps(self) -> list[tuple[Phase, Step, str]]:
        """Every step with its phase and role (step | gate | cleanup), in runbook order."""
        out: list[tuple[Phase, Step, str]] = []
        for ph in self.phases:
            out += [(ph, s, "step") for s in ph.steps]
            out += [(ph, s, "gate") for s in ph.gates]
            out += [(ph, s, "cleanup") for s in ph.cleanup]
        return out
