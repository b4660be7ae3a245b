"""Rules over the nginx configuration: EM001, EM002, EM004, EM005, EM013, EM014, EM020, EM025.

EM001/EM002/EM004 are for stacks meant to be HTTP-only: on a stack that serves TLS on
purpose (``stack.tls_intent``, see ``intent.py``) they stay silent and EM019 speaks once.
"""

from __future__ import annotations

import re

from ..findings import Finding
from ..model import NginxFile, Stack
from ..nginxconf import (
    Directive,
    effective,
    is_tls_server,
    listen_ports,
    location_match,
    parse_size,
    servers,
)
from . import synapse_rules

_REDIRECT_CODES = {"301", "302", "303", "307", "308"}
_TLS_INCLUDE = re.compile(r"(ssl|tls|letsencrypt|certbot)", re.I)
_PROXY_URL = re.compile(r"^(https?)://([^/]+)(/.*)?$")
# ``proxy_pass $name;``: the whole target is one variable (set with ``set $name URL;``).
_VAR = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
_IP_HOST = re.compile(r"^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\])(:\d+)?$")
ADMIN_PROBE = "/_synapse/admin/v1/users/@probe:x"
UPLOAD_PROBE = "/_matrix/media/v3/upload"


def _upstreams(stack: Stack) -> dict[str, list[str]]:
    """upstream name -> its server addresses, across every nginx file."""
    out: dict[str, list[str]] = {}
    for nf in stack.nginx:
        for d in nf.root.walk():
            if d.name == "upstream" and d.args and d.block is not None:
                out[d.args[0]] = [s.args[0] for s in d.children("server") if s.args]
    return out


def set_directive(at: Directive, name: str) -> Directive | None:
    """The ``set $name ...;`` in force where ``at`` is (its block, else a parent's)."""
    d: Directive | None = at
    while d is not None:
        found = [s for s in d.children("set") if len(s.args) >= 2 and s.args[0] == f"${name}"]
        if found:
            return found[-1]
        d = d.parent
    return None


def proxy_target(pp: Directive) -> str:
    """What a proxy_pass sends to: its argument, or the URL a ``set`` gives its variable
    (``set $synapse http://synapse:8008; proxy_pass $synapse;``, the shipped form)."""
    arg = pp.args[0] if pp.args else ""
    m = _VAR.match(arg)
    if m and pp.parent is not None:
        found = set_directive(pp.parent, m.group(1))
        if found is not None:
            return found.args[1]
    return arg


def proxies_to_synapse(loc: Directive, upstreams: dict[str, list[str]],
                       synapse_names: frozenset[str] = frozenset()) -> Directive | None:
    """The proxy_pass of this location if it goes to Synapse: a name the compose project
    gives a Synapse container, port 8008, or (without compose) a name saying so."""
    for pp in loc.children("proxy_pass"):
        if not pp.args:
            continue
        url = pp.args[0]
        if url.startswith("$"):  # `set $u http://synapse:8008; proxy_pass $u;`
            url = _set_value(loc, url.split("/", 1)[0]) or url
        m = _PROXY_URL.match(url)
        host = m.group(2) if m else url
        if host.startswith("$"):  # `proxy_pass http://$syn:8008;` with `set $syn synapse;`
            var, _, port = host.partition(":")
            value = _set_value(loc, var)
            host = f"{value}:{port}" if value and port else value or host
        targets = [host, *upstreams.get(host, [])]
        for t in targets:
            name = t.rsplit(":", 1)[0] if t.count(":") == 1 else t
            if name in synapse_names or t.endswith(":8008"):
                return pp
            if not synapse_names and ("synapse" in t.lower() or "matrix" in t.lower()):
                return pp
    return None


def _set_value(loc: Directive, var: str) -> str | None:
    """The value a ``set $var value;`` gives ``var`` where ``loc`` is (or above it)."""
    d: Directive | None = loc
    while d is not None:
        for s in d.children("set"):
            if len(s.args) >= 2 and s.args[0] == var:
                return s.args[1]
        d = d.parent
    return None


def synapse_names(stack: Stack) -> frozenset[str]:
    """Every name a Synapse container (main or worker) answers to in the compose project."""
    from .runtime import compose_names

    out: set[str] = set()
    for cf in stack.compose:
        for name, svc in compose_names(cf).items():
            if svc.role in ("synapse", "synapse-worker"):
                out.add(name)
    return frozenset(out)


# Where nginx accepts a directive (nginx.org/en/docs, each directive's "Context:" line);
# only directives people misplace. Elsewhere nginx stops: '"x" directive is not allowed
# here' (checked with nginx 1.22 `nginx -t`).
_CONTEXTS: dict[str, frozenset[str]] = {
    "set": frozenset({"server", "location", "if"}),
    "proxy_pass": frozenset({"location", "if", "limit_except"}),
    "location": frozenset({"server", "location"}),
    "listen": frozenset({"server"}),
    "server_name": frozenset({"server"}),
    "upstream": frozenset({"http"}),
    "return": frozenset({"server", "location", "if"}),
    "rewrite": frozenset({"server", "location", "if"}),
    "http": frozenset({"main"}),
    "events": frozenset({"main"}),
    "add_header": frozenset({"http", "server", "location", "if"}),
    "client_max_body_size": frozenset({"http", "server", "location"}),
    "ssl_certificate": frozenset({"http", "server"}),
}


