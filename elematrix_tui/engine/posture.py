"""A runbook's posture intent: the security controls its phases satisfy and the ones it
accepts failing, with why. Data shipped with the runbook (its ``posture:`` section), one
home for the plan (per phase: satisfies / accepts), the ``posture`` and ``hardened`` gates
(each ``aws.assert`` check names the control it proves) and ``elematrix audit``, which
judges a Prowler scan (or the native checks) against it. No I/O, no SDK here.

Control ids are AWS Foundational Security Best Practices (FSBP) ids (``EC2.8``) where FSBP
has one; Prowler checks FSBP does not map get a ``PROWLER.<check>`` id of their own, so
every entry has exactly one id the operator can look up.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CONTROL_RE = re.compile(r"^([A-Z][A-Za-z0-9]*\.[0-9]+|PROWLER\.[a-z0-9_]+)$")
Verdict = Literal["passed", "failed", "accepted"]


class Control(BaseModel):
    """One control of the runbook's posture.

    ``satisfied_by``: the phase after which it must pass (a failure then is a failure).
    ``accepted``: why it is allowed to fail for this runbook, with ``removed_by`` naming
    the phase or option that would make it pass. Both: accepted until ``satisfied_by`` has
    run (e.g. SSM.1 until harden), then it must pass.
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    title: str
    prowler: list[str] = Field(default_factory=list)
    satisfied_by: str | None = None
    accepted: str | None = None
    removed_by: str | None = None
    # A bool parameter that builds what satisfies the control (e.g. snapshot_schedule):
    # when the operator turns it off, the control is accepted for ``accepted_when_off``.
    option: str | None = None
    accepted_when_off: str | None = None
    # Prowler reports the check once per Region (its resource is the Region's service, not
    # a resource of the deployment): such a result is judged against this control.
    region_wide: bool = False

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not CONTROL_RE.fullmatch(v):
            raise ValueError(f"control id {v!r}: an FSBP id such as 'EC2.8', or "
                             f"'PROWLER.<check_id>' for a check FSBP does not map")
        return v

    @model_validator(mode="after")
    def _intent(self) -> Control:
        if self.satisfied_by is None and self.accepted is None:
            raise ValueError(f"control {self.id}: say 'satisfied_by: <phase>' or "
                             f"'accepted: <why>' (or both: accepted until that phase ran)")
        if self.accepted is not None and not (self.removed_by or self.satisfied_by):
            raise ValueError(f"control {self.id}: an accepted control names what removes it "
                             f"('removed_by: <phase or option>')")
        if (self.option is None) != (self.accepted_when_off is None):
            raise ValueError(f"control {self.id}: 'option' and 'accepted_when_off' go "
                             f"together (the parameter that builds it, and why it is "
                             f"accepted when that is off)")
        return self

    def off(self, params: dict[str, object] | None) -> bool:
        """Its option parameter is turned off in ``params`` (absent: the default, on)."""
        if self.option is None or params is None:
            return False
        return str(params.get(self.option, True)).lower() in ("false", "0", "no", "off")

    def accepted_now(self, converged: set[str],
                     params: dict[str, object] | None = None) -> bool:
        """Accepted given the phases whose gates passed: always, until its phase ran, or
        while its option is off."""
        if self.off(params):
            return True
        if self.accepted is None:
            return False
        return self.satisfied_by is None or self.satisfied_by not in converged

    def reason(self, params: dict[str, object] | None = None) -> str:
        """Why it is accepted (the option's reason when that is off)."""
        if self.off(params):
            return f"{self.accepted_when_off}; removed by: {self.option}=true"
        return self.accepted or ""

    def must_pass(self, converged: set[str]) -> bool:
        """Its phase ran (the control is promised now)."""
        return self.satisfied_by is not None and self.satisfied_by in converged


class Posture(BaseModel):
    """The ``posture:`` section of a runbook."""

    model_config = ConfigDict(extra="forbid")

    standard: str = "aws_foundational_security_best_practices_aws"
    # Prowler's service names the audit scans.
    services: list[str] = Field(default_factory=lambda: ["ec2", "s3", "iam", "ssm"])
    controls: list[Control] = Field(default_factory=list)

    def control(self, control_id: str) -> Control | None:
        return next((c for c in self.controls if c.id == control_id), None)

    def by_check(self, check_id: str) -> Control | None:
        """The control a Prowler check id belongs to (None: the runbook does not say)."""
        return next((c for c in self.controls if check_id in c.prowler), None)

    def satisfied_in(self, phase_id: str) -> list[Control]:
        return [c for c in self.controls if c.satisfied_by == phase_id]

    def accepted_in(self, phase_id: str, phase_ids: list[str],
                    params: dict[str, object] | None = None) -> list[Control]:
        """Controls still accepted once ``phase_id`` (and the phases before it) ran."""
        done = set(phase_ids[:phase_ids.index(phase_id) + 1]) if phase_id in phase_ids else set()
        return [c for c in self.controls if c.accepted_now(done, params)]

    def off_in(self, params: dict[str, object] | None) -> list[Control]:
        """The controls whose option ``params`` turn off (accepted instead)."""
        return [c for c in self.controls if c.off(params)]
