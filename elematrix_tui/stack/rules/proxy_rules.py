"""Rules over the proxies that are not nginx: Traefik labels/static config and Caddyfiles.

EM013 (admin API reachable) and EM001 (redirect to https on a stack meant for HTTP).
What the readers copy from upstream is written in ``proxies.py``.
"""

from __future__ import annotations

from .. import proxies
from ..findings import Finding
from ..model import Stack
from .nginx_rules import ADMIN_PROBE, synapse_names

_ADMIN_WHY = ("the admin API (users, tokens, room deletion) is then open to the internet, "
              "guarded only by a token")


def check(stack: Stack) -> list[Finding]:
    """Traefik routers and Caddy sites that expose /_synapse/admin, or redirect to https."""
    out: list[Finding] = []
    for r in proxies.routers(stack):
        target, port = proxies.router_target(stack, r)
        if r.rule is None or target is None or target.role != "synapse":
            continue
        if port not in (None, 8008):
            continue
        if proxies.rule_takes(r.rule.value, ADMIN_PROBE):
            out.append(Finding(
                "EM013", "error", stack.rel(r.owner.compose.path), r.rule.line,
                f"/_synapse/admin is reachable through Traefik router `{r.name}`",
                _ADMIN_WHY,
                "restrict the rule to `PathPrefix(`/_matrix`) || PathPrefix(`/_synapse/client`)"
                "` and reach the admin API through an SSH port forward"))
    if not stack.tls_intent:
        for r in proxies.routers(stack):
            if r.redirect_https is not None:
                out.append(Finding(
                    "EM001", "error", stack.rel(r.owner.compose.path), r.redirect_https.line,
                    f"Traefik redirects router `{r.name}` to https on an HTTP-only host",
                    "nothing serves TLS here: clients follow the redirect and fail to connect",
                    "remove the redirectscheme middleware"))
        for svc in stack.services("traefik"):
            _t, red = proxies.flags_tls(proxies.traefik_flags(svc))
            for fl in red[:1]:
                out.append(Finding(
                    "EM001", "error", stack.rel(svc.compose.path), fl.line,
                    f"Traefik flag --{fl.key} redirects to https on an HTTP-only host",
                    "nothing serves TLS here: clients follow the redirect and fail to connect",
                    "remove the entry point redirection flags"))
        for tf in stack.traefik:
            _tls, redirects = proxies.static_tls(tf.doc.data)
            for ep in redirects:
                out.append(Finding(
                    "EM001", "error", stack.rel(tf.path),
                    tf.doc.line("entryPoints", ep, "http", "redirections"),
                    f"Traefik entry point `{ep}` redirects to https on an HTTP-only host",
                    "nothing serves TLS here: clients follow the redirect and fail to connect",
                    "remove `http.redirections` from the entry point"))
    names = synapse_names(stack)
    for cf in stack.caddy:
        sites = proxies.caddy_sites(cf)
        if isinstance(sites, proxies.CaddySyntaxError):
            out.append(Finding(
                "EM000", "error", stack.rel(cf.path), sites.line, "Caddyfile cannot be parsed",
                f"{sites}; Caddy refuses to start, and the doctor cannot check it",
                "fix the syntax error at this line"))
            continue
        for site in sites:
            d = proxies.caddy_route(site, ADMIN_PROBE)
            if d is None or d.name != "reverse_proxy":
                continue
            ups = [a for a in d.args if not a.startswith(("/", "@"))]
            if any(_is_synapse(u, names) for u in ups):
                out.append(Finding(
                    "EM013", "error", stack.rel(cf.path), d.line,
                    f"/_synapse/admin is reachable through Caddy site "
                    f"{' '.join(site.addresses)}", _ADMIN_WHY,
                    "add `respond /_synapse/admin* 404` to the site, or proxy only "
                    "`/_matrix/*` and `/_synapse/client/*`"))
    return out


def _is_synapse(upstream: str, names: frozenset[str]) -> bool:
    u = upstream.split("://", 1)[-1]
    host = u.rsplit(":", 1)[0] if u.count(":") == 1 else u
    if u.endswith(":8008") or host in names:
        return True
    return not names and "synapse" in host.lower()
