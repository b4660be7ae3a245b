"""What counts as a placeholder or default secret (EM010), and which values are secrets.

The value itself is never echoed: a finding only says why the value is weak. A value that
is a reference filled in at deploy time (``${VAR}`` rendered by envsubst or compose from
the deploy-time environment) is *not checked*: it is never called a placeholder.
"""

from __future__ import annotations

import re

# Whole-value placeholders (by shape), and tell-tale wording anywhere in a value.
_WHOLE = re.compile(
    r"^(secret|password|passw0rd|pass|dummy|default|test|synapse|postgres|admin|root|"
    r"x+|\*+|\.\.\.|<[^>]*>|\[[^\]]*\]|__[A-Za-z0-9_]+__|\{\{.*\}\}|%\([^)]*\)s|"
    r"@[A-Za-z0-9_]+@)$", re.I | re.S)
_CONTAINS = re.compile(
    r"(change[._ -]?me|change[._ -]?this|change[._ -]?it|replace[._ -]?(me|this|with)|"
    r"placeholder|your[._ -]?\w*[._ -]?(secret|password|passwd|key|token)|example|"
    r"insert[._ -]|generate[._ -]?(me|with|a|one)|strong[._ -]?pass|fill[._ -]?(me|in)|"
    r"put[._ -]?your|to[._ -]?be[._ -]?(set|changed)|_here$)", re.I)
# A value that is only a reference to a variable: filled at deploy time, not checkable.
_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?:[:?+-][^}]*)?\}$|^\$[A-Za-z_]\w*$")
_MIN_LENGTH = 16
# Names of keys/variables that hold secrets (public keys and ids are not secrets).
SECRET_NAME = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|private[_-]?key|_key$|^key$|credentials?)",
    re.I)
_NOT_SECRET_NAME = re.compile(r"(public|_id$|_file$|_path$|_user(name)?$|_url$|_email$|"
                              r"^key_?(id|name)$|_length$|_lifetime$|_expiry|_required$|"
                              r"_enabled?$|_mode$|_type$)", re.I)


def is_secret_name(name: str) -> bool:
    """True for a key/variable name that holds a secret (POSTGRES_PASSWORD, form_secret)."""
    return bool(SECRET_NAME.search(name)) and not _NOT_SECRET_NAME.search(name)


def is_reference(value: object) -> bool:
    """A ``${VAR}`` / ``$VAR`` reference, supplied at deploy time."""
    return isinstance(value, str) and bool(_REFERENCE.match(value.strip()))


def weak_secret(value: object) -> str | None:
    """Why this secret value is unsafe (a phrase), or None when it looks random enough
    (or is a deploy-time reference, which cannot be checked here)."""
    if value is None:
        return "empty"
    s = str(value).strip()
    if not s:
        return "empty"
    if is_reference(s):
        return None
    if _WHOLE.match(s) or _CONTAINS.search(s):
        return "a placeholder"
    if len(s) < _MIN_LENGTH:
        return f"too short to be a generated secret ({len(s)} characters)"
    if len(set(s)) < 6:
        return "not random (too few distinct characters)"
    return None
