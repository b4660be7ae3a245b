"""``elematrix plan``: what a run would do, rendered, with secrets masked. Writes nothing.

Outputs of steps that have not run yet in this deployment show as ``<steps.id.name>``;
outputs recorded by earlier runs are used as they are, so the plan of a later phase
shows the real instance id or address.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import InputError, Located
from .expressions import ExpressionError, TooLarge, render_string, render_value
from .journal import Journal
from .model import Runbook
from .params import ParamValueError, coerce, unknown_params
from .paths import deployment_dir
from .registry import Registry
from .secrets import MASK
from .text import clean
from .trust import step_effects


class _Pending:
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
               live_actions: frozenset[str] = frozenset()) -> str:
    """The plan as text. Steps whose action is in ``live_actions`` (read-only look-ups such
    as the AWS preflight) are run when their inputs are known, and their findings shown;
    they change nothing, and nothing is written."""
    known_outputs: dict[str, dict[str, Any]] = {}
    remembered: dict[str, Any] = {}
    passed: dict[str, str] = {}
    if Journal.exists(state_dir, deployment):
        j = Journal.open(state_dir, deployment)
        known_outputs = j.latest_outputs()
        remembered = j.get_meta("params") or {}
        passed = j.passed_gates()
        j.close()
    missing = False  # a required parameter has no value yet
    values: dict[str, Any] = {}
    notes: list[str] = []
    errors: list[Located] = []
    for p in rb.params:
        if p.type == "secret":
            values[p.name] = MASK
            how = "given" if p.name in params else (
                "generated on first run if not stored" if p.generate else
                "from the keyring, asked for if not stored")
            notes.append(f"  {p.name} = {MASK} (secret: {how})")
            continue
        raw = params.get(p.name, remembered.get(p.name, p.default) if p.remember else p.default)
        if raw is None:
            values[p.name] = f"<{p.name}>" if p.is_required else None
            if p.is_required:
                # Its placeholder would fail every input check: those are not shown then.
                missing = True
                notes.append(f"  {p.name} = <missing: --set {p.name}=...>")
            continue
        try:
            values[p.name] = coerce(p, raw)
        except ParamValueError as e:
            errors.append(Located("--set", 0, 0, f"parameter {p.name!r}: {e}"))
            continue
        flag = " (permanent)" if p.permanent else ""
        notes.append(f"  {p.name} = {values[p.name]!r}{flag}")
    errors += unknown_params(rb, params)  # as run does: a typo is never silently ignored
    if errors:
        raise InputError(errors)
    steps = _Steps(known_outputs)
    variables = {"params": values, "steps": steps, "deployment": deployment, "run_id": "<run>",
                 "deployment_dir": str(deployment_dir(state_dir, deployment))}
    out = [f"Plan: runbook {rb.runbook} ({rb.title}) -> deployment {deployment}",
           "Nothing has been changed. Parameters:", *notes]
    on_machine: list[str] = []
    summary_at = len(out)
    for ph in rb.phases:
        if phases and ph.id not in phases:
            continue
        state = "gates passed" if ph.id in passed else "not passed yet"
        out += ["", f"Phase {ph.id}: {ph.title} [{state}]"]
        for role, steps_ in (("step", ph.steps), ("gate", ph.gates)):
            for st in steps_:
                marks = []
                if st.confirm:
                    marks.append("asks first")
                if st.destructive:
                    marks.append("DESTRUCTIVE: type the deployment name")
                if st.when:
                    marks.append(f"when {st.when}")
                head = "  gate " if role == "gate" else "  step "
                out.append(f"{head}{st.id} ({st.action}): {st.title}"
                           + (f"  [{'; '.join(marks)}]" if marks else ""))
                effects_of: dict[str, Any] = st.with_
                try:
                    rendered = render_value(st.with_, variables)
                    effects_of = rendered
                    action = registry.get(st.action)
                    shown = {k: (MASK if k in action.secret_inputs and v else v)
                             for k, v in rendered.items()}
                    text = json.dumps(shown, default=str, sort_keys=True)
                except TooLarge as e:  # it will fail the same way when it runs
                    text = f"(REFUSED at run time: {e})"
                except ExpressionError as e:
                    text = f"(cannot render yet: {e})"
                except Exception as e:
                    text = f"(cannot render: {e})"
                if st.with_:
                    out.append(f"      with {text}")
                out += _notes(registry, st.action, st.with_, variables)
                if st.action in live_actions and st.with_ and "<steps." not in text:
                    out += _live(st.action, rendered, registry, deployment, state_dir, values)
                if st.when and "{{" not in st.when:
                    try:
                        value = render_string("{{ " + st.when + " }}", variables)
                        out.append(f"      when -> {value}")
                    except ExpressionError:
                        pass
                if not missing and effects_of is not st.with_ and "<steps." not in text:
                    problem = _invalid(registry, st.action, effects_of)
                    if problem:  # e.g. a path a parameter sends outside its sandbox
                        out.append(f"      REFUSED at run time: {problem}")
                for effect in step_effects(registry, st.action, effects_of):
                    out.append(f"      ON THIS MACHINE: {effect}")
                    on_machine.append(f"  {ph.id}/{st.id} ({st.action}): {effect}")
    # Said before the phases, so no one misses it in a long plan.
    out[summary_at:summary_at] = (
        ["", f"Acts on THIS machine ({len(on_machine)} step(s); a runbook is trusted code, "
             "read these before running it):", *on_machine]
        if on_machine else ["", "Acts on this machine: nothing beyond the deployment "
                                "directory and the keyring."])
    # Rendered inputs and look-up findings come from runbooks and AWS: shown cleaned.
    return clean("\n".join(out))


def _notes(registry: Registry, action_name: str, with_: dict[str, Any],
           variables: dict[str, Any]) -> list[str]:
    """The action's own plan notes (e.g. the image pins a stack rendering uses)."""
    try:
        rendered = render_value(with_, variables) if with_ else {}
        return [f"      {n}" for n in registry.get(action_name).plan_notes(rendered)]
    except Exception:
        # A note is extra information: a step whose inputs cannot render yet has none.
        return []


def _live(action_name: str, rendered: dict[str, Any], registry: Registry, deployment: str,
          state_dir: Path, values: dict[str, Any]) -> list[str]:
    """Run one read-only look-up and describe what it found (or why it could not)."""
    from .action import ActionFailed
    from .standalone import StandaloneContext

    action = registry.create(action_name)
    if not action.read_only:
        return []
    ctx = StandaloneContext(deployment_dir=deployment_dir(state_dir, deployment),
                            params=values, deployment=deployment, step_id="plan")
    try:
        result = action.apply(ctx, action.Inputs.model_validate(rendered))
    except ActionFailed as e:
        return [f"      found: could not look it up: {e.message}"
                + (f" ({e.fix})" if e.fix else "")]
    except Exception as e:
        return [f"      found: could not look it up: {type(e).__name__}: {e}"]
    finally:
        ctx.close()
    lines = [f"      found: {line}" for _, line in ctx.logs[-12:]]
    shown = {k: v for k, v in result.outputs.items() if not isinstance(v, (list, dict))}
    if shown:
        lines.append("      found: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return lines


def _invalid(registry: Registry, action_name: str, rendered: dict[str, Any]) -> str | None:
    """Why the rendered inputs would be refused when the step runs, or None."""
    from pydantic import ValidationError

    try:
        registry.get(action_name).Inputs.model_validate(rendered)
    except ValidationError as e:
        return "; ".join(f"{'.'.join(str(x) for x in err['loc']) or 'with'}: "
                         f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors())
    except Exception:
        return None
    return None
