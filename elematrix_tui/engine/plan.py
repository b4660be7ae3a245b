"""``elematrix plan``: what a run would do, as data. Writes nothing.

:func:`build_plan` resolves the parameters with the runner's own resolver
(engine/resolve.py: a value ``run`` refuses, ``plan`` refuses too), renders every step
with the outputs earlier runs recorded (``<steps.id.name>`` where none exist yet), and
asks each action's read-only ``check`` what it would change, in a read-only context
(engine/readonly.py). Each step gets one state:

====== ======== ==========================================================
symbol state    meaning
====== ======== ==========================================================
``+``  create   nothing of it exists yet: the run creates it
``~``  change   it exists and differs: the run changes it (``changes`` say what)
``=``  in_place it already holds: the run records it and applies nothing
``?``  unknown  the action cannot tell before it runs (``why`` says why)
``!``  blocked  it cannot be checked yet: a gate not passed, an output not known, a
                missing parameter, inputs the run would refuse (``blocked_by``)
``<``  read     a read-only step (preflight, waits, gates): it changes nothing
``-``  skip     its ``when:`` is false with the values known now
====== ======== ==========================================================

The plan's JSON (``Plan.to_json`` in plan_model.py, ``elematrix plan --json``) has stable
keys, pinned by a golden test (tests/engine/test_plan_data.py) and documented in
docs/plan.md. Secrets never appear in it: parameters and inputs are masked, every text is
redacted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from .action import Action, Check
from .errors import InputError
from .expressions import ExpressionError, TooLarge, is_truthy, render_string, render_value
from .journal import Journal
from .model import Phase, Runbook, Step
from .paths import deployment_dir
from .plan_model import (
    PLAN_FORMAT,
    SUMMARY_WORDS,
    SYMBOLS,
    Blocker,
    ParamPlan,
    PhasePlan,
    Plan,
    State,
    StepPlan,
    change_lines,
    classify,
)
from .readonly import ReadOnlyContext, ReadOnlyViolation
from .registry import Registry
from .resolve import StoredParams, resolve_params
from .secrets import MASK, Redactor, SecretStore
from .text import clean, clean_data
from .trust import step_effects

# The data (Plan, its states and symbols) lives in plan_model.py; named here too, so
# ``engine.plan`` stays the one import for callers.
__all__ = ["PLAN_FORMAT", "SUMMARY_WORDS", "SYMBOLS", "Blocker", "ParamPlan", "PhasePlan",
           "Plan", "State", "StepPlan", "build_plan", "change_lines", "classify",
           "select_outputs"]

_PENDING_RE = re.compile(r"<steps\.([a-z0-9_]+)\.([A-Za-z0-9_]+)>")
_MISSING_RE = re.compile(r"<params\.([a-z0-9_]+)>")


class _Pending:
    """An output not known yet: renders as ``<steps.id.name>``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, attr: str) -> str:
        if attr.startswith("_"):
            raise AttributeError(attr)
        return f"<steps.{self.name}.{attr}>"

    def __str__(self) -> str:
        return f"<steps.{self.name}>"


class _Steps(dict[str, Any]):
    def __missing__(self, key: str) -> _Pending:
        return _Pending(key)


