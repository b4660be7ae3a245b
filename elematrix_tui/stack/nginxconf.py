"""A small nginx configuration parser that keeps line numbers.

Enough of nginx's grammar for linting: directives (words, quoted strings, variables)
ended by ``;`` or followed by a ``{ ... }`` block, ``#`` comments. No dependency on an
external parser, and never executes anything. ``include`` is not expanded: each file is
parsed on its own; the stack model follows includes to know which files nginx reads.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


class NginxSyntaxError(ValueError):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


@dataclass
class Directive:
    """``name args... ;`` or ``name args... { children }`` with its first and last line."""

    name: str
    args: list[str]
    line: int
    end_line: int
    file: Path
    block: list[Directive] | None = None
    parent: Directive | None = field(default=None, repr=False)

    def children(self, name: str | None = None) -> list[Directive]:
        return [d for d in (self.block or []) if name is None or d.name == name]

    def walk(self) -> Iterator[Directive]:
        for d in self.block or []:
            yield d
            yield from d.walk()


def _tokens(text: str) -> Iterator[tuple[str, int, bool]]:
    """Yield (token, line, quoted). Braces and ';' are their own tokens."""
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c in "{};":
            yield c, line, False
            i += 1
        elif c in "\"'":
            start_line = line
            j = i + 1
            buf = []
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n:
                    buf.append(text[j + 1])
                    j += 2
                    continue
                if text[j] == "\n":
                    line += 1
                buf.append(text[j])
                j += 1
            if j >= n:
                raise NginxSyntaxError("unterminated quoted string", start_line)
            yield "".join(buf), start_line, True
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in "{};":
                # A backslash escapes the next character (nginx: `\{` in a regex).
                if text[j] == "\\" and j + 1 < n:
                    j += 2
                    continue
                # ${var} inside a word: the brace belongs to the word.
                if text[j] == "$" and j + 1 < n and text[j + 1] == "{":
                    k = text.find("}", j)
                    j = k + 1 if k != -1 else n
                    continue
                j += 1
            yield text[i:j], line, False
            i = j


def parse(text: str, file: Path) -> Directive:
    """Parse a whole file into a root pseudo-directive whose block is the top level."""
    root = Directive("__root__", [], 1, 1, file, [])
    stack = [root]
    words: list[str] = []
    first_line = 0
    for tok, line, quoted in _tokens(text):
        if not quoted and tok == ";":
            if not words:
                raise NginxSyntaxError("unexpected ';'", line)
            d = Directive(words[0], words[1:], first_line, line, file, None, stack[-1])
            assert stack[-1].block is not None
            stack[-1].block.append(d)
            words = []
        elif not quoted and tok == "{":
            if not words:
                raise NginxSyntaxError("unexpected '{'", line)
            d = Directive(words[0], words[1:], first_line, line, file, [], stack[-1])
            assert stack[-1].block is not None
            stack[-1].block.append(d)
            stack.append(d)
            words = []
        elif not quoted and tok == "}":
            if words:
                raise NginxSyntaxError(f"directive {words[0]!r} is not terminated by ';'",
                                       first_line)
            if len(stack) == 1:
                raise NginxSyntaxError("unexpected '}'", line)
            stack.pop().end_line = line
        else:
            if not words:
                first_line = line
            words.append(tok)
    if words:
        raise NginxSyntaxError(f"directive {words[0]!r} is not terminated by ';'", first_line)
    if len(stack) > 1:
        raise NginxSyntaxError("unexpected end of file: a '{' is not closed", stack[-1].line)
    root.end_line = text.count("\n") + 1
    return root


def context_of(d: Directive) -> str:
    """The block a directive is written in (``http``, ``server``, ``location``...), or ""
    at the top level of its file (whose context is where nginx includes the file)."""
    p = d.parent
    return p.name if p is not None and p.name != "__root__" else ""


def looks_like_nginx(text: str) -> bool:
    """A cheap test for 'this file is an nginx config' (server/location/proxy_pass)."""
    return bool(re.search(r"^\s*(server|location|upstream|http)\b[^;{]*\{", text, re.M)
                or re.search(r"^\s*proxy_pass\s", text, re.M))


def servers(root: Directive) -> list[Directive]:
    """Every ``server`` block (top level, or inside ``http``), not ``upstream``'s servers."""
    return [d for d in root.walk() if d.name == "server" and d.block is not None]


def listen_ports(server: Directive) -> list[tuple[int, bool, Directive | None]]:
    """(port, ssl, directive) for each ``listen``; nginx's default is port 80."""
    out: list[tuple[int, bool, Directive | None]] = []
    for d in server.children("listen"):
        if not d.args:
            continue
        addr = d.args[0]
        m = re.search(r"(?:^|:)(\d+)$", addr)
        port = int(m.group(1)) if m else 80
        out.append((port, "ssl" in d.args[1:] or "quic" in d.args[1:], d))
    if not out:
        out.append((80, False, None))
    return out


def is_tls_server(server: Directive) -> bool:
    return any(ssl or port == 443 for port, ssl, _ in listen_ports(server))


def location_match(server: Directive, uri: str) -> Directive | None:
    """The location of ``server`` nginx picks for ``uri`` (top-level locations only).

    The real algorithm: exact ``=`` wins; else the longest prefix; if that prefix is
    ``^~`` it wins; else the first matching regex in file order; else the longest prefix.
    """
    exact: Directive | None = None
    best: tuple[int, Directive, bool] | None = None
    regexes: list[tuple[re.Pattern[str], Directive]] = []
    for loc in server.children("location"):
        if not loc.args:
            continue
        if len(loc.args) >= 2:
            mod, pat = loc.args[0], loc.args[1]
        else:
            mod, pat = "", loc.args[0]
        if mod == "=":
            if uri == pat:
                exact = loc
        elif mod in ("~", "~*"):
            try:
                regexes.append((re.compile(pat, re.I if mod == "~*" else 0), loc))
            except re.error:
                continue
        elif mod in ("", "^~") and not pat.startswith("@") and uri.startswith(pat):
            if best is None or len(pat) > best[0]:
                best = (len(pat), loc, mod == "^~")
    if exact is not None:
        return exact
    if best is not None and best[2]:
        return best[1]
    for rx, loc in regexes:
        if rx.search(uri):
            return loc
    return best[1] if best else None


def effective(d: Directive | None, name: str) -> Directive | None:
    """The directive ``name`` in force at ``d``: its own, else inherited from a parent."""
    while d is not None:
        found = d.children(name)
        if found:
            return found[-1]
        d = d.parent
    return None


_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(value: str) -> int | None:
    """nginx sizes: ``1m``, ``50M``, ``512k``, ``1024``; None if unreadable."""
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", value.strip())
    if not m:
        return None
    return int(m.group(1)) * _UNITS[m.group(2).lower()]
