"""What counts as a placeholder or default secret (EM010).

The value itself is never echoed: a finding only says why the value is weak.
"""

from __future__ import annotations

import re

# Whole-value placeholders, and tell-tale words anywhere in a value.
_WHOLE = re.compile(
    r"^(secret|password|passw0rd|pass|dummy|default|test|synapse|postgres|admin|"
    r"x+|<[^>]*>|\$\{[^}]*\}|\$[A-Za-z_]\w*|\{\{.*\}\}|%\([^)]*\)s)$", re.I | re.S)
_CONTAINS = re.compile(
    r"(change[._ -]?me|change[._ -]?this|replace[._ -]?(me|this|with)|placeholder|"
    r"your[._ -]?(secret|password|key|token)|example|insert[._ -]|generate[._ -]?me)", re.I)
_MIN_LENGTH = 16


def weak_secret(value: object) -> str | None:
    """Why this secret value is unsafe (a phrase), or None when it looks random enough."""
    if value is None:
        return "empty"
    s = str(value).strip()
    if not s:
        return "empty"
    if _WHOLE.match(s) or _CONTAINS.search(s):
        return "a placeholder or default value"
    if len(s) < _MIN_LENGTH:
        return f"too short to be a generated secret ({len(s)} characters)"
    if len(set(s)) < 6:
        return "not random (too few distinct characters)"
    return None