def build_plan(rb: Runbook, *, deployment: str, state_dir: Path, params: dict[str, Any],
               phases: list[str] | None, registry: Registry,
               live_actions: frozenset[str] = frozenset(), check: bool = True,
               secrets: SecretStore | None = None) -> Plan:
    """The plan of ``rb`` for ``deployment``. Nothing is written.

    ``check``: ask each action's ``check`` (read-only) what it would change; False
    (``--offline``) renders only. Steps whose action is in ``live_actions`` (read-only
    look-ups such as the AWS preflight) are applied when their inputs are known, and
    their findings shown. Raises InputError for what ``run`` would refuse (exit 2).
    """
    known_outputs: dict[str, dict[str, Any]] = {}
    meta: dict[str, Any] = {}
    passed: dict[str, str] = {}
    stored = StoredParams()
    if Journal.exists(state_dir, deployment):
        j = Journal.open(state_dir, deployment)
        try:
            known_outputs = j.latest_outputs()
            meta = j.meta()
            passed = j.passed_gates()
            stored = StoredParams.read(j, rb)
        finally:
            j.close()
    store = secrets
    looked_up: dict[str, str | None] = {}

    def secret(name: str) -> str | None:
        nonlocal store
        if name not in looked_up:
            if store is None:
                store = SecretStore()
            looked_up[name] = store.get(deployment, name)
        return looked_up[name]

    # Generated secrets are not made in a plan: it stores nothing, and shows them masked.
    res = resolve_params(rb, params, deployment=deployment, stored=stored, secret=secret,
                         generate=lambda n: MASK)
    if res.refusals:
        raise InputError(res.refusals)
    redact = _redactor(rb, registry, res.values, res.secret_names, meta, secret)
    shown: dict[str, Any] = {}  # what rendering for display sees: secrets masked
    real: dict[str, Any] = {}  # what a check sees: the values the run would use
    for p in rb.params:
        v = res.values.get(p.name)
        if p.name in res.missing:
            shown[p.name] = real[p.name] = f"<params.{p.name}>"
        elif p.type == "secret":
            shown[p.name] = MASK
            real[p.name] = None if v == MASK else v
        else:
            shown[p.name] = real[p.name] = v
    ddir = deployment_dir(state_dir, deployment)
    known = _Steps(known_outputs)
    base = {"steps": known, "deployment": deployment, "run_id": "<run>",
            "deployment_dir": str(ddir)}
    ctx = ReadOnlyContext(deployment=deployment, deployment_dir=ddir, params=real, meta=meta,
                          secret=secret, redact=redact)
    # Steps of this plan that would run before the one being planned, whose outputs are not
    # known yet: a step waiting on them is planned from their state, not called blocked.
    pending: dict[str, State] = {}
    out_phases: list[PhasePlan] = []
    on_machine: list[str] = []
    try:
        for index, ph in enumerate(rb.phases):
            if phases and ph.id not in phases:
                continue
            gate = _gate_blocker(rb, index, phases, passed)
            steps: list[StepPlan] = []
            roles: list[tuple[Literal["step", "gate"], list[Step]]] = [
                ("step", ph.steps), ("gate", ph.gates)]
            for role, steps_ in roles:
                for st in steps_:
                    sp, outputs = _plan_step(
                        ph, st, role, registry=registry, shown={**base, "params": shown},
                        real={**base, "params": real}, ctx=ctx, check=check,
                        live=st.action in live_actions and check, gate=gate,
                        recorded=st.id in known_outputs, redact=redact, pending=pending)
                    if outputs is not None:
                        known[st.id] = outputs
                        pending.pop(st.id, None)
                    elif st.id not in known:
                        pending[st.id] = sp.state
                    steps.append(sp)
                    on_machine += [f"{ph.id}/{st.id} ({st.action}): {e}"
                                   for e in sp.on_this_machine]
            satisfies, accepts = posture_lines(rb, ph.id, res.values)
            out_phases.append(PhasePlan(id=ph.id, title=clean(ph.title),
                                        gates_passed=ph.id in passed, steps=steps,
                                        satisfies=satisfies, accepts=accepts))
    finally:
        ctx.close()
    params_out = [ParamPlan(name=p.name, value=_shown_param(p.type, res.values.get(p.name),
                                                           p.name in res.missing),
                            origin=res.origin.get(p.name, "missing"),
                            secret=p.type == "secret", permanent=p.permanent)
                  for p in rb.params]
    return Plan(runbook=rb.runbook, title=clean(rb.title), deployment=deployment,
                checked=check, params=params_out, phases=out_phases,
                on_this_machine=[clean(redact(x)) for x in on_machine])


def _redactor(rb: Runbook, registry: Registry, values: dict[str, Any],
              secret_names: frozenset[str], meta: dict[str, Any],
              secret: Callable[[str], str | None]) -> Redactor:
    """Masks every secret the deployment has, as the runner's does: the parameters', the
    ones its journal names, the ones its actions keep (a check may show any of them)."""
    from .resolve import META_SECRET_NAMES

    redact = Redactor()
    for name in secret_names:
        redact.add(values.get(name) if values.get(name) != MASK else None)
    names = set(meta.get(META_SECRET_NAMES) or [])
    for _, step, _ in rb.all_steps():
        try:
            names |= set(registry.get(step.action).stored_secrets)
        except Exception:  # an action that cannot load is shown as such on its step
            continue
    for name in sorted(names - set(secret_names)):
        redact.add(secret(name))
    return redact


def _shown_param(ptype: str, value: Any, missing: bool) -> Any:
    if missing:
        return None
    if ptype == "secret":
        return MASK if value else None
    return clean(value) if isinstance(value, str) else value


def _gate_blocker(rb: Runbook, index: int, selected: list[str] | None,
                  passed: dict[str, str]) -> Blocker | None:
    """The phase lock, as the runner applies it: a phase waits for the gates of the phase
    before it, unless this plan (this run) includes that phase and would pass them first."""
    if index == 0:
        return None
    before = rb.phases[index - 1]
    if not before.gates or before.id in passed:
        return None
    if not selected or before.id in selected:
        return None
    return Blocker(kind="gate", name=before.id,
                   reason=f"the gates of phase {before.id!r} have not passed in this "
                          f"deployment (run --phase {before.id} first)")