def _context_errors(stack: Stack, nf: NginxFile) -> list[Finding]:
    out: list[Finding] = []
    if nf.context in ("stream", "mail"):
        return out

    def visit(d: Directive, ctx: str) -> None:
        for c in d.block or []:
            allowed = _CONTEXTS.get(c.name)
            if c.name == "server" and ctx == "upstream":
                pass
            elif allowed is not None and ctx not in allowed and ctx not in ("stream", "mail"):
                out.append(_f(stack, nf, "EM020", "error", c.line,
                              f"`{c.name}` is not allowed in the {ctx} context",
                              f"nginx refuses the whole configuration ('\"{c.name}\" "
                              "directive is not allowed here') and does not start",
                              f"move `{c.name}` into a {' or '.join(sorted(allowed))} block"))
            if c.block is not None:
                visit(c, c.name)

    visit(nf.root, nf.context)
    return out


def _denied(loc: Directive) -> bool:
    for d in loc.block or []:
        if d.name == "deny" and d.args == ["all"]:
            return True
        if d.name == "return" and d.args and d.args[0].isdigit() and int(d.args[0]) >= 400:
            return True
        if d.name == "internal":
            return True
    return False


def _f(stack: Stack, nf: NginxFile, rule: str, sev: str, line: int, title: str, why: str,
       fix: str) -> Finding:
    return Finding(rule, sev, stack.rel(nf.path), line, title, why, fix)  # type: ignore[arg-type]


def check(stack: Stack) -> list[Finding]:
    """Every nginx rule over every nginx file of the stack."""
    out: list[Finding] = []
    upstreams = _upstreams(stack)
    hs = stack.homeserver
    max_upload = synapse_rules.max_upload_bytes(hs)
    syn_names = synapse_names(stack)
    for nf in stack.nginx:
        out.extend(_context_errors(stack, nf))
        srvs = servers(nf.root)
        for srv in srvs:
            tls = is_tls_server(srv)
            if stack.tls_intent:
                continue  # built for TLS on purpose: EM019 says it once
            if tls:
                lst = next((d for _p, ssl, d in listen_ports(srv) if d is not None
                            and (ssl or _p == 443)), srv)
                out.append(_f(stack, nf, "EM002", "error", lst.line,
                              "TLS server block on an HTTP-only host",
                              "this server listens with TLS and needs certificates that an "
                              "EC2 host name cannot get; nginx fails to start without them",
                              "replace it with one plain `listen 80;` server block (doctor "
                              "--fix moves its locations into it)"))
            for d in srv.walk():
                if not tls and d.name == "return" and _is_https_redirect(d.args):
                    out.append(_f(stack, nf, "EM001", "error", d.line,
                                  "redirect to https on an HTTP-only host",
                                  "nothing listens on 443: clients follow the redirect and "
                                  "fail to connect (or loop when TLS is offloaded)",
                                  "remove the redirect and serve the locations on :80"))
                if not tls and d.name == "rewrite" and any(a.startswith("https://")
                                                           for a in d.args[1:2]):
                    out.append(_f(stack, nf, "EM001", "error", d.line,
                                  "rewrite to https on an HTTP-only host",
                                  "nothing listens on 443: every rewritten request fails",
                                  "remove the rewrite"))
        for d in nf.root.walk():
            in_tls = _inside_tls_server(d) or stack.tls_intent
            if not in_tls and (d.name.startswith("ssl_") or (d.name == "ssl" and d.args)):
                out.append(_f(stack, nf, "EM002", "error", d.line,
                              f"TLS directive `{d.name}` on an HTTP-only host",
                              "it refers to certificates and TLS settings that do not exist "
                              "on this host; nginx refuses missing certificate files",
                              "delete the directive"))
            if (not in_tls and d.name == "include" and d.args
                    and _TLS_INCLUDE.search(d.args[0])):
                out.append(_f(stack, nf, "EM002", "error", d.line,
                              f"TLS include `{d.args[0]}` on an HTTP-only host",
                              "the included file (certbot's options-ssl-nginx.conf or TLS "
                              "params) is absent on the instance: nginx fails to start",
                              "delete the include"))
            if (not stack.tls_intent and d.name in ("add_header", "more_set_headers") and d.args
                    and "strict-transport-security" in " ".join(d.args).lower()):
                out.append(_f(stack, nf, "EM004", "error", d.line,
                              "HSTS header (Strict-Transport-Security)",
                              "browsers that ever see it refuse plain HTTP to this host for "
                              "its max-age (often 2 years): they are locked out",
                              "delete the header on an HTTP-only host"))
            if d.name == "proxy_pass" and d.args:
                out.extend(_needs_resolver(stack, nf, d, upstreams))
            if d.name == "location" and d.args and _is_matrix_location(d.args[-1]):
                for pp in d.children("proxy_pass"):
                    target = proxy_target(pp) if pp.args else ""
                    m = _PROXY_URL.match(target)
                    # A URI built from variables ($request_uri) is the operator's choice;
                    # a fixed URI part, also one inside a set variable, rewrites paths.
                    if m and m.group(3) is not None and "$" not in target:
                        out.append(_f(stack, nf, "EM005", "error", pp.line,
                                      f"proxy_pass with a URI part ({m.group(3)!r}) under "
                                      f"{d.args[-1]}",
                                      "nginx then rewrites and normalises the request URI "
                                      "(a trailing '/' strips the prefix: everything 404s; "
                                      "a path decodes %2F and merges //): signed requests "
                                      "and room aliases break",
                                      f"use `proxy_pass {m.group(1)}://{m.group(2)};` with "
                                      "no path at all"))
        for srv in srvs:
            out.extend(_admin_and_body(stack, nf, srv, upstreams, max_upload, syn_names))
    return out


