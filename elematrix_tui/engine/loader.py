"""Load and validate a runbook before anything runs; report every problem at once, located.

Checks, in order: YAML syntax and duplicate keys; the schema (unknown keys, types);
ids (unique, snake_case); actions (known, inputs valid where they are literal);
JMESPath output selectors; ``on_failure`` targets; and every expression: syntax,
unknown names, ``params`` that are not declared, ``steps`` that do not exist or
come later in the runbook.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import Located, RunbookError
from .expressions import ExpressionError, analyse, has_expression
from .model import Param, Phase, Runbook, Step
from .params import ParamValueError, coerce
from .posture import Control, Posture
from .registry import Registry
from .yamlloc import MAX_BYTES, LocDict, LocList, load_located, locate


def _read(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:  # checked before reading: never load a huge file into memory
            raise RunbookError([Located(str(path), 1, 1, f"file too large for a runbook or "
                                                         f"parameter file ({size} bytes; the "
                                                         f"limit is {MAX_BYTES})")])
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunbookError([Located(str(path), 0, 0, "no such file")]) from None
    except IsADirectoryError:
        raise RunbookError([Located(str(path), 0, 0, "is a directory, not a runbook file")]) \
            from None
    except UnicodeDecodeError as e:
        raise RunbookError([Located(str(path), 0, 0, f"not UTF-8 text ({e.reason})")]) from None
    except OSError as e:
        raise RunbookError([Located(str(path), 0, 0, f"cannot read: {e.strerror}")]) from None


def _pydantic_errors(e: ValidationError, tree: Any, path: str,
                     prefix: tuple[Any, ...] = ()) -> list[Located]:
    out: list[Located] = []
    for err in e.errors():
        loc = tuple(prefix) + tuple(x for x in err["loc"] if not str(x).startswith("function-"))
        kind = err["type"]
        name = loc[-1] if loc else ""
        if kind == "extra_forbidden":
            line, col = locate(tree, loc, key=True)
            msg = f"unknown key {name!r}"
        elif kind == "missing":
            line, col = locate(tree, loc[:-1])
            msg = f"missing required key {name!r}"
        else:
            line, col = locate(tree, loc)
            text = err["msg"].removeprefix("Value error, ")
            where = ".".join(str(x) for x in loc if not isinstance(x, int)) or "runbook"
            msg = f"{where}: {text}"
        out.append(Located(path, line, col, msg))
    return out


def _walk_strings(node: Any, tree_node: Any, pos: tuple[int, int]):  # type: ignore[no-untyped-def]
    """Yield (string, (line, col)) for every string in a YAML subtree."""
    if isinstance(node, str):
        yield node, pos
    elif isinstance(node, dict):
        for k, v in node.items():
            p = tree_node.value_pos.get(k, pos) if isinstance(tree_node, LocDict) else pos
            sub = tree_node.get(k) if isinstance(tree_node, LocDict) else None
            yield from _walk_strings(v, sub, p)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            p = tree_node.item_pos[i] if isinstance(tree_node, LocList) and i < len(
                tree_node.item_pos) else pos
            sub = tree_node[i] if isinstance(tree_node, LocList) else None
            yield from _walk_strings(v, sub, p)


def _expr_paths(node: Any, prefix: tuple[Any, ...] = ()) -> set[tuple[Any, ...]]:
    """Paths inside a ``with:`` block whose value holds an expression (typed at run time)."""
    out: set[tuple[Any, ...]] = set()
    if isinstance(node, str) and has_expression(node):
        out.add(prefix)
    elif isinstance(node, dict):
        for k, v in node.items():
            out |= _expr_paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out |= _expr_paths(v, (*prefix, i))
    return out


def validate_tree(tree: Any, path: str, registry: Registry) -> tuple[Runbook | None,
                                                                     list[Located]]:
    """Validate a parsed runbook tree; return the model (None if the schema failed) and errors."""
    if not isinstance(tree, dict):
        return None, [Located(path, 1, 1, "a runbook must be a mapping with 'runbook', "
                                          "'params' and 'phases'")]
    schema_errors: list[Located] = []
    rb: Runbook | None
    try:
        rb = Runbook.model_validate(tree)
        partial = rb
    except ValidationError as e:
        # Report every problem at once: keep checking the parts that are well formed.
        schema_errors = _pydantic_errors(e, tree, path)
        rb, partial = None, _partial(tree)
    errors, ok = _semantic(partial, tree, path, registry)
    return (rb if ok else None), schema_errors + errors


def _partial(tree: dict[Any, Any]) -> Runbook:
    """A runbook made of only the well-formed params, phases and steps of a broken tree."""
    params = []
    raw_params = tree.get("params")
    for p in raw_params if isinstance(raw_params, list) else []:
        try:
            params.append(Param.model_validate(p))
        except ValidationError:
            pass
    phases = []
    raw_phases = tree.get("phases")
    for ph in raw_phases if isinstance(raw_phases, list) else []:
        if not isinstance(ph, dict) or not isinstance(ph.get("id"), str):
            continue
        lists: dict[str, list[Step]] = {}
        for role in ("steps", "gates", "cleanup"):
            raw = ph.get(role)
            items: list[Any] = raw if isinstance(raw, list) else []
            good = []
            for st in items:
                try:
                    good.append(Step.model_validate(st))
                except ValidationError:
                    # Keep its id so references to it are not reported as missing.
                    if isinstance(st, dict) and isinstance(st.get("id"), str):
                        good.append(Step.model_construct(id=st["id"], action="", with_={},
                                                         outputs={}, on_failure="abort"))
            lists[role] = good
        phases.append(Phase.model_construct(id=ph["id"], title="", description="",
                                            steps=lists["steps"], gates=lists["gates"],
                                            cleanup=lists["cleanup"]))
    posture = _partial_posture(tree.get("posture")) if "posture" in tree else None
    return Runbook.model_construct(runbook=str(tree.get("runbook")), params=params,
                                   phases=phases, posture=posture)


def _partial_posture(raw: Any) -> Posture | None:
    """The well-formed controls of a broken posture section (the broken ones are the schema
    check's to report; the rest are still checked against the phases and gates)."""
    try:
        return Posture.model_validate(raw)
    except ValidationError:
        pass
    if not isinstance(raw, dict):
        return None
    good = []
    raw_controls = raw.get("controls")
    for c in raw_controls if isinstance(raw_controls, list) else []:
        try:
            good.append(Control.model_validate(c))
        except ValidationError:
            # Kept by id so a gate naming it is not reported as unknown too.
            if isinstance(c, dict) and isinstance(c.get("id"), str):
                good.append(Control.model_construct(id=c["id"], title="", prowler=[],
                                                    satisfied_by=c.get("satisfied_by"),
                                                    accepted="?", removed_by="?"))
    return Posture.model_construct(controls=good)


def _semantic(rb: Runbook, tree: Any, path: str, registry: Registry) -> tuple[list[Located],
                                                                             bool]:
    errors: list[Located] = []

    def at(loc: tuple[Any, ...], msg: str, key: bool = False) -> None:
        errors.append(Located(path, *locate(tree, loc, key=key), msg))

    seen_params: set[str] = set()
    for i, p in enumerate(rb.params):
        if p.name in seen_params:
            at(("params", i, "name"), f"duplicate parameter {p.name!r}")
        seen_params.add(p.name)
        if p.default is not None:
            try:
                coerce(p, p.default)
            except ParamValueError as e:
                at(("params", i, "default"), f"default of {p.name!r}: {e}")

    seen_phases: set[str] = set()
    # Step ids are one namespace across the runbook: they are names in expressions.
    order: dict[str, int] = {}
    steps_by_id: dict[str, Step] = {}
    index = 0
    for pi, ph in enumerate(rb.phases):
        if ph.id in seen_phases:
            at(("phases", pi, "id"), f"duplicate phase id {ph.id!r}")
        seen_phases.add(ph.id)
        for role in ("steps", "gates", "cleanup"):
            for si, st in enumerate(getattr(ph, role)):
                if st.id in order:
                    at(("phases", pi, role, si, "id"), f"duplicate step id {st.id!r}")
                else:
                    order[st.id] = index
                    steps_by_id[st.id] = st
                index += 1

    for pi, ph in enumerate(rb.phases):
        cleanup_ids = {c.id for c in ph.cleanup}
        _check_needs(ph, pi, at)
        for role in ("steps", "gates", "cleanup"):
            for si, st in enumerate(getattr(ph, role)):
                base = ("phases", pi, role, si)
                my_index = order.get(st.id, -1)
                if not st.action:
                    continue  # malformed: already reported by the schema check
                _check_step(st, base, tree, path, registry, errors, at, order, steps_by_id,
                            my_index, seen_params, cleanup_ids, role)
    _check_posture(rb, tree, at)
    return errors, not errors


def _check_posture(rb: Runbook, tree: Any, at: Any) -> None:
    """The posture section against the phases and the gates' ``control`` names: a phase
    that does not exist, a control listed twice, a Prowler check under two controls, a gate
    check naming a control the section does not list."""
    posture = getattr(rb, "posture", None)
    if posture is None and isinstance(tree, dict) and "posture" in tree:
        return  # not even a mapping: the schema check said where
    phase_ids = {ph.id for ph in rb.phases}
    known: set[str] = set()
    checks: dict[str, str] = {}
    if posture is not None:
        for i, c in enumerate(posture.controls):
            loc: tuple[Any, ...] = ("posture", "controls", i)
            if c.id in known:
                at((*loc, "id"), f"control {c.id} is listed twice")
            known.add(c.id)
            if c.option is not None and c.option not in {
                    p.name for p in rb.params if p.type == "bool"}:
                at((*loc, "option"), f"control {c.id}: option {c.option!r} is not a bool "
                                     f"parameter of this runbook")
            if c.satisfied_by is not None and c.satisfied_by not in phase_ids:
                at((*loc, "satisfied_by"), f"control {c.id}: no phase {c.satisfied_by!r} "
                                           f"(phases: {', '.join(sorted(phase_ids))})")
            for j, check in enumerate(c.prowler):
                if check in checks:
                    at((*loc, "prowler", j), f"Prowler check {check} is already under "
                                             f"control {checks[check]}")
                checks[check] = c.id
    for pi, ph in enumerate(rb.phases):
        for role in ("steps", "gates"):
            for si, st in enumerate(getattr(ph, role)):
                if st.action != "aws.assert":
                    continue
                raw = st.with_.get("checks") if isinstance(st.with_, dict) else None
                for ci, chk in enumerate(raw if isinstance(raw, list) else []):
                    cid = chk.get("control") if isinstance(chk, dict) else None
                    if not isinstance(cid, str):
                        continue
                    at_check: tuple[Any, ...] = ("phases", pi, role, si, "with", "checks",
                                                 ci, "control")
                    if posture is None:
                        at(at_check, f"step {st.id!r}: control {cid} named, but the runbook has "
                                f"no posture section listing its controls")
                    elif cid not in known:
                        at(at_check, f"step {st.id!r}: control {cid} is not in the posture "
                                f"section (controls: {', '.join(sorted(known))})")
                    else:
                        # Proved in the phase that satisfies it or a later one (harden
                        # proves EC2.13 again, SSH closed altogether).
                        c = posture.control(cid)
                        order = [p.id for p in rb.phases]
                        if c is not None and (c.satisfied_by not in order or order.index(
                                c.satisfied_by) > order.index(ph.id)):
                            at(at_check, f"step {st.id!r}: control {cid} is proved in phase "
                                    f"{ph.id!r}, but the posture section has it satisfied "
                                    f"by {c.satisfied_by or 'no phase (accepted)'}")


def _check_needs(ph: Phase, pi: int, at: Any) -> None:
    """``needs:`` names earlier steps of the same phase (engine/schedule.py), on steps only."""
    earlier: list[str] = []
    for si, st in enumerate(ph.steps):
        for ni, name in enumerate(st.needs or []):
            where = ("phases", pi, "steps", si, "needs", ni)
            if name == st.id:
                at(where, f"step {st.id!r}: needs: a step cannot wait for itself")
            elif name not in earlier:
                later = any(s.id == name for s in ph.steps)
                at(where, f"step {st.id!r}: needs: {name!r} "
                          + ("comes later in the phase; a step can only wait for an earlier one"
                             if later else
                             f"is not a step of phase {ph.id!r} (needs: names steps of the "
                             f"same phase; phases already run one after another)"))
        earlier.append(st.id)
    for role in ("gates", "cleanup"):
        for si, st in enumerate(getattr(ph, role)):
            if st.needs is not None:
                at(("phases", pi, role, si, "needs"),
                   f"step {st.id!r}: needs: applies to a phase's steps only; {role} run one "
                   f"after another", key=True)


def _check_step(st: Step, base: tuple[Any, ...], tree: Any, path: str, registry: Registry,
                errors: list[Located], at: Any, order: dict[str, int],
                steps_by_id: dict[str, Step], my_index: int, params: set[str],
                cleanup_ids: set[str], role: str) -> None:
    action_cls = None
    if st.action not in registry:
        close = difflib.get_close_matches(st.action, registry.names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else \
            f"; known actions: {', '.join(registry.names())}"
        at((*base, "action"), f"step {st.id!r}: unknown action {st.action!r}{hint}")
    else:
        try:
            action_cls = registry.get(st.action)
        except Exception as e:  # a broken action module must not crash validation
            at((*base, "action"), f"step {st.id!r}: action {st.action!r} cannot load: {e}")
    if action_cls is not None:
        skip = _expr_paths(st.with_)
        try:
            action_cls.Inputs.model_validate(st.with_)
        except ValidationError as e:
            for err in e.errors():
                loc = tuple(err["loc"])
                if any(loc[: len(s)] == s for s in skip):
                    continue  # typed when rendered
                sub = ValidationError.from_exception_data(e.title, [err])  # type: ignore[list-item]
                for located in _pydantic_errors(sub, tree, path, (*base, "with")):
                    errors.append(Located(located.path, located.line, located.col,
                                          f"step {st.id!r}: {located.message}"))
    if st.outputs:
        import jmespath  # light; ships with boto3
        from jmespath.exceptions import JMESPathError
        for name, expr in st.outputs.items():
            try:
                jmespath.compile(expr)
            except JMESPathError as e:
                at((*base, "outputs", name), f"step {st.id!r}: output {name!r}: bad JMESPath "
                                             f"{expr!r}: {e}")
    if st.on_failure not in ("abort", "continue") and st.on_failure not in cleanup_ids:
        at((*base, "on_failure"), f"step {st.id!r}: on_failure must be abort, continue or the "
                                  f"id of a cleanup step of this phase; {st.on_failure!r} is none")
    # Expressions: in `with`, and `when` (a bare expression).
    raw_step = _subtree(tree, base)
    strings = list(_walk_strings(st.with_, raw_step.get("with") if isinstance(raw_step, dict)
                                 else None, locate(tree, (*base, "with"))))
    if st.when is not None:
        when = st.when if has_expression(st.when) else "{{ " + st.when + " }}"
        strings.append((when, locate(tree, (*base, "when"))))
    if isinstance(st.locks, dict):
        strings += list(_walk_strings(st.locks, raw_step.get("locks") if isinstance(
            raw_step, dict) else None, locate(tree, (*base, "locks"))))
    for text, (line, col) in strings:
        if not has_expression(text):
            continue
        try:
            refs, unknown = analyse(text)
        except ExpressionError as e:
            errors.append(Located(path, line, col, f"step {st.id!r}: {e}"))
            continue
        for name in sorted(unknown):
            errors.append(Located(path, line, col,
                                  f"step {st.id!r}: unknown name {name!r} in expression; "
                                  f"use params.*, steps.*, deployment, run_id or deployment_dir"))
        for ref in refs:
            if ref.root == "params" and ref.name not in params:
                errors.append(Located(path, line, col,
                                      f"step {st.id!r}: params.{ref.name} is not a declared "
                                      f"parameter"))
            elif ref.root == "steps":
                if ref.name not in order:
                    errors.append(Located(path, line, col,
                                          f"step {st.id!r}: steps.{ref.name} does not exist"))
                elif ref.name == st.id:
                    errors.append(Located(path, line, col,
                                          f"step {st.id!r}: a step cannot use its own outputs"))
                elif order[ref.name] > my_index and role != "cleanup":
                    errors.append(Located(path, line, col,
                                          f"step {st.id!r}: steps.{ref.name} comes later in the "
                                          f"runbook; its outputs do not exist yet"))
                elif ref.attr is not None:
                    _check_output(ref.name, ref.attr, steps_by_id, registry, errors, path,
                                  line, col, st.id)


def _check_output(step_id: str, attr: str, steps_by_id: dict[str, Step], registry: Registry,
                  errors: list[Located], path: str, line: int, col: int, me: str) -> None:
    target = steps_by_id[step_id]
    declared = set(target.outputs)
    try:
        names = registry.get(target.action).output_names
    except Exception:
        return
    if names is None:
        return  # the action's outputs depend on its inputs: checked at run time
    known = set(names)
    if attr not in declared | known:
        errors.append(Located(path, line, col,
                              f"step {me!r}: steps.{step_id} has no output {attr!r}; it has "
                              f"{', '.join(sorted(declared | known)) or 'none'}"))


def _subtree(tree: Any, loc: tuple[Any, ...]) -> Any:
    node = tree
    for part in loc:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def load_runbook(path: str | Path, registry: Registry) -> Runbook:
    """Read, parse and validate a runbook file. Raises RunbookError listing every problem."""
    p = Path(path)
    text = _read(p)
    tree, problems = load_located(text, str(p))
    if tree is None:
        raise RunbookError(problems or [Located(str(p), 1, 1, "the file holds no runbook "
                                                             "(a null document)")])
    rb, errors = validate_tree(tree, str(p), registry)
    errors = problems + errors
    if errors or rb is None:
        raise RunbookError(sorted(set(errors), key=lambda e: (e.line, e.col, e.message)))
    return rb


def load_params_file(path: str | Path, rb: Runbook) -> dict[str, Any]:
    """A YAML mapping of parameter values; unknown names and bad values are located errors."""
    p = Path(path)
    text = _read(p)
    tree, problems = load_located(text, str(p))
    if problems:
        raise RunbookError(problems)
    if not isinstance(tree, dict):
        line, col = getattr(tree, "pos", (1, 1))
        raise RunbookError([Located(str(p), line, col, "a parameter file must be a mapping "
                                                       "of name: value")])
    errors: list[Located] = []
    out: dict[str, Any] = {}
    for key, value in tree.items():
        param = rb.param(str(key))
        line, col = tree.key_pos[key] if isinstance(tree, LocDict) else (0, 0)
        if param is None:
            close = difflib.get_close_matches(str(key), [x.name for x in rb.params], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            errors.append(Located(str(p), line, col,
                                  f"unknown parameter {key!r} for runbook {rb.runbook!r}{hint}"))
            continue
        if param.type == "secret":
            errors.append(Located(str(p), line, col,
                                  f"parameter {key!r} is a secret: do not put it in a file; "
                                  f"it is asked for (or generated) and kept in the keyring"))
            continue
        try:
            out[param.name] = coerce(param, value)
        except ParamValueError as e:
            vl, vc = tree.value_pos[key] if isinstance(tree, LocDict) else (line, col)
            errors.append(Located(str(p), vl, vc, f"parameter {key!r}: {e}"))
    if errors:
        raise RunbookError(errors)
    return out