def _plan_step(ph: Phase, st: Step, role: Literal["step", "gate"], *, registry: Registry,
               shown: dict[str, Any], real: dict[str, Any], ctx: ReadOnlyContext,
               check: bool, live: bool, gate: Blocker | None, recorded: bool,
               redact: Redactor, pending: dict[str, State]
               ) -> tuple[StepPlan, dict[str, Any] | None]:
    """The plan of one step, and its outputs when the plan learnt them (a look-up ran, or
    the check found it in place)."""
    sp = StepPlan(phase=ph.id, id=st.id, role=role, action=st.action,
                  title=clean(st.title or st.id), state="unknown", symbol="?",
                  asks_first=bool(st.confirm), destructive=bool(st.destructive),
                  when=st.when)
    blockers: list[Blocker] = [gate] if gate else []
    action: Action | None = None
    try:
        action = registry.create(st.action)
    except Exception as e:
        sp.render_error = f"action {st.action!r} cannot load: {e}"
    rendered: dict[str, Any] | None = None
    real_rendered: dict[str, Any] | None = None
    text = ""
    try:
        rendered = render_value(st.with_, shown)
        real_rendered = render_value(st.with_, real)
        masked = {k: (MASK if action is not None and k in action.secret_inputs and v else v)
                  for k, v in rendered.items()}
        sp.inputs = clean_data(redact.value(masked))
        text = json.dumps(masked, default=str, sort_keys=True)
    except TooLarge as e:  # it will fail the same way when it runs
        sp.render_error = f"REFUSED at run time: {e}"
    except ExpressionError as e:
        sp.render_error = f"cannot render yet: {e}"
    except Exception as e:
        sp.render_error = f"cannot render: {e}"
    if sp.render_error:
        sp.render_error = clean(redact(sp.render_error))
    for name in sorted(set(_MISSING_RE.findall(text))):
        blockers.append(Blocker(kind="parameter", name=name,
                                reason=f"parameter {name!r} has no value: --set {name}=..."))
    waits: dict[str, State] = {}  # steps of this plan whose outputs this one needs
    for step_id, out in sorted(set(_PENDING_RE.findall(text))):
        if step_id in pending:
            waits[step_id] = pending[step_id]
            continue
        blockers.append(Blocker(kind="output", name=f"steps.{step_id}.{out}",
                                reason=f"output {out!r} of step {step_id!r} is not known: "
                                       f"that step has not run in this deployment, and "
                                       f"this plan does not run it"))
    try:
        sp.notes = [clean(redact(n)) for n in
                    (registry.get(st.action).plan_notes(rendered or {}) if rendered else [])]
    except Exception:  # a note is extra information: none when it cannot be made
        sp.notes = []
    effects_of = rendered if rendered is not None else st.with_
    sp.on_this_machine = [clean(redact(e))
                          for e in step_effects(registry, st.action, effects_of)]
    if st.when is not None:
        wtext = st.when if "{{" in st.when else "{{ " + st.when + " }}"
        try:
            sp.when_value = clean(redact(str(render_string(wtext, shown))))
        except ExpressionError:
            sp.when_value = None
    # Skipped as the run would skip it: nothing about its inputs matters then.
    skipped = (st.when is not None and sp.when_value is not None
               and "<steps." not in sp.when_value and "<params." not in sp.when_value
               and not is_truthy(sp.when_value))
    inputs: Any = None
    outputs: dict[str, Any] | None = None
    if action is not None and real_rendered is not None and not blockers and not waits \
            and not skipped:
        try:
            inputs = action.Inputs.model_validate(real_rendered)
        except ValidationError as e:
            sp.refused = clean(redact("; ".join(
                f"{'.'.join(str(x) for x in err['loc']) or 'with'}: "
                f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors())))
            blockers.append(Blocker(kind="inputs", name=st.id,
                                    reason=f"the run will refuse its inputs: {sp.refused}"))
    sp.blocked_by = [] if skipped else blockers
    if skipped:
        sp.state, sp.why = "skip", f"when: {st.when} is false"
    elif action is None or (rendered is None and not blockers):
        sp.state, sp.why = "unknown", sp.render_error or "cannot render its inputs"
    elif blockers:
        sp.state, sp.why = "blocked", blockers[0].reason
    elif action.read_only:
        sp.state, sp.why = "read", "read-only: changes nothing"
        if live and not waits:
            sp.found, outputs = _look_up(action, ctx.for_step(ph.id, st.id), inputs, st,
                                         redact)
    elif not check:
        sp.state, sp.why = "unknown", "not checked (--offline): rendering only"
    elif waits:
        sp.state, sp.changes, sp.why = _check_waiting(action, ctx.for_step(ph.id, st.id),
                                                      real_rendered, waits, recorded, redact)
    else:
        sp.state, sp.changes, sp.why, outputs = _check(
            action, ctx.for_step(ph.id, st.id), inputs, st, recorded, redact)
    sp.symbol = SYMBOLS[sp.state]
    return sp, outputs


