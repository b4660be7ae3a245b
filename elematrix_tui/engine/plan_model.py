"""The plan's data: one record per step (state, symbol, changes, blockers), the summary, the
stable JSON (docs/plan.md), and the words a check's result becomes (also in the runner's
confirmation). Built by engine/plan.py's ``build_plan``; no I/O here."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel

from .action import Check
from .resolve import Origin

PLAN_FORMAT = 1
State = Literal["create", "change", "in_place", "unknown", "blocked", "read", "skip"]
# One home of the symbols and the words of the summary (CLI, TUI and docs use these).
SYMBOLS: dict[str, str] = {"create": "+", "change": "~", "in_place": "=", "unknown": "?",
                           "blocked": "!", "read": "<", "skip": "-"}
SUMMARY_WORDS: dict[str, str] = {"create": "to create", "change": "to change",
                                 "unknown": "unknown", "blocked": "blocked",
                                 "in_place": "in place", "read": "read-only",
                                 "skip": "skipped"}


class Blocker(BaseModel):
    """Why a step cannot be checked yet."""

    kind: Literal["gate", "output", "parameter", "inputs"]
    name: str
    reason: str


class StepPlan(BaseModel):
    """One step or gate of the plan."""

    phase: str
    id: str
    role: Literal["step", "gate"]
    action: str
    title: str
    state: State
    symbol: str
    # What the run would change, in operator words (create/change; unknown when known).
    changes: list[str] = []
    # Why this state: "unknown, because ...", "already in place", "--offline".
    why: str | None = None
    blocked_by: list[Blocker] = []
    # The rendered inputs, secrets masked (None: they cannot be rendered yet).
    inputs: dict[str, Any] | None = None
    render_error: str | None = None
    asks_first: bool = False
    destructive: bool = False
    when: str | None = None
    when_value: str | None = None
    notes: list[str] = []
    # What a read-only look-up found (aws.preflight, aws.assert; not with --offline).
    found: list[str] = []
    # What the run will refuse in the rendered inputs (a path leaving the sandbox).
    refused: str | None = None
    on_this_machine: list[str] = []


class PhasePlan(BaseModel):
    id: str
    title: str
    gates_passed: bool
    steps: list[StepPlan]
    # The runbook's posture (engine/posture.py): "EC2.8: IMDSv2 required", the controls
    # this phase promises; and, on a phase that promises any, the ones still accepted once
    # it ran, "EC2.9: <title> (accepted: <why>; removed by: <what>)".
    satisfies: list[str] = []
    accepts: list[str] = []


class ParamPlan(BaseModel):
    name: str
    # The value the run would use; secrets are always "********" (or None: none yet).
    value: Any
    origin: Origin
    secret: bool = False
    permanent: bool = False


class Plan(BaseModel):
    """What a run would do. ``to_json`` is the stable form (docs/plan.md)."""

    format: int = PLAN_FORMAT
    runbook: str
    title: str
    deployment: str
    # False with --offline: no check ran, only rendering.
    checked: bool
    params: list[ParamPlan]
    phases: list[PhasePlan]
    # "phase/step (action): effect" for every step acting on this machine.
    on_this_machine: list[str]

    def steps(self) -> list[StepPlan]:
        """Every step and gate of the plan, in run order."""
        return [s for ph in self.phases for s in ph.steps]

    def counts(self) -> dict[str, int]:
        """How many steps are in each state (every state named, zeros included)."""
        out = dict.fromkeys(SYMBOLS, 0)
        for s in self.steps():
            out[s.state] += 1
        return out

    def summary(self) -> str:
        """'N to create, M to change, K unknown' (and the other states that occur)."""
        c = self.counts()
        head = [f"{c[k]} {SUMMARY_WORDS[k]}" for k in ("create", "change", "unknown")]
        tail = [f"{c[k]} {SUMMARY_WORDS[k]}" for k in ("blocked", "in_place", "read", "skip")
                if c[k]]
        return ", ".join(head + tail)

    def step(self, step_id: str) -> StepPlan | None:
        """The plan of one step (None: not in this plan)."""
        return next((s for s in self.steps() if s.id == step_id), None)

    def to_json(self) -> str:
        """The stable JSON form (docs/plan.md): sorted keys, two-space indent."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True)


def classify(check: Check | None, *, recorded: bool, error: str | None = None
             ) -> tuple[State, list[str], str | None]:
    """A check's result as (state, changes, why): the plan's words for one step, also used
    by the runner's confirmation, so the question shows what the plan showed.

    ``recorded``: the deployment has outputs of this step from an earlier run (used when
    the action does not say whether it would create or change).
    """
    if check is None:
        return "unknown", [], error or "the check could not run"
    if check.in_sync:
        return "in_place", [], "already in place"
    if check.in_sync is None:
        return "unknown", list(check.changes), (
            check.unknown_because or "the action cannot tell before it runs")
    creates = check.creates if check.creates is not None else not recorded
    return ("create" if creates else "change"), list(check.changes), None


def change_lines(check: Check | None, *, recorded: bool, error: str | None = None
                 ) -> list[str]:
    """The lines a confirmation shows for a step: its plan symbol and change(s)."""
    state, changes, why = classify(check, recorded=recorded, error=error)
    sym = SYMBOLS[state]
    if changes:
        return [f"{sym} {c}" for c in changes] + ([f"{sym} unknown, because {why}"]
                                                   if state == "unknown" else [])
    if state == "unknown":
        return [f"{sym} unknown, because {why}"]
    return [f"{sym} {SUMMARY_WORDS[state]}"]
