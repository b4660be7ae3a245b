"""The transport intent of a stack, decided before any rule runs.

A stack that serves TLS *on purpose* (an nginx TLS server with its certificate, a Traefik
entry point or router with TLS, a Caddy site with automatic HTTPS) is not broken because
it has TLS directives: it is built for another target. Against the HTTP-only target it
gets one advisory (EM019: ``doctor --fix`` computes the adaptation); with ``--target tls``
none. The per-directive TLS rules (EM001-EM004, EM008's "uses https") then stay silent:
they are for stacks that *mean* to be HTTP-only and still carry TLS leftovers.
"""

from __future__ import annotations

import fnmatch
import posixpath
from dataclasses import dataclass
from typing import Literal

from . import nginxconf, proxies
from .findings import Finding
from .model import Stack

Target = Literal["http", "tls"]
TARGETS: tuple[Target, ...] = ("http", "tls")


@dataclass(frozen=True)
class Evidence:
    file: str
    line: int
    what: str


def _nginx_cert(stack: Stack, srv: nginxconf.Directive) -> bool:
    if nginxconf.effective(srv, "ssl_certificate") is not None:
        return True
    from .rules.nginx_rules import http_level

    if http_level(stack, "ssl_certificate") is not None:
        return True
    # A certificate in a snippet the server includes (`include ssl.d/site.conf;`).
    for inc in srv.walk():
        if inc.name != "include" or not inc.args:
            continue
        pattern = posixpath.basename(inc.args[0])
        for nf in stack.nginx:
            if fnmatch.fnmatch(nf.path.name, pattern) and any(
                    d.name == "ssl_certificate" for d in nf.root.block or []):
                return True
    return False


def evidence(stack: Stack) -> list[Evidence]:
    """Every sign that the stack serves TLS on purpose, in a stable order."""
    out: list[Evidence] = []
    for nf in stack.nginx:
        for srv in nginxconf.servers(nf.root):
            if nginxconf.is_tls_server(srv) and _nginx_cert(stack, srv):
                lst = next((d for p, ssl, d in nginxconf.listen_ports(srv)
                            if d is not None and (ssl or p == 443)), srv)
                out.append(Evidence(stack.rel(nf.path), lst.line,
                                    "an nginx server listening with TLS and its certificate"))
    for tf in stack.traefik:
        tls_eps, _red = proxies.static_tls(tf.doc.data)
        for ep in tls_eps:
            out.append(Evidence(stack.rel(tf.path), tf.doc.line("entryPoints", ep),
                                f"Traefik entry point `{ep}` serving TLS"))
    for svc in stack.services("traefik"):
        tls_flags, _redirects = proxies.flags_tls(proxies.traefik_flags(svc))
        for fl in tls_flags[:1]:
            out.append(Evidence(stack.rel(svc.compose.path), fl.line,
                                f"Traefik flag --{fl.key} serving TLS"))
    for r in proxies.routers(stack):
        if r.tls is not None:
            out.append(Evidence(stack.rel(r.owner.compose.path), r.tls.line,
                                f"Traefik router `{r.name}` with TLS"))
    for cf in stack.caddy:
        sites = proxies.caddy_sites(cf)
        if isinstance(sites, proxies.CaddySyntaxError):
            continue
        for site in sites:
            if proxies.caddy_auto_https(site):
                out.append(Evidence(stack.rel(cf.path), site.line,
                                    f"Caddy site {' '.join(site.addresses)} with automatic HTTPS"))
    return out


def decide(stack: Stack, target: Target) -> list[Finding]:
    """Set ``stack.tls_intent``; return the one advisory the target calls for (or none)."""
    ev = evidence(stack)
    stack.tls_intent = bool(ev)
    if not ev or target == "tls":
        return []
    first = ev[0]
    others = len(ev) - 1
    return [Finding(
        "EM019", "warning", first.file, first.line,
        "the stack is built to serve TLS; the target is HTTP-only",
        f"{first.what}" + (f" (and {others} more TLS place(s))" if others else "")
        + ": on the HTTP-only host nothing can get its certificates, so as written the "
        "proxy fails to start or redirects to a port nothing answers",
        "run `elematrix doctor --fix` to compute the HTTP-only adaptation (listen 80, no "
        "certificates, no https redirects or HSTS, http base URLs), or check it against a "
        "TLS target with `--target tls`")]
