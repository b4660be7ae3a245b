"""Parameter values: parsing, validation and coercion by the runbook's declared types."""

from __future__ import annotations

import ipaddress
import re
import secrets as _secrets
import string
from typing import Any

from .model import Param

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class ParamValueError(ValueError):
    pass


def coerce(param: Param, raw: Any) -> Any:
    """Turn a raw value (from --set, a params file or the form) into the declared type.

    Raises ParamValueError with a message that says what is expected.
    """
    t = param.type
    if t == "int":
        if isinstance(raw, bool):
            raise ParamValueError("expected a whole number")
        try:
            value: Any = int(str(raw).strip())
        except ValueError:
            raise ParamValueError(f"expected a whole number, got {raw!r}") from None
        if param.min is not None and value < param.min:
            raise ParamValueError(f"must be at least {param.min}")
        if param.max is not None and value > param.max:
            raise ParamValueError(f"must be at most {param.max}")
        return value
    if t == "bool":
        if isinstance(raw, bool):
            return raw
        s = str(raw).strip().lower()
        if s in ("true", "yes", "1", "on"):
            return True
        if s in ("false", "no", "0", "off"):
            return False
        raise ParamValueError(f"expected true or false, got {raw!r}")
    if isinstance(raw, (dict, list)) or raw is None:
        raise ParamValueError(f"expected a {t} value, got {type(raw).__name__}")
    value = str(raw)
    if t == "choice":
        assert param.choices is not None
        if value not in param.choices:
            raise ParamValueError(f"must be one of {', '.join(param.choices)}; got {value!r}")
    elif t == "cidr":
        try:
            net = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            raise ParamValueError(
                f"expected a CIDR block such as 203.0.113.7/32, got {value!r}") from None
        if "/" not in value:
            raise ParamValueError(f"add the prefix length, e.g. {value}/32")
        value = str(net)
    elif t == "email":
        if not _EMAIL.match(value):
            raise ParamValueError(f"expected an e-mail address, got {value!r}")
    elif t == "hostname":
        host, _, port = value.partition(":")
        labels = host.rstrip(".").split(".")
        if not host or not all(_HOST_LABEL.match(lbl) for lbl in labels):
            raise ParamValueError(f"expected a host name (letters, digits, dots, -), got {value!r}")
        if port and (not port.isdigit() or not 0 < int(port) < 65536):
            raise ParamValueError(f"the port in {value!r} must be 1-65535")
    elif t == "secret":
        if not value:
            raise ParamValueError("a secret cannot be empty")
    if param.pattern and t != "secret" and not re.search(param.pattern, value):
        raise ParamValueError(f"must match {param.pattern}; got {value!r}")
    return value


def generate_secret(length: int) -> str:
    """A random secret of letters and digits (safe in YAML, URLs and shell commands)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(_secrets.choice(alphabet) for _ in range(length))
