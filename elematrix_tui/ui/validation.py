"""Inline checks of parameter values as the operator types them (pure Python).

They mirror the runbook's declared types so mistakes show next to the field, before
the engine sees them; the engine validates again when the run starts.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import string
from typing import Any

from ..engine.model import Param

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$",
    re.IGNORECASE)
TRUE = {"true", "yes", "y", "1", "on"}
FALSE = {"false", "no", "n", "0", "off"}


def check(param: Param, raw: str) -> str | None:
    """The problem with ``raw`` for ``param`` in operator words, or None when it is fine."""
    value = raw.strip()
    if not value:
        if param.type == "secret" and param.generate:
            return None  # the engine generates it
        if param.is_required:
            return "required"
        return None
    t = param.type
    if t == "int":
        try:
            n = int(value)
        except ValueError:
            return "a whole number"
        if param.min is not None and n < param.min:
            return f"at least {param.min}"
        if param.max is not None and n > param.max:
            return f"at most {param.max}"
    elif t == "bool":
        if value.lower() not in TRUE | FALSE:
            return "yes or no"
    elif t == "choice":
        if param.choices and value not in param.choices:
            return "one of " + ", ".join(param.choices)
    elif t == "cidr":
        if "/" not in value:
            return "a CIDR block with its prefix length, e.g. 203.0.113.7/32"
        try:
            ipaddress.ip_network(value, strict=True)
        except ValueError as e:
            return f"not a CIDR block: {e}"
    elif t == "email":
        if not EMAIL_RE.match(value):
            return "an e-mail address, e.g. ops@example.org"
    elif t == "hostname":
        if not HOSTNAME_RE.match(value):
            return "a host name, e.g. matrix.example.org"
    elif t == "secret":
        if param.generate and len(value) < 16:
            return "at least 16 characters (or leave empty to generate one)"
    if t in ("string", "hostname", "email", "secret") and param.min is not None \
            and len(value) < param.min:
        return f"at least {param.min} characters"
    if t in ("string", "hostname", "email", "secret") and param.max is not None \
            and len(value) > param.max:
        return f"at most {param.max} characters"
    if param.pattern and t != "secret" and not re.fullmatch(param.pattern, value):
        return f"must match {param.pattern}"
    return None


def convert(param: Param, raw: str) -> Any:
    """The typed value of a valid ``raw`` (None for an empty optional value)."""
    value = raw.strip()
    if not value:
        return None
    if param.type == "int":
        return int(value)
    if param.type == "bool":
        return value.lower() in TRUE
    return value


def generate_secret(length: int) -> str:
    """A random secret of ``length`` letters and digits (no shell or YAML specials)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))
