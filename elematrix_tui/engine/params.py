"""Parameter values: parsing, validation and coercion by the runbook's declared types."""

from __future__ import annotations

import ipaddress
import re
import secrets as _secrets
import string
from pathlib import Path
from typing import Any

from .errors import Located
from .model import Param, Runbook

_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


# One OpenSSH public key line: the key types ssh-keygen writes, base64, an optional comment.
_PUBLIC_KEY_LINE = re.compile(
    r"(ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com"
    r"|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?")
# A .pub file is one line; anything much larger is not one.
PUBLIC_KEY_MAX_BYTES = 16384


class ParamValueError(ValueError):
    pass


def public_key_problem(text: str) -> str | None:
    """Why ``text`` is not exactly one OpenSSH public key line (None when it is one).

    The one home of this rule: the parameter type ``ssh_public_key`` and the key-pair
    action both use it, so a private key is never read into a request to AWS.
    """
    if "PRIVATE KEY" in text:
        return ("it holds a private key (a 'PRIVATE KEY' block), which must never leave this "
                "machine; give the public key instead (usually the same path + '.pub')")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) != 1:
        return (f"it holds {len(lines)} non-empty lines; expected exactly one OpenSSH public "
                "key line ('ssh-ed25519 AAAA... comment')")
    if not _PUBLIC_KEY_LINE.fullmatch(lines[0].strip()):
        return "its line is not an OpenSSH public key ('ssh-ed25519 AAAA... comment')"
    return None


def read_public_key(path: Path) -> str:
    """The single public key line in ``path``; ParamValueError (naming the path) otherwise."""
    try:
        if not path.is_file():
            raise ParamValueError(f"{path} is not a regular file")
        if path.stat().st_size > PUBLIC_KEY_MAX_BYTES:
            raise ParamValueError(f"{path} is {path.stat().st_size} bytes: too large for a "
                                  "public key file")
        text = path.read_text(errors="replace")
    except OSError as e:
        raise ParamValueError(f"{path}: cannot read it: {e.strerror or e}") from None
    problem = public_key_problem(text)
    if problem:
        raise ParamValueError(f"{path}: {problem}; nothing was sent")
    return text.strip()


# The words a yes/no value may be, in any case (also ``y``/``n``: operators type them).
# The one home of truthiness for parameters and actions (aws_session's retarget_account).
TRUE_WORDS = frozenset({"true", "yes", "y", "1", "on"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "off"})
# Shortest secret a runbook may generate (model.Param.generate ge=16): a value typed for
# a generated secret must be as strong unless the runbook says ``min`` itself.
MIN_GENERATED_SECRET = 16
# Types whose ``min``/``max`` bound the value's length (for ``int`` they bound the number).
TEXT_TYPES = frozenset({"string", "email", "hostname", "secret"})
# Types of a fixed syntax that never holds spaces: surrounding whitespace is ignored.
_TRIMMED = frozenset({"int", "bool", "choice", "cidr", "email", "hostname"})


