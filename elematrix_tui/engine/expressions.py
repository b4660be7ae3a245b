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
from threading import local
from time import monotonic
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes, sandbox
from jinja2.sandbox import SandboxedEnvironment

from .params import FALSE_WORDS, truthy
from .shell import shell_quote

ROOT_NAMES = frozenset({"params", "steps", "deployment", "run_id", "deployment_dir"})
# The only global function a runbook expression may call (Jinja's sandboxed range, at most
# sandbox.MAX_RANGE items). lipsum, cycler, joiner, dict and namespace are not offered:
# validate refuses their names, so nothing fails only at run time.
GLOBALS = frozenset({"range"})
# Attributes the sandbox refuses at run time; validate refuses them first. Anything that
# starts with "_" is refused too (``__class__``, ``_private``).
UNSAFE_ATTRIBUTES = frozenset(
    {"mro"} | sandbox.UNSAFE_FUNCTION_ATTRIBUTES | sandbox.UNSAFE_METHOD_ATTRIBUTES
    | sandbox.UNSAFE_GENERATOR_ATTRIBUTES | sandbox.UNSAFE_COROUTINE_ATTRIBUTES
    | sandbox.UNSAFE_ASYNC_GENERATOR_ATTRIBUTES)
# Bounds on what one operation in an expression may build: an integer of MAX_INT_BITS bits
# (a 1,200-digit number; no runbook needs more) and a string or list of MAX_ITEMS. Without
# them ``7**(7**10)`` or ``'x' * 10**10`` runs for minutes in C, outside any step timeout.
MAX_INT_BITS = 4096
MAX_ITEMS = 1_000_000
# Work one rendering may do in all, in items built, filtered or output (each bounded
# operation charges its size), and in seconds: a loop of bounded operations is bounded too.
WORK_ITEMS = 20_000_000
WORK_SECONDS = 5.0
# Statements a runbook expression never needs and that repeat work without any operation
# to charge it to (``{% for a in x %}{% if a in x %}`` compares 10^12 times): refused by
# validate. ``{% if %}`` and ``{% set %}`` stay; filters (join, map, select) replace loops.
_UNBOUNDED_NODES: tuple[type[nodes.Node], ...] = (nodes.For, nodes.Macro, nodes.CallBlock,
                                                  nodes.FilterBlock)
# str methods whose first argument is an output width.
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_FORMAT_WIDTH = re.compile(r"%[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_NESTED_SPEC = re.compile(r"\{[^{}]*:[^{}]*\{")
_BRACE_WIDTH = re.compile(r"\{[^{}]*:[^{}]*?(\d+)[^{}]*\}")

_SINGLE = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}).)*)\}\}\s*$", re.S)


class ExpressionError(Exception):
    """An expression failed to parse or render; the message is for the operator."""


class TooLarge(ExpressionError):
    """An operation in an expression would build a value beyond the bounds above."""


def _b64(value: Any) -> str:
    data = value.encode() if isinstance(value, str) else bytes(value)
    return base64.b64encode(data).decode()


class _Work(local):
    items = 0
    deadline = 0.0
    active = False


_WORK = _Work()


def _charge(n: int) -> None:
    """Count ``n`` items of work against this rendering's budget; TooLarge when spent."""
    if not _WORK.active:
        return
    _WORK.items += n
    if _WORK.items > WORK_ITEMS:
        raise TooLarge(f"the expression does too much work (over {WORK_ITEMS} items built, "
                       f"filtered or output)")
    if monotonic() > _WORK.deadline:
        raise TooLarge(f"the expression takes longer than {WORK_SECONDS:g} s to render")


def _size(v: Any) -> int:
    try:
        return len(v) if isinstance(v, (str, bytes, list, tuple, dict, set, range)) else 1
    except TypeError:
        return 1


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _width(n: Any, what: str) -> None:
    if _is_int(n) and n > MAX_ITEMS:
        raise TooLarge(f"{what} of {n} is too large (the limit is {MAX_ITEMS})")
    if _is_int(n) and n > 0:
        _charge(n)


def _format_widths(fmt: str, pattern: re.Pattern[str]) -> None:
    for m in pattern.finditer(fmt):
        for g in m.groups():
            if g == "*":
                raise TooLarge("a '*' width in a format string is not allowed (too large?)")
            if g is not None:
                _width(int(g), "a format width")


