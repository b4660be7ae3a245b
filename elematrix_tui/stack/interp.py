"""Compose variable interpolation and ``.env`` files, as Docker Compose v2 does them.

Upstream behaviour copied (compose-spec ``interpolation.md``, compose-go ``template``):
``$$`` is a literal ``$``; ``${VAR}`` and ``$VAR`` take the value; ``${VAR:-d}`` gives ``d``
when VAR is unset *or empty*, ``${VAR-d}`` only when unset; ``${VAR:?msg}`` / ``${VAR?msg}``
make compose refuse to run without VAR; ``${VAR:+x}`` / ``${VAR+x}`` give ``x`` when VAR is
set. Defaults may themselves hold ``${...}``. A variable the ``.env`` does not define is
supplied at deploy time (the shell environment): the doctor says "not checked" for it and
never calls it a placeholder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Bounds: a hostile file must not make the resolver recurse or loop without end.
_MAX_DEPTH = 8


@dataclass
class Resolved:
    """An interpolated value: ``value`` is None when a variable is supplied at deploy time."""

    value: str | None
    deploy_time: list[str] = field(default_factory=list)
    used: list[str] = field(default_factory=list)


def interpolate(text: str, env: dict[str, str], _depth: int = 0) -> Resolved:
    """Resolve every compose interpolation form in ``text`` against ``env``."""
    out: list[str] = []
    deploy: list[str] = []
    used: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "$" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "{":
            end = _closing(text, i + 2)
            if end < 0:  # compose refuses it too; keep the text as written
                out.append(text[i:])
                break
            body = text[i + 2:end]
            i = end + 1
            m = _NAME.match(body)
            if not m:
                out.append("${" + body + "}")
                continue
            name, rest = m.group(0), body[m.end():]
            used.append(name)
            op, arg = _operator(rest)
            val = env.get(name)
            if op in (":-", "-"):
                if val is None or (op == ":-" and val == ""):
                    sub = _sub(arg, env, _depth)
                    deploy += sub.deploy_time
                    used += sub.used
                    out.append(sub.value or "")
                    continue
            elif op in (":+", "+"):
                if val is not None and (op == "+" or val != ""):
                    sub = _sub(arg, env, _depth)
                    deploy += sub.deploy_time
                    used += sub.used
                    out.append(sub.value or "")
                continue
            if val is None:
                deploy.append(name)
                continue
            out.append(val)
            continue
        m = _NAME.match(text, i + 1)
        if m:
            name = m.group(0)
            used.append(name)
            if name in env:
                out.append(env[name])
            else:
                deploy.append(name)
            i = m.end()
            continue
        out.append(c)
        i += 1
    return Resolved(None if deploy else "".join(out), deploy, used)


def _sub(text: str, env: dict[str, str], depth: int) -> Resolved:
    if depth >= _MAX_DEPTH:
        return Resolved(text)
    return interpolate(text, env, depth + 1)


def _closing(text: str, start: int) -> int:
    depth = 1
    for j in range(start, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return -1


def _operator(rest: str) -> tuple[str, str]:
    for op in (":-", ":?", ":+", "-", "?", "+"):
        if rest.startswith(op):
            return op, rest[len(op):]
    return "", rest


@dataclass
class EnvEntry:
    value: str
    line: int
    quoted: bool


def read_dotenv(path: Path) -> dict[str, EnvEntry]:
    """KEY=VALUE lines of an env file (compose's dotenv rules), with their line numbers.

    Unquoted values end at `` #`` (an inline comment); single quotes are literal; double
    quotes and unquoted values are interpolated against the keys above them.
    """
    out: dict[str, EnvEntry] = {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError):
        return out
    return parse_dotenv(text)


def parse_dotenv(text: str) -> dict[str, EnvEntry]:
    """The same as :func:`read_dotenv` over text already read."""
    out: dict[str, EnvEntry] = {}
    for i, ln in enumerate(text.splitlines(), 1):
        s = ln.strip()
        if not s or s.startswith("#") or "=" not in s:
            continue
        k, v = s.split("=", 1)
        k = k.strip().removeprefix("export ").strip()
        if not _NAME.fullmatch(k):
            continue
        v = v.strip()
        quoted = False
        if len(v) >= 2 and v[0] in "\"'" and v[-1] == v[0]:
            quoted = True
            raw, literal = v[1:-1], v[0] == "'"
        else:
            raw, literal = re.split(r"\s+#", v, maxsplit=1)[0].rstrip(), False
        if not literal and "$" in raw:
            r = interpolate(raw, {kk: e.value for kk, e in out.items()})
            raw = r.value if r.value is not None else raw
        out[k] = EnvEntry(raw, i, quoted)
    return out
