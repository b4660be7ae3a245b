"""``elematrix status``: the live deployment against what its runs converged. Writes nothing.

Built on the plan (engine/plan.py): every step of the phases this deployment has passed is
rendered with the outputs the journal recorded and asked, read-only, what it would change
(the same ``check()`` a run calls first); the AWS look-ups and asserts (``aws.assert``,
``aws.preflight``) are run live. A second checker would drift from the runbook; this one
cannot. Each checked step becomes one line:

- ``ok``: its facts hold (the plan's ``in_place``), or a read-only gate passed live;
- ``drifted``: the check names what differs (``create``/``change``); the fix is re-running
  the phase, which converges exactly those changes;
- ``unknown``: the check could not tell (a host not reachable, an output not recorded).

Steps whose action can never tell without running (a shell command, a tunnel, an approval)
are left out: they are not state. Exit 0 when nothing drifted, 1 when something did.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .journal import Journal
from .model import Runbook
from .paths import deployment_dir
from .plan import build_plan
from .plan_model import Plan, StepPlan
from .readonly import ReadOnlyContext
from .registry import Registry
from .secrets import Redactor

Verdict = Literal["ok", "drifted", "unknown"]

# Looked up live, as `elematrix plan` does: the posture asserts, whose answer is the state.
LIVE_ACTIONS = frozenset({"aws.assert"})
# Actions that run something or look something up rather than hold a state: their check
# cannot tell by design (ssh.run, ssh.forward, aws.call: engine/action.py's default;
# approve, local.*: nothing to hold; aws.preflight: facts of the account and region, whose
# warnings are no drift). matrix.bootstrap's check needs the admin API through a tunnel
# that status does not open (the verify runbook checks Matrix end to end).
NOT_STATE = frozenset({"ssh.run", "ssh.forward", "ssm.forward", "approve", "local.noop",
                       "local.sleep", "local.write", "local.fail", "aws.wait", "aws.call",
                       "aws.preflight", "aws.ssm_run", "aws.logs_flowing", "matrix.validate",
                       "matrix.canary",
                       "matrix.bootstrap"})
# The host facts no step holds (running images against the pins, disk use, the last
# backup's age): one read-only action, run where a compose step says the project lives.
HOST_ACTION = "status.host"
HOST_PHASE = "host"
# A live look-up that failed for this reason is a failed check (drift), not "could not ask".
_ASSERT_FAILED = "could not look it up: posture check failed"
_AWS_TODO = ("AWS did not answer: check the credentials and region (aws sts "
             "get-caller-identity with the same profile) and the network, then ask again")
# Exit codes (the CLI's: 2 is bad input, raised as InputError).
CLEAN, DRIFTED = 0, 1


@dataclass
class StatusLine:
    """One checked fact of the deployment."""

    phase: str
    step: str
    title: str
    action: str
    verdict: Verdict
    detail: list[str] = field(default_factory=list)
    todo: str = ""


@dataclass
class Status:
    """The deployment's live state, line by line, and the runs it is compared with."""

    deployment: str
    runbook: str
    phases: list[str]
    lines: list[StatusLine]

    @property
    def drifted(self) -> bool:
        return any(line.verdict == "drifted" for line in self.lines)

    @property
    def exit_code(self) -> int:
        return DRIFTED if self.drifted else CLEAN

    def counts(self) -> dict[str, int]:
        """How many lines of each verdict."""
        out = {"ok": 0, "drifted": 0, "unknown": 0}
        for line in self.lines:
            out[line.verdict] += 1
        return out

    def to_json(self) -> str:
        """Stable JSON: deployment, runbook, phases, counts, lines (docs/day-two.md)."""
        return json.dumps({"deployment": self.deployment, "runbook": self.runbook,
                           "phases": self.phases, "drifted": self.drifted,
                           "counts": self.counts(),
                           "lines": [asdict(x) for x in self.lines]}, indent=1)

    def to_text(self) -> str:
        """One line per fact, then the totals."""
        out = [f"status of deployment {self.deployment} against {self.runbook} "
               f"(phases: {', '.join(self.phases) or 'none'})"]
        for x in self.lines:
            out.append(f"  {x.verdict:<8} {x.phase}/{x.step}: {x.title}")
            out += [f"           {d}" for d in x.detail]
            if x.todo:
                out.append(f"           -> {x.todo}")
        c = self.counts()
        out.append(f"{c['ok']} ok, {c['drifted']} drifted, {c['unknown']} unknown")
        return "\n".join(out)