def check_binop(op: str, left: Any, right: Any) -> None:
    """Refuse ``**``, ``*`` and ``%`` whose result would be too large; raise TooLarge."""
    if op == "**" and _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1:
        bits = right * max(1, (abs(left) - 1).bit_length())
        if bits > MAX_INT_BITS:
            raise TooLarge(f"{left} ** {right} is too large (about {bits} bits; the limit "
                           f"is {MAX_INT_BITS})")
    elif op == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and _is_int(n) and len(seq) * n > MAX_ITEMS:
                raise TooLarge(f"repeating {len(seq)} items {n} times is too large (the limit "
                               f"is {MAX_ITEMS})")
        if _is_int(left) and _is_int(right) \
                and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TooLarge(f"a product of {left.bit_length() + right.bit_length()} bits is too "
                           f"large (the limit is {MAX_INT_BITS})")
    elif op == "%" and isinstance(left, str):
        _format_widths(left, _FORMAT_WIDTH)
    # Then charge what it builds: a repeated sequence its length, anything else its inputs.
    if op == "*" and isinstance(left, (str, list, tuple)) and _is_int(right):
        _charge(len(left) * max(right, 0))
    elif op == "*" and isinstance(right, (str, list, tuple)) and _is_int(left):
        _charge(len(right) * max(left, 0))
    else:
        _charge(_size(left) + _size(right))


def _check_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    _charge(sum(_size(a) for a in args) + _size(getattr(obj, "__self__", None)))
    _check_width_call(obj, args, kwargs)


def _check_width_call(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # The sandbox hands out str.format wrapped (functools.update_wrapper): look through it.
    inner = getattr(obj, "__wrapped__", obj)
    owner = getattr(inner, "__self__", None)
    name = getattr(inner, "__name__", "")
    if isinstance(owner, str):
        if name in _WIDTH_METHODS and args:
            _width(args[0], f"a {name} width")
        elif name == "replace" and len(args) >= 2 and isinstance(args[0], str) \
                and isinstance(args[1], str):
            _replace_size(owner, args[0], args[1])
        elif name in ("format", "format_map"):
            _format_widths(owner, _BRACE_WIDTH)
            if _NESTED_SPEC.search(owner):  # "{0:{1}}": the width is an argument
                for v in (*args, *kwargs.values()):
                    _width(v, "a format width")


def _replace_size(text: str, old: str, new: str) -> None:
    hits = text.count(old) if old else len(text) + 1
    if len(text) + hits * len(new) > MAX_ITEMS:
        raise TooLarge(f"replacing {hits} times gives a string too large (the limit is "
                       f"{MAX_ITEMS})")


class _ChargedFilters(dict[str, Any]):
    """The filter table: every filter set into it charges the size of its input."""

    def __setitem__(self, name: str, f: Any) -> None:
        super().__setitem__(name, _charged(f))

    def update(self, *args: Any, **kw: Any) -> None:
        for k, v in dict(*args, **kw).items():
            self[k] = v


class BoundedEnvironment(SandboxedEnvironment):
    """Jinja's sandbox with the size of every operation's result bounded (see above).

    Only ``range`` is a global; every filter (also those added later) is charged.
    """

    intercepted_binops = frozenset({"**", "*", "%"})

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.globals = {"range": _bounded_range}
        builtin, self.filters = self.filters, _ChargedFilters()
        self.filters.update(builtin)
        _bounded_filters(self)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any,
             **kwargs: Any) -> Any:
        _check_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


def _bounded_filters(env: SandboxedEnvironment) -> None:
    """Wrap the built-in filters that take an output size, so they are bounded too."""
    center, indent, replace, fmt = (env.filters[n] for n in ("center", "indent", "replace",
                                                             "format"))

    def b_center(value: Any, width: int = 80) -> Any:
        _width(width, "a center width")
        return center(value, width)

    def b_indent(value: Any, width: int | str = 4, *args: Any, **kw: Any) -> Any:
        _width(width, "an indent") if _is_int(width) else _width(len(str(width)), "an indent")
        return indent(value, width, *args, **kw)

    def b_replace(ctx: Any, value: Any, old: Any, new: Any, count: int | None = None) -> Any:
        _replace_size(str(value), str(old), str(new))
        return replace(ctx, value, old, new, count)

    def b_format(value: Any, *args: Any, **kw: Any) -> Any:
        _format_widths(str(value), _FORMAT_WIDTH)
        return fmt(value, *args, **kw)

    from jinja2.utils import pass_eval_context

    env.filters.update(center=b_center, indent=b_indent, replace=pass_eval_context(b_replace),
                       format=b_format)


