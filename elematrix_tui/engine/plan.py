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
from .expressions import ExpressionError, render_string, render_value
from .journal import Journal
from .model import Runbook
from .params import ParamValueError, coerce, unknown_params
from .paths import deployment_dir
from .registry import Registry
from .secrets import MASK


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
                try:
                    rendered = render_value(st.with_, variables)
                    action = registry.get(st.action)
                    shown = {k: (MASK if k in action.secret_inputs and v else v)
                             for k, v in rendered.items()}
                    text = json.dumps(shown, default=str, sort_keys=True)
                except ExpressionError as e:
                    text = f"(cannot render yet: {e})"
                except Exception as e:
                    text = f"(cannot render: {e})"
                if st.with_:
                    out.append(f"      with {text}")
                if st.action in live_actions and st.with_ and "<steps." not in text:
                    out += _live(st.action, rendered, registry, deployment, state_dir, values)
                if st.when and "{{" not in st.when:
                    try:
                        value = render_string("{{ " + st.when + " }}", variables)
                        out.append(f"      when -> {value}")
                    except ExpressionError:
                        pass
    return "\n".join(out)


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
