"""Readers for the reverse proxies that are not nginx: Traefik labels and static config,
and Caddyfiles. Only what the doctor needs: which paths reach Synapse, and TLS.

Upstream behaviour copied:
- Traefik v2/v3 (doc.traefik.io, "Routers" and "Docker provider"): a router's ``rule``
  without a ``Path``/``PathPrefix`` matcher takes every path of its host; a router with no
  ``service`` label goes to the container that carries it; ``tls=true`` or
  ``tls.certresolver`` make it serve TLS; an entry point with ``http.tls`` serves TLS, and
  ``http.redirections.entryPoint.scheme: https`` redirects to it.
- Caddy v2 (caddyserver.com/docs/automatic-https, /caddyfile/directives): a site address
  that is not ``http://...`` (or a bare port other than 443) gets automatic HTTPS and an
  HTTP->HTTPS redirect; ``respond``/``error`` run before ``reverse_proxy`` in the default
  directive order; ``handle`` blocks are exclusive, the most specific path matcher wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .model import CaddyFile, Service, Stack

_PATH_MATCHER = re.compile(r"(!?)\s*(PathPrefix|Path|PathRegexp)\(([^)]*)\)")
_BACKTICKED = re.compile(r"[`\"]([^`\"]*)[`\"]")


@dataclass
class Label:
    key: str
    value: str
    line: int


def labels(svc: Service) -> list[Label]:
    """A service's labels, list or mapping form, with their lines."""
    raw = svc.data.get("labels")
    out: list[Label] = []
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            k, _, v = str(item).partition("=")
            out.append(Label(k.strip(), v.strip(), svc.line("labels", i)))
    elif isinstance(raw, dict):
        for k, v in raw.items():
            out.append(Label(str(k), "" if v is None else str(v), svc.line("labels", str(k))))
    return out


@dataclass
class Router:
    name: str
    owner: Service
    rule: Label | None = None
    service: str | None = None
    tls: Label | None = None
    redirect_https: Label | None = None


def routers(stack: Stack) -> list[Router]:
    """Every Traefik HTTP router declared in labels across the compose files."""
    out: dict[str, Router] = {}
    middlewares_https: dict[str, Label] = {}
    router_mw: dict[str, list[str]] = {}
    for cf in stack.compose:
        for svc in cf.services:
            for lb in labels(svc):
                parts = lb.key.split(".")
                if len(parts) >= 5 and parts[:3] == ["traefik", "http", "routers"]:
                    r = out.setdefault(parts[3], Router(parts[3], svc))
                    attr = ".".join(parts[4:])
                    if attr == "rule":
                        r.rule = lb
                    elif attr == "service":
                        r.service = lb.value
                    elif (attr == "tls" and lb.value.lower() == "true") or attr.startswith("tls."):
                        r.tls = r.tls or lb
                    elif attr == "middlewares":
                        router_mw[parts[3]] = [m.strip().split("@")[0]
                                               for m in lb.value.split(",")]
                elif (len(parts) >= 6 and parts[:3] == ["traefik", "http", "middlewares"]
                      and parts[4].lower() == "redirectscheme" and parts[5] == "scheme"
                      and lb.value.lower() == "https"):
                    middlewares_https[parts[3]] = lb
    for name, mws in router_mw.items():
        for m in mws:
            if m in middlewares_https and name in out:
                out[name].redirect_https = middlewares_https[m]
    return list(out.values())


def router_target(stack: Stack, r: Router) -> tuple[Service | None, int | None]:
    """The container (and port) a router sends to."""
    target_name = r.service
    for cf in stack.compose:
        for svc in cf.services:
            for lb in labels(svc):
                parts = lb.key.split(".")
                if (len(parts) >= 7 and parts[:3] == ["traefik", "http", "services"]
                        and parts[4:7] == ["loadbalancer", "server", "port"]
                        and (parts[3] == target_name
                             or (target_name is None and svc is r.owner))):
                    port = int(lb.value) if lb.value.isdigit() else None
                    return svc, port
    if target_name is None or target_name.endswith("@internal"):
        return (r.owner, None) if target_name is None else (None, None)
    return r.owner, None


def rule_paths(rule: str) -> tuple[list[str], list[str], bool]:
    """(positive path prefixes, negated prefixes, has a regexp) of a Traefik rule."""
    pos: list[str] = []
    neg: list[str] = []
    regexp = False
    for m in _PATH_MATCHER.finditer(rule):
        args = _BACKTICKED.findall(m.group(3))
        if m.group(2) == "PathRegexp":
            regexp = True
            continue
        (neg if m.group(1) else pos).extend(args)
    return pos, neg, regexp


def rule_takes(rule: str, path: str) -> bool:
    """Whether a Traefik rule's path matchers accept ``path`` (host matchers ignored)."""
    pos, neg, regexp = rule_paths(rule)
    if any(path.startswith(n) for n in neg):
        return False
    if not pos:
        return not regexp
    return any(path.startswith(p) for p in pos)


@dataclass
class Flag:
    key: str
    value: str
    line: int


def traefik_flags(svc: Service) -> list[Flag]:
    """Traefik static configuration given as ``command`` flags (``--a.b.c=value``), keys
    lowercased (Traefik's flags are case-insensitive)."""
    cmd = svc.data.get("command")
    items = cmd if isinstance(cmd, list) else str(cmd or "").split()
    out: list[Flag] = []
    for i, item in enumerate(items):
        s = str(item)
        if not s.startswith("--"):
            continue
        key, _, value = s[2:].partition("=")
        line = svc.line("command", i) if isinstance(cmd, list) else svc.line("command")
        out.append(Flag(key.lower(), value or "true", line))
    return out


