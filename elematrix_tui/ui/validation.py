"""Inline checks of parameter values as the operator types them.

The rules are the engine's (``engine.params.coerce``, the one authority the CLI and the
runner use too): this module only adds what a form needs around them. An empty field
means "no value given": the deployment's remembered value or the default applies, a
generated secret is generated, and a required parameter with none of those is refused.
"""

from __future__ import annotations

from typing import Any

from ..engine.model import Param
from ..engine.params import ParamValueError, coerce, parse_bool


def check(param: Param, raw: str) -> str | None:
    """The problem with ``raw`` for ``param`` in operator words, or None when it is fine."""
    if raw == "":
        if param.type == "secret" and param.generate:
            return None  # the engine generates it
        return "required" if param.is_required else None
    try:
        coerce(param, raw)
    except ParamValueError as e:
        return str(e)
    return None


def convert(param: Param, raw: str) -> Any:
    """The typed value of a valid ``raw`` (None for an empty field: no value given)."""
    if raw == "":
        return None
    return coerce(param, raw)


def is_on(raw: str) -> bool:
    """Whether a stored value shows as an 'on' switch (the engine's yes words)."""
    return parse_bool(raw) is True
