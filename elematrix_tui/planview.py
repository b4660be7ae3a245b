"""The CLI's rendering of a plan (engine/plan.py's ``Plan``), as a plan tool does it.

One line per step with its symbol (``+`` create, ``~`` change, ``=`` in place, ``?``
unknown, ``!`` blocked, ``<`` read-only, ``-`` skipped), what would change beneath it,
then one summary line: "Plan: N to create, M to change, K unknown". ``--json`` prints
``Plan.to_json()`` instead: the same data (docs/plan.md).
"""

from __future__ import annotations

import json

from .engine.plan import SYMBOLS, Plan, StepPlan


def render_text(plan: Plan) -> str:
    """The plan as the operator reads it in a terminal."""
    out = [f"Plan: runbook {plan.runbook} ({plan.title}) -> deployment {plan.deployment}",
           "Nothing has been changed." + ("" if plan.checked else
                                          " Offline: nothing was checked, rendering only."),
           "Parameters:"]
    for p in plan.params:
        if p.value is None and p.origin in ("missing", "ask"):
            how = (f"<missing: --set {p.name}=...>" if p.origin == "missing"
                   else "******** (secret: asked for when the run starts)")
            out.append(f"  {p.name} = {how}")
            continue
        if p.secret:
            how = {"given": "given", "stored": "from the keyring",
                   "generated": "generated on first run"}.get(p.origin, p.origin)
            out.append(f"  {p.name} = {p.value} (secret: {how})")
            continue
        flag = " (permanent)" if p.permanent else ""
        origin = "" if p.origin in ("default", "given") else f" [{p.origin}]"
        out.append(f"  {p.name} = {p.value!r}{flag}{origin}")
    # Said before the phases, so no one misses it in a long plan.
    if plan.on_this_machine:
        out += ["", f"Acts on THIS machine ({len(plan.on_this_machine)} step(s); a runbook is "
                    "trusted code, read these before running it):",
                *[f"  {line}" for line in plan.on_this_machine]]
    else:
        out += ["", "Acts on this machine: nothing beyond the deployment directory and the "
                    "keyring."]
    out += ["", "Symbols: " + ", ".join(f"{sym} {state.replace('_', ' ')}"
                                        for state, sym in SYMBOLS.items())]
    for ph in plan.phases:
        state = "gates passed" if ph.gates_passed else "not passed yet"
        out += ["", f"Phase {ph.id}: {ph.title} [{state}]"]
        for st in ph.steps:
            out += _step_lines(st)
        if ph.satisfies:
            out += ["  Posture this phase promises (elematrix audit checks it):",
                    *[f"    {line}" for line in ph.satisfies]]
        if ph.accepts:
            out += ["  Accepted failing once it ran:", *[f"    {line}" for line in ph.accepts]]
    out += ["", f"Plan: {plan.summary()}."]
    return "\n".join(out)


def _step_lines(st: StepPlan) -> list[str]:
    marks = []
    if st.asks_first:
        marks.append("asks first")
    if st.destructive:
        marks.append("DESTRUCTIVE: type the deployment name")
    if st.when:
        marks.append(f"when {st.when}")
    out = [f"{st.symbol} {st.role} {st.id} ({st.action}): {st.title}"
           + (f"  [{'; '.join(marks)}]" if marks else "")]
    if st.inputs:
        out.append(f"      with {json.dumps(st.inputs, default=str, sort_keys=True)}")
    elif st.render_error:
        out.append(f"      with ({st.render_error})")
    out += [f"      {n}" for n in st.notes]
    out += [f"      found: {line}" for line in st.found]
    if st.when and st.when_value is not None and "{{" not in st.when:
        out.append(f"      when -> {st.when_value}")
    if st.refused:
        out.append(f"      REFUSED at run time: {st.refused}")
    out += [f"      ON THIS MACHINE: {e}" for e in st.on_this_machine]
    sym = st.symbol
    if st.state in ("create", "change"):
        out += [f"      {sym} {c}" for c in st.changes] or [f"      {sym} {st.state}"]
        if st.why:
            out.append(f"      ({st.why})")
    elif st.state == "unknown":
        out += [f"      ? {c}" for c in st.changes]
        out.append(f"      ? unknown, because {st.why}")
    elif st.state == "blocked":
        out += [f"      ! blocked: {b.reason}" for b in st.blocked_by]
    elif st.state == "in_place":
        out.append(f"      = {st.why or 'already in place'}")
    elif st.state == "skip":
        out.append(f"      - skipped: {st.why}")
    return out