def _check(action: Action, ctx: ReadOnlyContext, inputs: Any, st: Step, recorded: bool,
           redact: Redactor) -> tuple[State, list[str], str | None, dict[str, Any] | None]:
    error = None
    result: Check | None = None
    try:
        result = action.check(ctx, inputs)
    except ReadOnlyViolation as e:
        error = f"a bug in {action.name}: its check {e}; nothing was written"
    except Exception as e:
        message = getattr(e, "message", None) or str(e)
        error = f"the check failed: {type(e).__name__}: {message}"
    state, changes, why = classify(result, recorded=recorded, error=error)
    outputs = (select_outputs(st, result.outputs, result.data)
               if result is not None and state == "in_place" else None)
    return (state, [clean(redact(c)) for c in changes],
            clean(redact(why)) if why is not None else None, outputs)


def _check_waiting(action: Action, ctx: ReadOnlyContext, rendered: dict[str, Any] | None,
                   waits: dict[str, State], recorded: bool, redact: Redactor
                   ) -> tuple[State, list[str], str | None]:
    """A step whose inputs wait on outputs of earlier steps of this plan.

    Its check runs on the placeholders only if it needs nothing but its inputs (it asks
    for no connection: ``ReadOnlyContext.may_connect`` is off). A check that would reach a
    service is not run; like a plan tool's "known after apply", what is built on a
    resource this run creates is new too when this deployment never had it.
    """
    after = ", ".join(waits)
    result: Check | None = None
    try:
        inputs = action.Inputs.model_validate(rendered)
        ctx.may_connect = False
        result = action.check(ctx, inputs)
    except ReadOnlyViolation as e:
        return "unknown", [], clean(redact(f"a bug in {action.name}: its check {e}"))
    except Exception:  # NeedsKnownInputs, or inputs that only validate once known
        result = None
    finally:
        ctx.may_connect = True
    if result is not None and not result.in_sync:
        state, changes, why = classify(result, recorded=recorded)
        known_after = f"its inputs are known after {after} run(s)"
        why = f"{why}; {known_after}" if why else known_after
        return state, [clean(redact(c)) for c in changes], clean(redact(why))
    if not recorded and any(w == "create" for w in waits.values()):
        return "create", [], f"new in this deployment; its inputs are known after {after} run(s)"
    return "unknown", [], f"its inputs are known only after {after} run(s)"


def posture_lines(rb: Runbook, phase_id: str, params: dict[str, Any] | None = None
                  ) -> tuple[list[str], list[str]]:
    """What the phase promises of the runbook's posture, and (on a phase that promises
    something) what stays accepted once it ran, as the plan shows them. A control whose
    option ``params`` turn off is accepted instead of promised."""
    if rb.posture is None:
        return [], []
    promised = rb.posture.satisfied_in(phase_id)
    satisfies = [f"{c.id}: {c.title}" for c in promised if not c.off(params)]
    if not promised:
        return [], []

    def why(c: Any) -> str:
        if c.off(params):
            return str(c.reason(params))
        return f"{c.accepted}; removed by: {c.removed_by or c.satisfied_by}"

    accepts = [f"{c.id}: {c.title} (accepted: {why(c)})"
               for c in rb.posture.accepted_in(phase_id, [p.id for p in rb.phases], params)]
    return satisfies, accepts


def _look_up(action: Action, ctx: ReadOnlyContext, inputs: Any, st: Step, redact: Redactor
             ) -> tuple[list[str], dict[str, Any] | None]:
    """Run one read-only look-up: what it found (or why it could not), and its outputs."""
    from .action import ActionFailed

    try:
        result = action.apply(ctx, inputs)
    except ActionFailed as e:
        return [clean(redact(f"could not look it up: {e.message}"
                             + (f" ({e.fix})" if e.fix else "")))], None
    except Exception as e:
        return [clean(redact(f"could not look it up: {type(e).__name__}: {e}"))], None
    lines = list(ctx.logs[-12:])
    scalars = {k: v for k, v in result.outputs.items() if not isinstance(v, (list, dict))}
    if scalars:
        lines.append(", ".join(f"{k}={v}" for k, v in scalars.items()))
    return [clean(redact(line)) for line in lines], select_outputs(st, result.outputs,
                                                                    result.data)


def select_outputs(step: Step, outputs: dict[str, Any], data: Any) -> dict[str, Any]:
    """A step's outputs as the runner records them: the action's, plus the step's
    ``outputs:`` JMESPath selectors over the raw result."""
    out = dict(outputs)
    if step.outputs:
        import jmespath

        source = data if data is not None else outputs
        for name, expr in step.outputs.items():
            out[name] = json.loads(json.dumps(jmespath.search(expr, source), default=str))
    return out