def _charged(f: Any) -> Any:
    """A filter that charges the size of what it is given (sort, join, unique... are O(n))."""
    import functools

    # pass_context / pass_eval_context mark a filter with this attribute (functools.wraps
    # copies it): Jinja then passes the context first and the value second.
    passed = getattr(f, "jinja_pass_arg", None)

    @functools.wraps(f)
    def run(*args: Any, **kw: Any) -> Any:
        value = args[1] if passed is not None and len(args) > 1 else args[0] if args else None
        _charge(_size(value))
        return f(*args, **kw)

    return run


def _bounded_range(*args: int) -> range:
    r = sandbox.safe_range(*args)
    _charge(len(r))
    return r


def make_env() -> SandboxedEnvironment:
    """The expression environment: sandboxed, bounded, undefined names are errors."""
    env = BoundedEnvironment(undefined=StrictUndefined, autoescape=False,
                             keep_trailing_newline=True)
    env.filters["b64encode"] = _b64
    env.filters["to_json"] = lambda v: json.dumps(v, sort_keys=True)
    env.filters["shell_quote"] = shell_quote
    env.filters["bool"] = lambda v: truthy(str(v))  # the parameters' yes words
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
    loads = [n for n in tree.find_all(nodes.Name) if n.ctx == "load"]
    for n in loads:
        if n.name not in ROOT_NAMES and n.name not in stored and n.name not in GLOBALS:
            unknown.add(n.name)
    for g in tree.find_all((nodes.Getattr, nodes.Getitem)):
        attr = g.attr if isinstance(g, nodes.Getattr) else \
            _const(g.arg) if isinstance(g, nodes.Getitem) else None
        if attr is not None and (attr.startswith("_") or attr in UNSAFE_ATTRIBUTES):
            raise ExpressionError(f"attribute {attr!r} is not allowed in a runbook expression "
                                  f"(the sandbox refuses it)")
    _refuse_statements(tree)
    if not loads:
        # A constant expression: evaluate it now, under the bounds, so a bomb or an
        # always-failing expression is a located validate error, not a run-time surprise.
        try:
            render_string(source, {})
        except TooLarge as e:
            raise ExpressionError(str(e).split(" (in ")[0]) from e
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


def _refuse_statements(tree: nodes.Template) -> None:
    for node in tree.find_all(_UNBOUNDED_NODES):
        raise ExpressionError(f"'{{% {type(node).__name__.lower()} %}}' is not allowed in a "
                              f"runbook expression (its work has no bound; use filters such "
                              f"as join, map or select)")


def _const(node: nodes.Node) -> str | None:
    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else None


def render_string(text: str, variables: Mapping[str, Any]) -> Any:
    """Render one string; a lone ``{{ expr }}`` returns the expression's native value."""
    if not has_expression(text):
        return text
    outer = _WORK.active  # a nested render (a filter rendering) shares the budget
    if not outer:
        _WORK.items, _WORK.deadline, _WORK.active = 0, monotonic() + WORK_SECONDS, True
    try:
        m = _SINGLE.match(text)
        if m and "{%" not in text:
            value = _ENV.compile_expression(m.group("expr"), undefined_to_none=False)(
                **variables)
            if isinstance(value, Undefined):
                value._fail_with_undefined_error()
            return value
        # Also at run time: a string validate never saw (a step's fix:) obeys the same rule.
        _refuse_statements(_ENV.parse(text))
        out: list[str] = []
        for chunk in _ENV.from_string(text).generate(**variables):
            _charge(len(chunk))
            out.append(chunk)
        return "".join(out)
    except TooLarge as e:
        raise TooLarge(f"expression too large: {e} (in {text.strip()!r})") from e
    except UndefinedError as e:
        raise ExpressionError(f"{e.message} (in {text.strip()!r})") from e
    except TemplateSyntaxError as e:
        raise ExpressionError(f"expression syntax: {e.message} (in {text.strip()!r})") from e
    except Exception as e:  # sandbox violations, type errors inside the expression
        raise ExpressionError(f"{type(e).__name__}: {e} (in {text.strip()!r})") from e
    finally:
        if not outer:
            _WORK.active = False


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
    """Whether a rendered ``when:`` holds: any text but empty, ``none`` and a no word."""
    if isinstance(value, str):
        word = value.strip().lower()
        return word not in FALSE_WORDS and word not in ("", "none")
    return bool(value)