def _needs_resolver(stack: Stack, nf: NginxFile, pp: Directive,
                    upstreams: dict[str, list[str]]) -> list[Finding]:
    """EM025: a proxy_pass with variables resolves its host per request, through
    ``resolver`` only (nginx: "no resolver defined to resolve <name>", a 502 each time)."""
    if "$" not in pp.args[0]:
        return []
    m = _PROXY_URL.match(proxy_target(pp))
    if m is None or "$" in m.group(2):
        return []
    host = m.group(2)
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host
    if _IP_HOST.match(host) or name in upstreams or effective(pp, "resolver") is not None:
        return []
    if http_level(stack, "resolver") is not None:
        return []
    return [_f(stack, nf, "EM025", "error", pp.line,
               f"proxy_pass through a variable to {host} without a resolver",
               "with a variable nginx looks the name up at request time, only through "
               "`resolver`: without one every request gets a 502 (\"no resolver defined\")",
               "add `resolver 127.0.0.11 valid=10s;` (Docker's DNS on a compose network) "
               "to the server block")]


def _admin_and_body(stack: Stack, nf: NginxFile, srv: Directive,
                    upstreams: dict[str, list[str]], max_upload: int,
                    syn_names: frozenset[str] = frozenset()) -> list[Finding]:
    out: list[Finding] = []
    loc = location_match(srv, ADMIN_PROBE)
    if loc is not None and not _denied(loc) and proxies_to_synapse(loc, upstreams, syn_names):
        out.append(_f(stack, nf, "EM013", "error", loc.line,
                      f"/_synapse/admin is reachable through `location {' '.join(loc.args)}`",
                      "the admin API (users, tokens, room deletion) is then open to the "
                      "internet, guarded only by a token",
                      "proxy only /_matrix and /_synapse/client; add `location "
                      "/_synapse/admin { return 404; }` and reach the admin API through an "
                      "SSH port forward"))
    loc = location_match(srv, UPLOAD_PROBE)
    if loc is not None and proxies_to_synapse(loc, upstreams, syn_names):
        cmbs = effective(loc, "client_max_body_size") or http_level(stack, "client_max_body_size")
        if cmbs is None:
            out.append(_f(stack, nf, "EM014", "error", loc.line,
                          "client_max_body_size missing where uploads reach Synapse",
                          "nginx's default is 1m: larger uploads get nginx's HTML 413, which "
                          "clients report as an unknown error",
                          f"set `client_max_body_size {max_upload // 1024 // 1024}M;` in the "
                          "server block (equal to Synapse's max_upload_size)"))
        else:
            size = parse_size(cmbs.args[0]) if cmbs.args else None
            if size is not None and size != 0 and size < max_upload:
                out.append(Finding(
                    "EM014", "error", stack.rel(cmbs.file), cmbs.line,
                    f"client_max_body_size {cmbs.args[0]} is below Synapse's max_upload_size "
                    f"({max_upload // 1024 // 1024}M)",
                    "uploads between the two sizes pass Synapse's limit but get nginx's HTML "
                    "413, which clients report as an unknown error",
                    f"set `client_max_body_size {max_upload // 1024 // 1024}M;`"))
    return out


def http_level(stack: Stack, name: str) -> Directive | None:
    """A directive set at http level in any nginx file of the stack (nginx.conf's ``http``
    block, or the top level of a conf.d file, which nginx includes inside ``http``)."""
    for nf in stack.nginx:
        for d in nf.root.block or []:
            if d.name == name:
                return d
            if d.name == "http":
                found = d.children(name)
                if found:
                    return found[-1]
    return None


def _is_https_redirect(args: list[str]) -> bool:
    if not args:
        return False
    if args[0] in _REDIRECT_CODES:
        return len(args) > 1 and args[1].startswith("https://")
    return args[0].startswith("https://")


def _is_matrix_location(path: str) -> bool:
    return "_matrix" in path or "_synapse" in path


def _inside_tls_server(d: Directive) -> bool:
    p = d.parent
    while p is not None:
        if p.name == "server" and p.block is not None:
            return is_tls_server(p)
        p = p.parent
    return False