def converged_phases(rb: Runbook, state_dir: Path, deployment: str) -> list[str]:
    """The phases of ``rb`` whose gates this deployment has passed, in the runbook's order."""
    if not Journal.exists(state_dir, deployment):
        return []
    with Journal.open(state_dir, deployment) as j:
        passed = j.passed_gates()
    return [ph.id for ph in rb.phases if ph.id in passed]


def _line(phase: str, sp: StepPlan, runbook: str, deployment: str) -> StatusLine | None:
    """The status line of one planned step (None: not a state, or skipped)."""
    todo = (f"elematrix run {runbook} --deployment {deployment} --phase {phase} "
            f"(converges what differs; 'elematrix plan' shows it first)")

    def line(verdict: Verdict, detail: list[str] | None = None, todo: str = "") -> StatusLine:
        return StatusLine(phase, sp.id, sp.title, sp.action, verdict, detail or [], todo)

    if sp.state == "skip" or sp.action in NOT_STATE:
        return None
    if sp.state == "in_place":
        return line("ok")
    if sp.state in ("create", "change"):
        return line("drifted", list(sp.changes), todo)
    if sp.state == "read":
        # A live look-up (aws.assert) says in ``found`` what held and what did not.
        failed = [f for f in sp.found if f.startswith(("FAIL", "could not"))]
        if sp.found and not failed:
            return line("ok")
        if failed and not any(f.startswith(("FAIL", _ASSERT_FAILED)) for f in failed):
            # The look-up itself failed (AWS unreachable, no credentials): no answer.
            return line("unknown", failed, _AWS_TODO)
        if failed:
            return line("drifted", failed, todo)
        if sp.action not in LIVE_ACTIONS:
            return None
        return line("unknown", [sp.why or "not looked up"])
    why = sp.why or "; ".join(b.reason for b in sp.blocked_by) or "the check could not tell"
    return line("unknown", [why], "see why; a host check needs SSH (operator_cidr, port 22 "
                                  "open) and a recorded host key")


def build_status(rb: Runbook, *, deployment: str, state_dir: Path, registry: Registry,
                 params: dict[str, Any] | None = None) -> Status:
    """The live status of ``deployment`` against the phases of ``rb`` it has converged."""
    phases = converged_phases(rb, state_dir, deployment)
    lines: list[StatusLine] = []
    if phases:
        plan = build_plan(rb, deployment=deployment, state_dir=state_dir, params=params or {},
                          phases=phases, registry=registry, live_actions=LIVE_ACTIONS)
        for ph in plan.phases:
            for sp in ph.steps:
                line = _line(ph.id, sp, rb.runbook, deployment)
                if line is not None:
                    lines.append(line)
        lines += _host_lines(plan, registry, state_dir, deployment)
    return Status(deployment=deployment, runbook=rb.runbook, phases=phases, lines=lines)


def _host_lines(plan: Plan, registry: Registry, state_dir: Path,
                deployment: str) -> list[StatusLine]:
    """The host facts of ``HOST_ACTION``, on the host a recorded compose step names."""
    if HOST_ACTION not in registry:
        return []
    compose = next((sp.inputs for ph in plan.phases for sp in ph.steps
                    if sp.action == "compose.up" and sp.inputs), None)
    if compose is None:
        return []
    fields = {k: compose[k] for k in ("host", "port", "user", "key_path",
                                      "host_key_fingerprints", "project_dir", "sudo")
              if k in compose}
    if any("<steps." in str(v) or "<params." in str(v) for v in fields.values()):
        return [StatusLine(HOST_PHASE, "host", "The host's images, disk and backups", HOST_ACTION,
                           "unknown", ["the host's address or key was never recorded"],
                           "run the deploy phase first")]
    # The journal's meta holds the host keys the runs accepted (the SSH layer reads them).
    with Journal.open(state_dir, deployment) as j:
        meta = j.meta()
    ctx = ReadOnlyContext(deployment=deployment, deployment_dir=deployment_dir(state_dir,
                          deployment), params={}, meta=meta, secret=lambda _name: None,
                          redact=Redactor())
    action = registry.create(HOST_ACTION)
    try:
        result = action.apply(ctx, action.Inputs.model_validate(
            {"compose": fields, "deployment": deployment}))
    except Exception as e:  # one extra look-up must never hide the plan's lines
        return [StatusLine(HOST_PHASE, "host", "The host's images, disk and backups",
                           HOST_ACTION, "unknown", [f"{type(e).__name__}: {e}"],
                           "make the host reachable over SSH and ask again")]
    finally:
        ctx.close()
    return [StatusLine(HOST_PHASE, str(x["step"]), str(x["title"]), HOST_ACTION,
                       x["verdict"], list(x["detail"]), str(x["todo"]))
            for x in result.outputs.get("lines", [])]
