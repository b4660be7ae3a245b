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

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


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
        raise ParamValueError(f"expected a {t} value, got {_kind(raw)}")
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
        if not _EMAIL.fullmatch(value):
            raise ParamValueError(f"expected an e-mail address, got {value!r}")
    elif t == "hostname":
        host, _, port = value.partition(":")
        labels = host.rstrip(".").split(".")
        if not host or not all(_HOST_LABEL.fullmatch(lbl) for lbl in labels):
            raise ParamValueError(f"expected a host name (letters, digits, dots, -), got {value!r}")
        if port and (not port.isdigit() or not 0 < int(port) < 65536):
            raise ParamValueError(f"the port in {value!r} must be 1-65535")
    elif t == "secret":
        if not value:
            raise ParamValueError("a secret cannot be empty")
    elif t == "ssh_public_key":
        # Empty or a file that does not exist: the key-pair step generates a key. An
        # existing file must be exactly one public key line, checked before anything runs.
        path = Path(value).expanduser()
        if value and (path.exists() or path.is_symlink()):
            read_public_key(path)
    # The whole value, never a prefix: re.search with '$' let "//\n" pass '^/[a-z/]+$'.
    if param.pattern and t != "secret" and not re.fullmatch(param.pattern, value):
        raise ParamValueError(f"must match {param.pattern}; got {value!r}")
    return value


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
