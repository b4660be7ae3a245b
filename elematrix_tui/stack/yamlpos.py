"""YAML with line numbers: a thin layer over PyYAML's composed node graph.

The doctor needs "file:line" for every finding, which ``yaml.safe_load`` throws away.
``load`` returns the plain Python value; ``Doc.line(*keys)`` gives the 1-based line of a
key (or item) reached through mapping keys and sequence indexes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml


@dataclass
class Doc:
    node: yaml.Node | None
    data: Any
    text: str

    def find(self, *path: str | int) -> yaml.Node | None:
        """The value node at ``path``, or None."""
        node = self.node
        for key in path:
            if isinstance(node, yaml.MappingNode) and isinstance(key, str):
                nxt = None
                for k, v in node.value:
                    if isinstance(k, yaml.ScalarNode) and k.value == key:
                        nxt = v
                node = nxt
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
                node = node.value[key] if 0 <= key < len(node.value) else None
            else:
                return None
            if node is None:
                return None
        return node

    def key_node(self, *path: str | int) -> yaml.Node | None:
        """The key node of the last path element (the line where ``key:`` is written)."""
        if not path:
            return self.node
        parent = self.find(*path[:-1])
        last = path[-1]
        if isinstance(parent, yaml.MappingNode):
            for k, _v in parent.value:
                if isinstance(k, yaml.ScalarNode) and k.value == last:
                    return k
        if isinstance(parent, yaml.SequenceNode) and isinstance(last, int):
            return parent.value[last] if 0 <= last < len(parent.value) else None
        return None

    def line(self, *path: str | int, default: int = 1) -> int:
        """1-based line of ``key:`` (or of the item) at path, else ``default``."""
        node = self.key_node(*path)
        return node.start_mark.line + 1 if node is not None else default

    def end_line(self, *path: str | int) -> int | None:
        """1-based last line of the value at path (inclusive), comments after it excluded."""
        node = self.find(*path)
        return last_line(node) if node is not None else None


def last_line(node: yaml.Node) -> int:
    """1-based line of the last character of a node's own text."""
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and not node.flow_style:
        items = node.value
        if items:
            last = items[-1][1] if isinstance(node, yaml.MappingNode) else items[-1]
            return last_line(last)
    end = node.end_mark
    # A mark at column 0 is the start of the next line (block scalars end that way).
    return end.line if end.column == 0 and end.line > node.start_mark.line else end.line + 1


def load(text: str) -> Doc:
    """Parse YAML text (one document). Raises yaml.YAMLError on bad YAML."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    data = yaml.safe_load(text) if node is not None else None
    return Doc(node, data, text)