def flags_tls(flags: list[Flag]) -> tuple[list[Flag], list[Flag]]:
    """(flags making an entry point serve TLS, flags redirecting an entry point to https)."""
    tls = [f for f in flags if re.fullmatch(r"entrypoints\.[^.]+\.http\.tls(\..*)?", f.key)
           and f.value.lower() != "false"]
    red = [f for f in flags if re.fullmatch(
        r"entrypoints\.[^.]+\.http\.redirections\.entrypoint\.(scheme|to)", f.key)
        and (f.key.endswith(".to") or f.value.lower() == "https")]
    return tls, red


def static_tls(doc_data: Any) -> tuple[list[str], list[str]]:
    """(entry points serving TLS, entry points redirecting to https) of a static config."""
    tls, redirect = [], []
    eps = doc_data.get("entryPoints") if isinstance(doc_data, dict) else None
    for name, ep in (eps.items() if isinstance(eps, dict) else []):
        http = ep.get("http") if isinstance(ep, dict) else None
        if not isinstance(http, dict):
            continue
        if http.get("tls") is not None:
            tls.append(str(name))
        red = http.get("redirections")
        ent = red.get("entryPoint") if isinstance(red, dict) else None
        if isinstance(ent, dict) and str(ent.get("scheme", "https")).lower() == "https":
            redirect.append(str(name))
    return tls, redirect


# ---------------------------------------------------------------- Caddyfile


@dataclass
class CaddyDirective:
    name: str
    args: list[str]
    line: int
    block: list[CaddyDirective] = field(default_factory=list)


@dataclass
class CaddySite:
    addresses: list[str]
    line: int
    directives: list[CaddyDirective]


class CaddySyntaxError(ValueError):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


def _caddy_tokens(text: str) -> list[tuple[list[str], int, bool, bool]]:
    """Lines as (words, line, opens a block, closes a block)."""
    out = []
    for i, raw in enumerate(text.splitlines(), 1):
        s = raw.split(" #", 1)[0].strip()
        if s.startswith("#"):
            s = ""
        if not s:
            continue
        words = re.findall(r'"[^"]*"|`[^`]*`|\S+', s)
        opens = bool(words) and words[-1] == "{"
        if opens:
            words = words[:-1]
        closes = words == ["}"]
        out.append(([] if closes else words, i, opens, closes))
    return out


def parse_caddyfile(text: str) -> list[CaddySite]:
    """Site blocks of a Caddyfile (global options and snippets are skipped)."""
    sites: list[CaddySite] = []
    stack: list[list[CaddyDirective]] = []
    current: CaddySite | None = None
    skip_depth = 0
    for words, line, opens, closes in _caddy_tokens(text):
        if closes:
            if skip_depth:
                skip_depth -= 1
                continue
            if not stack:
                raise CaddySyntaxError("unexpected '}'", line)
            stack.pop()
            if not stack:
                current = None
            continue
        if skip_depth:
            skip_depth += 1 if opens else 0
            continue
        if not stack:
            if not words or words[0].startswith("("):
                if opens:
                    skip_depth = 1  # global options block or a snippet
                continue
            addrs = [a.rstrip(",") for a in words]
            current = CaddySite(addrs, line, [])
            sites.append(current)
            if opens:
                stack.append(current.directives)
            continue
        d = CaddyDirective(words[0], words[1:], line) if words else None
        if d is not None:
            stack[-1].append(d)
        if opens:
            stack.append(d.block if d is not None else [])
    if stack or skip_depth:
        raise CaddySyntaxError("a '{' is not closed", current.line if current else 1)
    return sites


def caddy_auto_https(site: CaddySite) -> bool:
    """Caddy serves (and redirects to) HTTPS for this site on its own."""
    for a in site.addresses:
        a = a.strip('"')
        if a.startswith("http://"):
            continue
        if a.startswith(":") and a != ":443":
            continue
        return True
    return False


def caddy_route(site: CaddySite, path: str) -> CaddyDirective | None:
    """What handles ``path`` in a site: a ``respond``/``error``/``abort`` (denied) or the
    ``reverse_proxy`` that takes it, following handle-block specificity."""
    def matches(m: str | None) -> bool:
        if m is None:
            return True
        if m.startswith("@"):
            return False  # a named matcher: not evaluated (conservatively: no match)
        return path.startswith(m[:-1]) if m.endswith("*") else path == m

    def pick(ds: list[CaddyDirective]) -> CaddyDirective | None:
        best_handle: tuple[int, CaddyDirective] | None = None
        proxy: CaddyDirective | None = None
        for d in ds:
            m = d.args[0] if d.args and d.args[0].startswith(("/", "@")) else None
            if d.name in ("respond", "error", "abort") and matches(m):
                return d
            if d.name in ("handle", "handle_path", "route") and matches(m):
                spec = len(m) if m else 0
                if best_handle is None or spec > best_handle[0]:
                    best_handle = (spec, d)
            if d.name == "reverse_proxy" and matches(m) and proxy is None:
                proxy = d
        if best_handle is not None:
            inner = pick(best_handle[1].block)
            if inner is not None:
                return inner
        return proxy

    return pick(site.directives)


def caddy_sites(cf: CaddyFile) -> list[CaddySite] | CaddySyntaxError:
    try:
        return parse_caddyfile(cf.text)
    except CaddySyntaxError as e:
        return e
