"""YAML loading that remembers where every value came from.

Mappings load as :class:`LocDict` and sequences as :class:`LocList`; both keep the
line/column of each key and item, so a validation error anywhere in the tree (a
pydantic error path, an expression inside ``with:``) can be reported as
``PATH:LINE:COL``. Duplicate keys, which plain PyYAML silently overwrites, are errors.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from .errors import Located

Pos = tuple[int, int]  # 1-based line, column

# Bounds on what a runbook or parameter file may cost to load. The bundled poc-ec2 is about
# 40 KB and 3,000 values; these leave two orders of magnitude and still stop a 1 KB
# "billion laughs" (aliases of aliases, 10^9 values once expanded) in milliseconds.
MAX_BYTES = 2 << 20
MAX_VALUES = 200_000


class _TooBig(Exception):
    def __init__(self, pos: Pos) -> None:
        self.pos = pos


class LocDict(dict[Any, Any]):
    pos: Pos = (0, 0)
    key_pos: dict[Any, Pos]
    value_pos: dict[Any, Pos]


class LocList(list[Any]):
    pos: Pos = (0, 0)
    item_pos: list[Pos]


def _pos(node: Node) -> Pos:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Loader(yaml.SafeLoader):
    pass


def load_located(text: str, path: str) -> tuple[Any, list[Located]]:
    """Parse YAML text; return (tree, problems). Syntax errors come back located, not raised."""
    problems: list[Located] = []
    if len(text) > MAX_BYTES:
        return None, [Located(path, 1, 1, f"file too large for a runbook or parameter file "
                                          f"({len(text)} characters; the limit is {MAX_BYTES})")]
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        msg = " ".join(x for x in (e.context, e.problem) if x) or "invalid YAML"
        return None, [Located(path, line, col, f"YAML syntax: {msg}")]
    except yaml.YAMLError as e:  # pragma: no cover - reader errors (bad bytes)
        return None, [Located(path, 0, 0, f"YAML: {e}")]
    except RecursionError:
        return None, [Located(path, 1, 1, "YAML nested too deeply to be a runbook")]
    if node is None:
        return None, [Located(path, 1, 1, "the file is empty")]
    loader = _Loader("")
    built = 0

    def build(n: Node) -> Any:
        nonlocal built
        # Every value is counted as often as aliases repeat it: that is what it costs.
        built += 1
        if built > MAX_VALUES:
            raise _TooBig(_pos(n))
        if isinstance(n, MappingNode):
            out = LocDict()
            out.pos = _pos(n)
            out.key_pos, out.value_pos = {}, {}
            loader.flatten_mapping(n)
            for k_node, v_node in n.value:
                key = build(k_node)
                try:
                    hash(key)
                except TypeError:
                    problems.append(Located(path, *_pos(k_node), "a mapping key must be a scalar"))
                    continue
                if key in out:
                    problems.append(Located(path, *_pos(k_node), f"duplicate key {key!r}"))
                out[key] = build(v_node)
                out.key_pos[key] = _pos(k_node)
                out.value_pos[key] = _pos(v_node)
            return out
        if isinstance(n, SequenceNode):
            seq = LocList(build(i) for i in n.value)
            seq.pos = _pos(n)
            seq.item_pos = [_pos(i) for i in n.value]
            return seq
        try:
            return loader.construct_object(n, deep=True)
        except yaml.YAMLError as e:
            problems.append(Located(path, *_pos(n), f"YAML value: {e}"))
            return None

    try:
        return build(node), problems
    except _TooBig as e:
        return None, [Located(path, *e.pos, f"YAML expands to more than {MAX_VALUES} values "
                                            f"(aliases that repeat aliases); a runbook never "
                                            f"needs that many")]
    except RecursionError:  # a self-referencing alias (&a [*a]) or absurd nesting
        return None, [Located(path, 1, 1, "YAML nested too deeply (or an alias that "
                                          "contains itself)")]


def locate(tree: Any, loc: tuple[Any, ...] | list[Any], *, key: bool = False) -> Pos:
    """The position of the value at ``loc`` (a pydantic error path), or its nearest parent.

    With ``key=True`` the position of the last key itself (for "unknown key" errors).
    """
    node = tree
    best: Pos = getattr(tree, "pos", (1, 1))
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, LocDict):
            k = part
            if k not in node and k == "with_":
                k = "with"
            if k not in node:
                return best
            best = node.key_pos[k] if (last and key) else node.value_pos[k]
            node = node[k]
        elif isinstance(node, LocList) and isinstance(part, int):
            if not 0 <= part < len(node):
                return best
            best = node.item_pos[part]
            node = node[part]
        else:
            return best
    return best
