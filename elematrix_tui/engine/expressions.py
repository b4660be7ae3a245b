"""Sandboxed Jinja2 expressions in runbooks: ``{{ params.x }}``, ``{{ steps.sg.sg_id }}``.

Undefined names are errors, never empty strings: a typo in a runbook must stop the run
at validate time (names are checked statically) or at render time, not create a
resource named ``""``. A string that is exactly one ``{{ expr }}`` keeps the native type
of the value (a list of CIDRs stays a list).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.sandbox import SandboxedEnvironment

from .shell import shell_quote

ROOT_NAMES = frozenset({"params", "steps", "deployment", "run_id", "deployment_dir"})

_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.S)


class ExpressionError(Exception):
    """An expression failed to parse or render; the message is for the operator."""


def _b64(value: Any) -> str:
    data = value.encode() if isinstance(value, str) else bytes(value)
    return base64.b64encode(data).decode()


def make_env() -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                               keep_trailing_newline=True)
    env.filters["b64encode"] = _b64
    env.filters["to_json"] = lambda v: json.dumps(v, sort_keys=True)
    env.filters["shell_quote"] = shell_quote
    env.filters["bool"] = lambda v: str(v).lower() in ("1", "true", "yes", "on")
    return env


_ENV = make_env()


def has_expression(text: str) -> bool:
    return "{{" in text or "{%" in text


@dataclass(frozen=True)
class Reference:
    root: str  # params | steps
    name: str  # parameter name or step id
    attr: str | None  # output name for steps


def analyse(source: str) -> tuple[list[Reference], set[str]]:
    """Parse a template string: the params/steps it references and any unknown root names.

    Raises ExpressionError on a syntax error.
    """
    try:
        tree = _ENV.parse(source)
    except TemplateSyntaxError as e:
        raise ExpressionError(f"expression syntax: {e.message}") from e
    refs: list[Reference] = []
    stored = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    unknown: set[str] = set()
    for n in tree.find_all(nodes.Name):
        if n.ctx == "load" and n.name not in ROOT_NAMES and n.name not in stored \
                and n.name not in _ENV.globals:
            unknown.add(n.name)
    for g in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(g, (nodes.Getattr, nodes.Getitem))
        inner = g.node
        if isinstance(inner, nodes.Name) and inner.name in ("params", "steps"):
            key = g.attr if isinstance(g, nodes.Getattr) else _const(g.arg)
            if key is None:
                continue
            attr = None
            # steps.<id>.<output> is the Getattr whose node is this one; found separately.
            refs.append(Reference(inner.name, key, attr))
    for g in tree.find_all(nodes.Getattr):
        inner = g.node
        if isinstance(inner, nodes.Getattr) and isinstance(inner.node, nodes.Name) \
                and inner.node.name == "steps":
            refs.append(Reference("steps", inner.attr, g.attr))
    return refs, unknown


def _const(node: nodes.Node) -> str | None:
    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else None


def render_string(text: str, variables: Mapping[str, Any]) -> Any:
    """Render one string; a lone ``{{ expr }}`` returns the expression's native value."""
    if not has_expression(text):
        return text
    try:
        m = _SINGLE.match(text)
        if m and "{%" not in text:
            value = _ENV.compile_expression(m.group("expr"), undefined_to_none=False)(
                **variables)
            if isinstance(value, Undefined):
                value._fail_with_undefined_error()
            return value
        return _ENV.from_string(text).render(**variables)
    except UndefinedError as e:
        raise ExpressionError(f"{e.message} (in {text.strip()!r})") from e
    except TemplateSyntaxError as e:
        raise ExpressionError(f"expression syntax: {e.message} (in {text.strip()!r})") from e
    except Exception as e:  # sandbox violations, type errors inside the expression
        raise ExpressionError(f"{type(e).__name__}: {e} (in {text.strip()!r})") from e


def render_value(value: Any, variables: Mapping[str, Any]) -> Any:
    """Render every string inside a nested structure of dicts and lists."""
    if isinstance(value, str):
        return render_string(value, variables)
    if isinstance(value, Mapping):
        return {k: render_value(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, variables) for v in value]
    return value


def is_truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off", "none")
    return bool(value)
