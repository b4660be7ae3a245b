"""The audit's data: one finding per Prowler result (or native check) on the deployment's
resources, classified against the runbook's posture (engine/posture.py), and the report
the CLI, the TUI and the run report show. No I/O, no SDK.

Verdicts:
- ``passed``: the check passed;
- ``failed``: it failed and the runbook does not accept it (a control a phase promised, or
  one the posture section does not know: unexplained). Any of these makes exit 1;
- ``accepted``: it failed, and the posture section says why that is accepted for this
  runbook and what removes it;
- ``account``: a result about an account-wide setting (EBS encryption by default, the IAM
  password policy, the root user): reported, never counted. The runbook does not own
  account settings: changing them changes every other workload in the account, and the
  deployment's resources do not rely on them (docs/posture.md).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..engine.posture import Posture
from ..engine.report import LAST_AUDIT

Verdict = Literal["passed", "failed", "accepted", "account"]
# Exit codes of `elematrix audit` (2: bad input or no Prowler, raised by the CLI).
CLEAN, FAILED = 0, 1
AUDIT_META = LAST_AUDIT


@dataclass
class Finding:
    """One result on one resource."""

    check: str
    control: str | None
    status: str  # PASS / FAIL / MANUAL as the scanner said
    verdict: Verdict
    resource: str
    message: str = ""
    reason: str = ""


@dataclass
class AuditReport:
    deployment: str
    runbook: str
    engine: str  # "prowler 5.46.0" or "native (the gates' checks)"
    phases: list[str]
    started: float
    duration: float
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[Finding]:
        return [f for f in self.findings if f.verdict == "failed"]

    @property
    def exit_code(self) -> int:
        return FAILED if self.failed else CLEAN

    def counts(self) -> dict[str, int]:
        out = {"passed": 0, "failed": 0, "accepted": 0, "account": 0}
        for f in self.findings:
            out[f.verdict] += 1
        return out

    def to_data(self) -> dict[str, Any]:
        d = asdict(self)
        d["counts"] = self.counts()
        d["exit_code"] = self.exit_code
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_data(), indent=2, sort_keys=True)

    def to_text(self) -> str:
        return "\n".join(text_lines(self.to_data()))


def text_lines(d: dict[str, Any]) -> list[str]:
    """The report as an operator reads it (also the run report's section): failures first,
    then what is accepted and why, then a count of the rest."""
    c = d["counts"]
    out = [f"audit of {d['deployment']} ({d['runbook']}; phases passed: "
           f"{', '.join(d['phases']) or 'none'}) by {d['engine']}"]
    out += [f"  note: {n}" for n in d["notes"]]
    failed = [f for f in d["findings"] if f["verdict"] == "failed"]
    accepted = [f for f in d["findings"] if f["verdict"] == "accepted"]
    account = [f for f in d["findings"] if f["verdict"] == "account" and f["status"] == "FAIL"]
    if failed:
        out.append("FAILED (not accepted by the runbook):")
        for f in failed:
            out.append(f"  {f['control'] or '-'}  {f['check']}  {f['resource']}")
            out.append(f"      {f['message']}" + (f" ({f['reason']})" if f["reason"] else ""))
    if accepted:
        out.append("accepted for this runbook:")
        seen: set[tuple[str, str]] = set()
        for f in accepted:
            key = (f["control"] or "", f["check"])
            if key in seen:
                continue
            seen.add(key)
            out.append(f"  {f['control']}  {f['check']}: {f['reason']}")
    if account:
        out.append(f"account-wide settings (not the deployment's; not counted): "
                   f"{len(account)} failing")
        for f in account:
            out.append(f"  {f['control'] or '-'}  {f['check']}")
    out.append(f"{c['passed']} passed, {c['failed']} failed, {c['accepted']} accepted, "
               f"{c['account']} account-wide")
    return out


def is_account_level(resource_uid: str, resource_name: str, account: str) -> bool:
    """A result about the account itself: its name is the account id, or its ARN ends
    at the account with no resource path (``...:123456789012:root``, ``:password-policy``,
    ``:volume`` for EBS encryption by default)."""
    if account and resource_name == account:
        return True
    return bool(account) and re.search(rf":{re.escape(account)}:[A-Za-z-]+$",
                                       resource_uid) is not None


def classify(posture: Posture, converged: set[str], check: str, status: str,
             fsbp: list[str], params: dict[str, Any] | None = None
             ) -> tuple[Verdict, str | None, str]:
    """The verdict, the control id and the reason of one result on the deployment's
    resource. ``fsbp``: the FSBP ids Prowler maps the check to (named when the posture
    section does not know the check); ``params``: the deployment's parameters (a control
    whose option they turn off is accepted)."""
    control = posture.by_check(check)
    cid = control.id if control else (fsbp[0] if fsbp else None)
    if status != "FAIL":
        return "passed", cid, ""
    if control is None:
        return "failed", cid, "unexplained: the runbook's posture section does not name this check"
    if control.off(params):
        return "accepted", cid, control.reason(params)
    if control.accepted_now(converged):
        # accepted_now: either accepted for good, or its phase has not run yet.
        until = f" (until {control.satisfied_by} has run)" if control.satisfied_by else ""
        removed = control.removed_by or f"the {control.satisfied_by} phase"
        return "accepted", cid, f"{control.accepted}{until}; removed by: {removed}"
    return "failed", cid, (f"promised by the {control.satisfied_by} phase"
                           if control.satisfied_by else "")
