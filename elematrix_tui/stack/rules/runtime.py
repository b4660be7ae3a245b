"""What happens when the stack starts: start order (EM015) and nginx upstreams (EM021,
EM022).

Start order is a warning only where a process really dies without its dependency:
- Synapse connects to its database during setup; when PostgreSQL is not accepting
  connections yet, ``synapse/app/homeserver.py`` ``main()`` catches the error in
  ``handle_startup_exception`` (``synapse/app/_base.py``), which calls ``quit_with_error``
  and exits 1. ``depends_on`` without ``condition: service_healthy`` (or ``links``) only
  waits until the postgres container is *started*, not ready.
- nginx resolves every static upstream host name when it loads its config: an unknown
  name is ``[emerg] host not found in upstream "x:80"`` and nginx exits 1. Docker's DNS
  knows a container's name once the container is started (not healthy), so ``depends_on``
  in any form (``service_started`` is enough) keeps nginx alive; no dependency at all is a
  race. ``proxy_pass`` with a variable and a ``resolver`` is resolved per request and
  never kills nginx at start. The facts are checked against the real programs in
  ``tests/stack/test_doctor_facts.py``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..findings import Finding
from ..model import ComposeFile, Service, Stack
from ..nginxconf import Directive

_URL = re.compile(r"^(?:https?|grpcs?|uwsgi|fastcgi)://([^/]+)")


def compose_names(cf: ComposeFile) -> dict[str, Service]:
    """Every name a container answers to on the compose networks: service name,
    container_name, hostname, network aliases and link aliases."""
    out: dict[str, Service] = {}
    for svc in cf.services:
        out.setdefault(svc.name, svc)
        for key in ("container_name", "hostname"):
            v = svc.data.get(key)
            if isinstance(v, str):
                out.setdefault(v, svc)
        nets = svc.data.get("networks")
        if isinstance(nets, dict):
            for spec in nets.values():
                aliases = spec.get("aliases") if isinstance(spec, dict) else None
                for a in aliases if isinstance(aliases, list) else []:
                    out.setdefault(str(a), svc)
    for svc in cf.services:
        links = svc.data.get("links")
        for ln in links if isinstance(links, list) else []:
            target, _, alias = str(ln).partition(":")
            if alias and target in out:
                out.setdefault(alias, out[target])
    return out


@dataclass
class Upstream:
    """A static host nginx resolves at start, and where it is written."""

    host: str
    port: str
    directive: Directive


def _split_host(hostport: str) -> tuple[str, str]:
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        return host, rest.lstrip(":")
    host, _, port = hostport.rpartition(":") if hostport.count(":") == 1 else (hostport, "", "")
    return (host or hostport), port


def static_upstreams(stack: Stack, root: Directive) -> list[Upstream]:
    """Hosts of ``proxy_pass`` (not through an ``upstream`` block, no variables) and of
    ``server`` lines in ``upstream`` blocks (unless marked ``resolve``)."""
    blocks = {d.args[0] for nf in stack.nginx for d in nf.root.walk()
              if d.name == "upstream" and d.args}
    out: list[Upstream] = []
    for d in root.walk():
        if d.name == "proxy_pass" and d.args and "$" not in d.args[0]:
            m = _URL.match(d.args[0])
            if not m:
                continue
            host, port = _split_host(m.group(1))
            if host not in blocks:
                out.append(Upstream(host, port, d))
        elif (d.name == "server" and d.parent is not None and d.parent.name == "upstream"
              and d.args and "resolve" not in d.args[1:] and "$" not in d.args[0]
              and not d.args[0].startswith("unix:")):
            host, port = _split_host(d.args[0])
            out.append(Upstream(host, port, d))
    return out


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _subnets(cf: ComposeFile) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    data = cf.doc.data if isinstance(cf.doc.data, dict) else {}
    nets = data.get("networks")
    for spec in nets.values() if isinstance(nets, dict) else []:
        ipam = spec.get("ipam") if isinstance(spec, dict) else None
        cfgs = ipam.get("config") if isinstance(ipam, dict) else None
        for c in cfgs if isinstance(cfgs, list) else []:
            sub = c.get("subnet") if isinstance(c, dict) else None
            try:
                out.append(ipaddress.ip_network(str(sub), strict=False))
            except ValueError:
                continue
    return out


def _depends(svc: Service) -> dict[str, tuple[str, int]]:
    """dependency name -> (condition, line) from depends_on and links."""
    out: dict[str, tuple[str, int]] = {}
    dep = svc.data.get("depends_on")
    if isinstance(dep, list):
        for i, d in enumerate(dep):
            out[str(d)] = ("service_started", svc.line("depends_on", i))
    elif isinstance(dep, dict):
        for d, spec in dep.items():
            cond = spec.get("condition") if isinstance(spec, dict) else None
            out[str(d)] = (str(cond or "service_started"), svc.line("depends_on", str(d)))
    links = svc.data.get("links")
    for i, ln in enumerate(links if isinstance(links, list) else []):
        out.setdefault(str(ln).split(":")[0], ("links", svc.line("links", i)))
    return out


def _transitive(cf: ComposeFile, svc: Service) -> set[str]:
    """Service names ``svc`` waits for, directly or through its dependencies."""
    by_name = {s.name: s for s in cf.services}
    for s in cf.services:
        cn = s.data.get("container_name")
        if isinstance(cn, str):
            by_name.setdefault(cn, s)
    seen: set[str] = set()
    todo = list(_depends(svc))
    while todo and len(seen) < 500:
        n = todo.pop()
        if n in seen or n not in by_name:
            continue
        seen.add(by_name[n].name)
        todo.extend(_depends(by_name[n]))
    return seen


def _db_targets(stack: Stack, cf: ComposeFile) -> list[Service]:
    """The postgres services Synapse connects to (by its database host, else all)."""
    pgs = [s for s in cf.services if s.role == "postgres"]
    for hs in stack.homeservers:
        db = hs.doc.data.get("database") if isinstance(hs.doc.data, dict) else None
        if not isinstance(db, dict):
            continue
        if str(db.get("name", "")) not in ("psycopg2", "psycopg"):
            return []  # sqlite: no database service to wait for
        args = db.get("args")
        host = args.get("host") if isinstance(args, dict) else None
        names = compose_names(cf)
        if isinstance(host, str) and host in names:
            return [names[host]] if names[host].role == "postgres" else []
    return pgs


def start_order(stack: Stack) -> list[Finding]:
    """EM015 where a process dies without its dependency (see the module docstring)."""
    out: list[Finding] = []
    for cf in stack.compose:
        for syn in [s for s in cf.services if s.role == "synapse"]:
            deps = _depends(syn)
            for pg in _db_targets(stack, cf):
                names = {pg.name, str(pg.data.get("container_name", pg.name))}
                got = next((deps[n] for n in names if n in deps), None)
                if got is not None and got[0] in ("service_healthy",
                                                  "service_completed_successfully"):
                    continue
                how = ("without a dependency on it" if got is None else
                       "through `links` only" if got[0] == "links" else
                       f"with condition {got[0]}")
                out.append(Finding(
                    "EM015", "warning", stack.rel(cf.path), got[1] if got else syn.line(),
                    f"`{syn.name}` starts before PostgreSQL `{pg.name}` is ready ({how})",
                    "Synapse connects to its database at start and exits 1 when PostgreSQL "
                    "is not accepting connections yet (first start: initdb takes seconds); "
                    "only a restart policy brings it back",
                    f"give `{pg.name}` a healthcheck (pg_isready) and write `depends_on: "
                    f"{{{pg.name}: {{condition: service_healthy}}}}`"))
    out.extend(_nginx_upstreams(stack))
    return out


def _nginx_upstreams(stack: Stack) -> list[Finding]:
    """EM015 (static upstream of a service nginx does not wait for), EM021 (a name nothing
    provides), EM022 (an address the nginx container cannot reach)."""
    out: list[Finding] = []
    by_name = {s.name: (cf, s) for cf in stack.compose for s in cf.services}
    for nf in stack.nginx:
        if not nf.service or nf.service not in by_name:
            continue  # no compose service runs this nginx: names cannot be judged
        cf, ngx = by_name[nf.service]
        if ngx.data.get("network_mode") == "host":
            continue
        names = compose_names(cf)
        extra = ngx.data.get("extra_hosts")  # host:ip pairs nginx's container resolves
        extra_names = ({str(k) for k in extra} if isinstance(extra, dict) else
                       {str(e).split(":", 1)[0] for e in extra} if isinstance(extra, list)
                       else set())
        deps = _depends(ngx)
        subnets = _subnets(cf)
        file = stack.rel(nf.path)
        reported: set[str] = set()
        for up in static_upstreams(stack, nf.root):
            ip = _ip(up.host)
            line = up.directive.line
            if up.host == "localhost" or (ip is not None and ip.is_loopback):
                out.append(Finding(
                    "EM022", "error", file, line,
                    f"upstream {up.host}:{up.port} is the nginx container itself",
                    f"nginx runs in the container of `{ngx.name}`: 127.0.0.1 there is that "
                    "container, not the host, so every request here gets 502",
                    "proxy to the service's compose name (e.g. `http://element:80`)"))
                continue
            if ip is not None:
                if ip.is_private and not any(ip in n for n in subnets):
                    out.append(Finding(
                        "EM022", "error", file, line,
                        f"upstream {up.host} is a fixed address outside the compose networks",
                        "it is a machine of the network the stack was written on; on the "
                        "target host nothing answers there (timeouts, 502)",
                        "proxy to the service's compose name instead of an address"))
                continue
            if up.host in extra_names:
                continue
            if up.host not in names:
                out.append(Finding(
                    "EM021", "error", file, line,
                    f"upstream host `{up.host}` is no service of the compose project",
                    "nginx resolves static upstream names when it starts: "
                    f"'host not found in upstream \"{up.host}\"' and nginx exits 1",
                    "proxy to a service of this compose file, or add the service (or use a "
                    "`resolver` with a variable in proxy_pass if it is optional)"))
                continue
            target = names[up.host]
            if target is ngx or target.name in reported:
                continue
            # Compose starts a service once its own dependencies are met: a target that
            # has none is started at once, before an nginx that waits for something.
            if target.name in _transitive(cf, ngx) or (deps and not _depends(target)):
                continue
            reported.add(target.name)
            out.append(Finding(
                "EM015", "warning", file, line,
                f"nginx (`{ngx.name}`) does not wait for `{target.name}`, its upstream",
                "nginx resolves the name when it starts; nothing orders it after "
                f"`{target.name}`, and if that container is not started yet nginx exits "
                f"with 'host not found in upstream \"{up.host}\"'",
                f"add `{target.name}` to the depends_on of `{ngx.name}`"))
    return out