def parse_bool(raw: Any) -> bool | None:
    """True or False for a yes/no word (or a bool), None for anything else."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    return None


def truthy(raw: Any) -> bool:
    """Whether a parameter value says yes (``true``, ``yes``, ``y``, ``1``, ``on``, True)."""
    return parse_bool(raw) is True


def coerce(param: Param, raw: Any) -> Any:
    """Turn a raw value (from --set, a params file or the form) into the declared type.

    The one authority for parameter values: the CLI, the runner and the TUI's form all
    call it (docs/runbook-format.md, "Parameter rules", says what each type accepts and
    why). Raises ParamValueError with a message that says what is expected.
    """
    t = param.type
    if isinstance(raw, str) and t in _TRIMMED:
        raw = raw.strip()
    if t == "int":
        if isinstance(raw, bool):
            raise ParamValueError("expected a whole number")
        try:
            value: Any = int(str(raw))
        except ValueError:
            raise ParamValueError(f"expected a whole number, got {raw!r}") from None
        if param.min is not None and value < param.min:
            raise ParamValueError(f"must be at least {param.min}")
        if param.max is not None and value > param.max:
            raise ParamValueError(f"must be at most {param.max}")
        return value
    if t == "bool":
        flag = parse_bool(raw)
        if flag is None:
            raise ParamValueError(f"expected true or false (or yes/no, y/n, on/off, 1/0), "
                                  f"got {raw!r}")
        return flag
    if isinstance(raw, (dict, list)) or raw is None:
        raise ParamValueError(f"expected a {t} value, got {_kind(raw)}")
    value = str(raw)
    if t == "choice":
        assert param.choices is not None
        if value not in param.choices:
            raise ParamValueError(f"must be one of {', '.join(param.choices)}; got {value!r}")
    elif t == "cidr":
        value = _cidr(value)
    elif t == "email":
        if not _EMAIL.fullmatch(value):
            raise ParamValueError(f"expected an e-mail address such as ops@example.org, "
                                  f"got {value!r}")
    elif t == "hostname":
        _hostname(value)
    elif t == "secret":
        if not value:
            raise ParamValueError("a secret cannot be empty")
        shortest = param.min if param.min is not None else (
            MIN_GENERATED_SECRET if param.generate else None)
        if shortest is not None and len(value) < shortest:
            raise ParamValueError(f"must be at least {shortest} characters"
                                  + (" (or leave it out to generate one)"
                                     if param.generate else ""))
    elif t == "ssh_public_key":
        # Empty or a file that does not exist: the key-pair step generates a key. An
        # existing file must be exactly one public key line, checked before anything runs.
        path = Path(value).expanduser()
        if value and (path.exists() or path.is_symlink()):
            read_public_key(path)
    if t in TEXT_TYPES and t != "secret":
        if param.min is not None and len(value) < param.min:
            raise ParamValueError(f"must be at least {param.min} characters")
    if t in TEXT_TYPES and param.max is not None and len(value) > param.max:
        raise ParamValueError(f"must be at most {param.max} characters")
    # The whole value, never a prefix: re.search with '$' let "//\n" pass '^/[a-z/]+$'.
    if param.pattern and t != "secret" and not re.fullmatch(param.pattern, value):
        raise ParamValueError(f"must match {param.pattern}; got {value!r}")
    if t == "string" and value != value.strip():
        # A stray space or line break would become part of the value (a server_name is
        # permanent): refused, never silently kept or silently trimmed.
        raise ParamValueError(f"{value!r} has spaces or a line break around it; remove them")
    return value


def _cidr(value: str) -> str:
    """A CIDR block exactly as meant: its prefix length given, no host bits set.

    ``10.0.0.1/24`` is refused rather than widened to ``10.0.0.0/24``: an operator who
    typed their own address meant ``/32``, and a security rule must never silently open
    to a whole network.
    """
    if "/" not in value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ParamValueError(
                f"expected a CIDR block such as 203.0.113.7/32, got {value!r}") from None
        raise ParamValueError(f"add the prefix length, e.g. {value}/32")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ParamValueError(
            f"expected a CIDR block such as 203.0.113.7/32, got {value!r}") from None
    addr = value.partition("/")[0]
    if ipaddress.ip_address(addr) != net.network_address:
        host = f"{addr}/{net.max_prefixlen}"
        raise ParamValueError(f"{value} has host bits set: write {host} for that address "
                              f"only, or {net} for the whole network")
    return str(net)


def _hostname(value: str) -> None:
    """A DNS name with an optional port (``matrix.example.org``, ``example.org:8448``).

    A port is allowed because a Matrix server name may carry one. A trailing dot is not:
    ``example.org.`` would be another server name in every user id.
    """
    host, sep, port = value.partition(":")
    labels = host.split(".")
    if not host or len(host) > 253 or not all(_HOST_LABEL.fullmatch(lbl) for lbl in labels):
        raise ParamValueError(f"expected a host name such as matrix.example.org (letters, "
                              f"digits, '-' and dots, optionally ':port'), got {value!r}")
    if sep and (not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536):
        raise ParamValueError(f"the port in {value!r} must be 1-65535")


def unknown_params(rb: Runbook, given: Any) -> list[Located]:
    """One error per given name the runbook does not declare (run, resume and plan alike)."""
    return [Located("--set", 0, 0, f"unknown parameter {k!r} for runbook {rb.runbook!r}; it "
                                   f"takes: {', '.join(p.name for p in rb.params)}")
            for k in given if rb.param(k) is None]


def _kind(raw: Any) -> str:
    """Operator words for a value of the wrong shape (YAML gives mappings and lists)."""
    if raw is None:
        return "nothing (an empty value)"
    if isinstance(raw, dict):
        return "a mapping (key: value lines); quote the value or put it on one line"
    return "a list; give a single value"


def generate_secret(length: int) -> str:
    """A random secret of letters and digits (safe in YAML, URLs and shell commands)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(_secrets.choice(alphabet) for _ in range(length))
