"""``elematrix audit DEPLOYMENT``: the deployment's live posture judged against its
runbook's intent (the ``posture:`` section), by Prowler or, where Prowler cannot run, by
the gates' own checks of the same control ids (``--native``). Writes nothing but the
journal's ``last_audit`` (the run report shows it).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from ..actions.aws import POSTURE_FAILED
from ..engine.journal import Journal
from ..engine.model import Runbook
from ..engine.plan import build_plan
from ..engine.posture import Posture
from ..engine.registry import Registry
from ..engine.status import converged_phases
from .model import AUDIT_META, AuditReport, Finding, Verdict
from .prowler import INSTALL_HINT, PROWLER_VERSION, find_prowler, findings, scan

NATIVE = "native (the gates' checks of the same control ids)"
_TAG = re.compile(r"\[([A-Za-z][A-Za-z0-9]*\.[A-Za-z0-9_]+)\]")


class AuditUnavailable(Exception):
    """Prowler is not installed (the message says how to install it)."""


def _recorded(outputs: dict[str, dict[str, Any]]) -> set[str]:
    """Every id, name and ARN the deployment's runs recorded (scoping by what it made)."""
    out: set[str] = set()
    for step in outputs.values():
        for v in step.values():
            # ARNs, and ids/names (a path is a local file, not a resource).
            if isinstance(v, str) and (v.startswith("arn:") or (len(v) >= 4 and "/" not in v)):
                out.add(v)
    return out


def run_audit(rb: Runbook, *, deployment: str, state_dir: Path, registry: Registry,
              native: bool = False) -> AuditReport:
    """Audit the deployment; the report is also kept as the journal's last audit."""
    posture = rb.posture or Posture()
    phases = converged_phases(rb, state_dir, deployment)
    with Journal.open(state_dir, deployment) as j:
        outputs = j.latest_outputs()
        runs = [r for r in j.runs() if r.runbook == rb.runbook]
    # The parameters of the deployment's latest run of this runbook: an option turned off
    # there (snapshot_schedule) makes its control accepted.
    params: dict[str, Any] = dict(runs[0].params) if runs else {}
    started = time.time()
    if native:
        report = _native(rb, posture, deployment, state_dir, registry, phases, started)
    else:
        binary = find_prowler()
        if binary is None:
            raise AuditUnavailable(INSTALL_HINT)
        region = (str((outputs.get("preflight") or {}).get("region") or "")
                  or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
                  or "us-east-1")
        results, took = scan(binary, posture, region, os.environ.get("AWS_PROFILE"))
        report = AuditReport(deployment, rb.runbook, f"prowler {PROWLER_VERSION}", phases,
                             started, round(took, 1), findings(
                                 results, posture=posture, converged=set(phases),
                                 deployment=deployment, recorded=_recorded(outputs),
                                 params=params))
        for c in posture.off_in(params):
            report.notes.append(f"{c.id} accepted: {c.reason(params)}")
    if not phases:
        report.notes.append("no phase of this runbook has passed its gates yet: nothing is "
                            "promised, every failure is judged as unexplained")
    with Journal.open(state_dir, deployment) as j:
        j.set_meta(AUDIT_META, report.to_data())
    return report


def _native(rb: Runbook, posture: Posture, deployment: str, state_dir: Path,
            registry: Registry, phases: list[str], started: float) -> AuditReport:
    """The gates' ``aws.assert`` checks that name a control, run live (the plan's look-up,
    as ``elematrix status`` does), one finding per control and gate."""
    report = AuditReport(deployment, rb.runbook, NATIVE, phases, started, 0.0)
    if not phases:
        return report
    plan = build_plan(rb, deployment=deployment, state_dir=state_dir, params={},
                      phases=phases, registry=registry, live_actions=frozenset({"aws.assert"}))
    latest: dict[str, Finding] = {}
    for ph in plan.phases:
        for sp in ph.steps:
            if sp.role != "gate" or sp.action != "aws.assert" or not sp.inputs:
                continue
            if sp.state != "read" or not sp.found:
                # Not looked up (blocked by a phase that has not passed, or not renderable):
                # it proves nothing either way.
                report.notes.append(f"gate {ph.id}/{sp.id} not checked: "
                                    f"{sp.why or 'not looked up'}")
                continue
            checks = [c for c in sp.inputs.get("checks") or [] if c.get("control")]
            found = " ".join(sp.found)
            failed_tags = set(_TAG.findall(" ".join(
                line for line in sp.found if line.startswith(("FAIL", "could not")))))
            # Every check ran and some failed (aws.assert's "posture check failed: ..."), or
            # a call could not be made (then the gate proves none of its controls).
            broken = found.startswith("could not") and POSTURE_FAILED not in found
            for c in checks:
                verdict: Verdict
                cid = str(c["control"])
                ctl = posture.control(cid)
                if broken:
                    verdict, status, msg = "failed", "ERROR", sp.found[0]
                elif cid in failed_tags:
                    verdict, status, msg = "failed", "FAIL", str(c.get("title", ""))
                else:
                    verdict, status, msg = "passed", "PASS", str(c.get("title", ""))
                reason = (f"promised by the {ctl.satisfied_by} phase"
                          if verdict == "failed" and ctl and ctl.satisfied_by else "")
                # A later phase's gate proves the control as it stands now (harden closes
                # SSH altogether: its gate, not infra's "SSH from the operator only", says).
                latest[cid] = Finding(f"{ph.id}/{sp.id}", cid, status, verdict,
                                      f"{ph.id} gate {sp.id}", msg, reason)
    report.findings = sorted(latest.values(), key=lambda f: (f.verdict != "failed",
                                                             f.control or ""))
    report.duration = round(time.time() - started, 1)
    report.notes.append("native: only the controls the gates check (the posture section's "
                        "accepted controls need Prowler to be seen)")
    return report
