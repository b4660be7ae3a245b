"""``doctor --fix``: the HTTP-only adaptation of a TLS-built stack, as a reviewable diff.

The research's five changes, done as line edits so comments and layout survive:
nginx's TLS server becomes the one ``listen 80`` server (the redirect-only server goes,
TLS directives and HSTS go, ``proxy_pass`` loses any URI path, ``client_max_body_size``
matches Synapse, ``/_synapse/admin`` is closed); compose loses certbot, certificate
mounts, port 443 and published database/Synapse ports and gains the C-collation initdb
arguments; homeserver.yaml and Element's config.json get ``http://`` base URLs and the
registration switch. What cannot be decided mechanically (a server_name, secrets,
volumes, healthchecks) is listed as manual work instead. Nothing is written until
:func:`apply_plan` is called, which the command line does only after the operator's yes.
"""

from __future__ import annotations

import difflib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from . import nginxconf
from .findings import Finding
from .load import load_stack
from .model import NginxFile, Service, Stack, service_env, volumes
from .rules import compose_rules, nginx_rules, proxy_rules, synapse_rules

INITDB_ARGS = "--encoding=UTF8 --lc-collate=C --lc-ctype=C"


@dataclass
class FileEdit:
    """Line edits over one file: deletions, replacements and insertions (1-based lines)."""

    path: Path
    lines: list[str]
    deleted: set[int] = field(default_factory=set)
    replaced: dict[int, str] = field(default_factory=dict)
    inserted: dict[int, list[str]] = field(default_factory=dict)  # after line N (0: at top)

    @classmethod
    def read(cls, path: Path) -> FileEdit:
        return cls(path, path.read_text(encoding="utf-8").splitlines(keepends=True))

    def delete(self, first: int, last: int | None = None) -> None:
        self.deleted.update(range(first, (last or first) + 1))

    def replace(self, line: int, text: str) -> None:
        self.replaced[line] = text if text.endswith("\n") else text + "\n"

    def insert_after(self, line: int, text: str) -> None:
        self.inserted.setdefault(line, []).append(text if text.endswith("\n") else text + "\n")

    def line(self, n: int) -> str:
        return self.replaced.get(n, self.lines[n - 1])

    def result(self) -> str:
        original = "".join(self.lines)
        if not (self.deleted or self.replaced or self.inserted):
            return original
        out: list[str] = list(self.inserted.get(0, []))
        for i, text in enumerate(self.lines, 1):
            if i not in self.deleted:
                out.append(self.replaced.get(i, text))
                out.extend(self.inserted.get(i, []))
        # Deleting blocks leaves blank lines behind: never more than one in a row, none at
        # the start or the end.
        text = re.sub(r"\n{3,}", "\n\n", "".join(out)).lstrip("\n")
        return text.rstrip("\n") + "\n" if original.endswith("\n") else text.rstrip("\n")

    @property
    def changed(self) -> bool:
        return self.result() != "".join(self.lines)


@dataclass
class FixPlan:
    """The proposed adaptation: new file contents, their diff, and what is left manual."""

    root: Path
    edits: dict[Path, FileEdit] = field(default_factory=dict)
    manual: list[str] = field(default_factory=list)
    # Advice that needs no decision (true of a fresh deployment): shown, never refused.
    notes: list[str] = field(default_factory=list)

    def edit(self, path: Path) -> FileEdit:
        if path not in self.edits:
            self.edits[path] = FileEdit.read(path)
        return self.edits[path]

    @property
    def changed_files(self) -> list[str]:
        return [_rel(p, self.root) for p, e in self.edits.items() if e.changed]

    @property
    def diff(self) -> list[str]:
        lines: list[str] = []
        for p, e in sorted(self.edits.items()):
            if not e.changed:
                continue
            rel = _rel(p, self.root)
            lines.extend(difflib.unified_diff(
                "".join(e.lines).splitlines(), e.result().splitlines(),
                fromfile=f"a/{rel}", tofile=f"b/{rel}", lineterm=""))
        return lines


def _rel(p: Path, root: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


def _indent(text: str) -> str:
    return text[: len(text) - len(text.lstrip())]


def plan_fix(path: Path, public_address: str | None = None) -> FixPlan:
    """Work out the HTTP-only adaptation of the stack at path (writes nothing)."""
    stack = load_stack(Path(path))
    plan = FixPlan(stack.root)
    host = public_address or _host_from_stack(stack)
    for nf in stack.nginx:
        _fix_nginx(plan, stack, nf, host)
    for cf in stack.compose:
        for svc in cf.services:
            _fix_service(plan, stack, svc)
    _fix_homeserver(plan, stack, host)
    _fix_element(plan, stack, host)
    _fix_well_known_files(plan, stack, host)
    for f in stack.problems:
        plan.manual.append(f"{f.location}: {f.title} (fix the syntax first, then re-run)")
    # TLS served by Traefik or Caddy is not rewritten: say so rather than leave it silently.
    from .intent import evidence

    for ev in evidence(stack):
        if not ev.what.startswith("an nginx"):
            plan.manual.append(f"{ev.file}:{ev.line}: EM019 {ev.what}: not adapted by --fix "
                               "(serve it on :80 without TLS by hand)")
    return plan


def _host_from_stack(stack: Stack) -> str | None:
    hs = stack.homeserver
    if hs is not None and isinstance(hs.doc.data.get("public_baseurl"), str):
        u = urlsplit(str(hs.doc.data["public_baseurl"]))
        if u.hostname:
            return str(u.netloc)
    for ef in stack.elements:
        bu = synapse_rules.element_base_url(ef)
        if bu is not None and urlsplit(bu[0]).hostname:
            return urlsplit(bu[0]).netloc
    return None


def _http_url(url: str, host: str | None) -> str:
    u = urlsplit(url)
    netloc = host or u.netloc
    return f"http://{netloc}{u.path}"


# ---------------------------------------------------------------- nginx


def _redirect_only(srv: nginxconf.Directive) -> bool:
    """A port-80 server that only redirects to https (and answers ACME challenges)."""
    for d in srv.block or []:
        if d.name in ("listen", "server_name", "access_log", "error_log", "server_tokens"):
            continue
        if d.name == "return" and nginx_rules._is_https_redirect(d.args):
            continue
        if d.name == "location":
            path = d.args[-1] if d.args else ""
            if "acme-challenge" in path:
                continue
            body = [x for x in d.block or [] if x.name not in ("access_log",)]
            if body and all(x.name in ("return", "rewrite") and any(
                    a.startswith("https://") for a in x.args[:2]) for x in body):
                continue
        return False
    return True


def _fix_nginx(plan: FixPlan, stack: Stack, nf: NginxFile, host: str | None) -> None:
    e = plan.edit(nf.path)
    srvs = nginxconf.servers(nf.root)
    tls_servers = [s for s in srvs if nginxconf.is_tls_server(s)]
    keep = list(srvs)
    if tls_servers:
        for srv in srvs:
            if not nginxconf.is_tls_server(srv) and _redirect_only(srv):
                e.delete(srv.line, srv.end_line)
                keep.remove(srv)
        for srv in tls_servers:
            ports = nginxconf.listen_ports(srv)
            # Addresses the server already serves plainly: a converted TLS listen on the
            # same address would be a duplicate, which nginx refuses.
            plain = {d.args[0] for port, ssl, d in ports
                     if d is not None and not ssl and port != 443}
            for port, ssl, d in ports:
                if d is None or not (ssl or port == 443):
                    continue
                addr = d.args[0]
                new_addr = re.sub(r"443$", "80", addr) if addr.endswith("443") else addr
                if new_addr in plain:
                    e.delete(d.line, d.end_line)
                    continue
                plain.add(new_addr)
                opts = [a for a in d.args[1:] if a not in ("ssl", "http2", "quic", "reuseport")]
                e.replace(d.line, f"{_indent(e.line(d.line))}listen "
                                  f"{' '.join([new_addr, *opts])};")
        if len([s for s in keep if not nginxconf.is_tls_server(s)]) and len(tls_servers):
            plan.manual.append(
                f"{_rel(nf.path, plan.root)}: a port-80 server with its own content stays "
                "next to the converted TLS server; merge them into one server block")
    for d in nf.root.walk():
        name = d.name
        if _tls_only(d) or (name == "return" and nginx_rules._is_https_redirect(d.args)):
            e.delete(d.line, d.end_line)
        elif name == "proxy_pass" and d.args and d.parent is not None and d.parent.args \
                and nginx_rules._is_matrix_location(d.parent.args[-1]):
            m = nginx_rules._PROXY_URL.match(d.args[0])
            if m and m.group(3) is not None and "$" not in d.args[0]:
                e.replace(d.line, e.line(d.line).replace(d.args[0], f"{m.group(1)}://"
                                                         f"{m.group(2)}", 1))
            # `set $u http://synapse:8008/; proxy_pass $u;`: the path is in the set line.
            var = nginx_rules._VAR.match(d.args[0])
            setd = nginx_rules.set_directive(d.parent, var.group(1)) if var else None
            m = nginx_rules._PROXY_URL.match(setd.args[1]) if setd is not None else None
            if setd is not None and m and m.group(3) is not None and "$" not in setd.args[1]:
                se = plan.edit(setd.file)
                se.replace(setd.line, se.line(setd.line).replace(
                    setd.args[1], f"{m.group(1)}://{m.group(2)}", 1))
        elif name == "return" and len(d.args) >= 2 and "m.homeserver" in d.args[1] \
                and "https://" in d.args[1]:
            e.replace(d.line, _https_to_http(e.line(d.line), host))
    upstreams = nginx_rules._upstreams(stack)
    max_upload = synapse_rules.max_upload_bytes(stack.homeserver)
    size = f"{max_upload // 1024 // 1024}M"
    for srv in keep:
        first_inner = _first_inner_line(srv)
        close_indent = _indent(e.lines[srv.end_line - 1])
        inner = close_indent + "    "
        loc = nginxconf.location_match(srv, nginx_rules.UPLOAD_PROBE)
        if loc is not None and nginx_rules.proxies_to_synapse(loc, upstreams,
                                                              nginx_rules.synapse_names(stack)):
            cmbs = (nginxconf.effective(loc, "client_max_body_size")
                    or nginx_rules.http_level(stack, "client_max_body_size"))
            if cmbs is None:
                e.insert_after(first_inner, f"{inner}client_max_body_size {size};")
            else:
                cur = nginxconf.parse_size(cmbs.args[0]) if cmbs.args else None
                if cur is not None and cur != 0 and cur < max_upload:
                    ce = plan.edit(cmbs.file)
                    ce.replace(cmbs.line, ce.line(cmbs.line).replace(cmbs.args[0], size, 1))
        if any(nginx_rules._needs_resolver(stack, nf, pp, upstreams)
               for pp in srv.walk() if pp.name == "proxy_pass" and pp.args):
            e.insert_after(first_inner, f"{inner}# Docker's DNS: names in a proxy_pass "
                                        f"variable are resolved per request.\n"
                                        f"{inner}resolver 127.0.0.11 valid=10s;")
        loc = nginxconf.location_match(srv, nginx_rules.ADMIN_PROBE)
        if loc is not None and not nginx_rules._denied(loc) and \
                nginx_rules.proxies_to_synapse(loc, upstreams, nginx_rules.synapse_names(stack)):
            if loc.args and loc.args[-1].rstrip("/") == "/_synapse/admin" \
                    and loc.args[0] not in ("~", "~*"):
                # The admin location itself: a second one would be nginx's "duplicate
                # location" error. `return` runs before proxy_pass: the API is closed.
                e.insert_after(loc.line, f"{inner}    return 404;  # reach it through an SSH "
                                         "port forward")
                continue
            e.insert_after(srv.end_line - 1,
                           f"\n{inner}# The admin API is reached through an SSH port forward.\n"
                           f"{inner}location ^~ /_synapse/admin {{\n{inner}    return 404;\n"
                           f"{inner}}}")


def _tls_only(d: nginxconf.Directive) -> bool:
    """A directive that only makes sense with TLS (or that breaks HTTP: HSTS)."""
    name = d.name
    return bool(
        name.startswith("ssl_") or name == "ssl" or (name == "http2" and d.args == ["on"])
        or (name == "include" and d.args and nginx_rules._TLS_INCLUDE.search(d.args[0]))
        or (name in ("add_header", "more_set_headers")
            and "strict-transport-security" in " ".join(d.args).lower()))


def _first_inner_line(srv: nginxconf.Directive) -> int:
    """The line after which a new server-level directive reads well (after server_name)."""
    names = srv.children("server_name") or srv.children("listen")
    return names[-1].end_line if names else srv.line


def _https_to_http(text: str, host: str | None) -> str:
    def sub(m: re.Match[str]) -> str:
        return f"http://{host or m.group(1)}"
    return re.sub(r"https://([^/\"'\s]+)", sub, text)


# ---------------------------------------------------------------- compose


def _fix_service(plan: FixPlan, stack: Stack, svc: Service) -> None:
    cf = svc.compose
    e = plan.edit(cf.path)
    doc = cf.doc
    if svc.role == "certbot":
        first = doc.line("services", svc.name)
        last = doc.end_line("services", svc.name) or first
        e.delete(first, last)
        return
    for src, tgt, _kind, idx in volumes(svc):
        if idx < 1000 and (compose_rules._CERT_PATH.search(src)
                           or compose_rules._CERT_PATH.search(tgt)):
            e.delete(doc.line("services", svc.name, "volumes", idx),
                     doc.end_line("services", svc.name, "volumes", idx))
    ports = svc.data.get("ports") or []
    private = {p for p in compose_rules._PRIVATE_PORTS}
    removed = 0
    for cport, host_ip, idx in compose_rules.published(svc):
        if (cport == 443 and svc.role == "nginx") or (
                cport in private and not host_ip.startswith(compose_rules._LOOPBACK)):
            e.delete(doc.line("services", svc.name, "ports", idx),
                     doc.end_line("services", svc.name, "ports", idx))
            removed += 1
    if ports and removed == len(ports):
        e.delete(doc.line("services", svc.name, "ports"))
    if svc.role == "postgres":
        ev = service_env(svc, "POSTGRES_INITDB_ARGS")
        if ev is None:
            env = svc.data.get("environment")
            key_line = doc.line("services", svc.name, "environment")
            if isinstance(env, dict) and env:
                first_key = doc.line("services", svc.name, "environment", next(iter(env)))
                ind = _indent(e.lines[first_key - 1])
                e.insert_after(key_line, f'{ind}POSTGRES_INITDB_ARGS: "{INITDB_ARGS}"')
            elif isinstance(env, list) and env:
                first = doc.line("services", svc.name, "environment", 0)
                ind = _indent(e.lines[first - 1])
                e.insert_after(key_line, f'{ind}- "POSTGRES_INITDB_ARGS={INITDB_ARGS}"')
            else:
                svc_line = doc.line("services", svc.name)
                ind = _indent(e.lines[svc_line - 1]) + "  "
                e.insert_after(svc_line, f'{ind}environment:\n{ind}  POSTGRES_INITDB_ARGS: '
                                         f'"{INITDB_ARGS}"')
            # A new host starts with an empty volume: advice, not a decision to make.
            plan.notes.append(
                f"{_rel(cf.path, plan.root)}: POSTGRES_INITDB_ARGS only applies to a new, empty "
                "database volume: dump, recreate the volume and restore an existing database")
        elif not compose_rules.initdb_ok(ev.value) and ev.file == cf.path:
            line = e.line(ev.line)
            e.replace(ev.line, line.replace(ev.value, INITDB_ARGS, 1))


# ---------------------------------------------------------------- homeserver / Element


def _fix_homeserver(plan: FixPlan, stack: Stack, host: str | None) -> None:
    hs = stack.homeserver
    if hs is None:
        return
    d = hs.doc.data
    e = plan.edit(hs.path)
    pub = d.get("public_baseurl")
    if isinstance(pub, str) and (pub.startswith("https://")
                                 or (host and urlsplit(pub).netloc != host)):
        ln = hs.doc.line("public_baseurl")
        e.replace(ln, e.line(ln).replace(pub, _http_url(pub, host), 1))
    elif pub is None:
        if host:
            e.insert_after(hs.doc.line("server_name"), f'public_baseurl: "http://{host}/"')
        else:
            plan.manual.append(f"{_rel(hs.path, plan.root)}: add `public_baseurl: "
                               "http://<public address>/` (pass --public-address to --fix)")
    if d.get("registration_requires_token") is True and d.get("enable_registration") is not True:
        if "enable_registration" in d:
            ln = hs.doc.line("enable_registration")
            e.replace(ln, re.sub(r"(enable_registration:\s*)\S+", r"\1true", e.line(ln)))
        else:
            e.insert_after(hs.doc.line("registration_requires_token") - 1,
                           "enable_registration: true")
    for i, lst in enumerate(d.get("listeners") or []):
        if isinstance(lst, dict) and lst.get("type") == "http" and not lst.get("x_forwarded") \
                and stack.nginx:
            node = hs.doc.find("listeners", i)
            if isinstance(node, yaml.MappingNode) and node.value:
                col = node.value[0][0].start_mark.column
                if "x_forwarded" in lst:
                    ln = hs.doc.line("listeners", i, "x_forwarded")
                    e.replace(ln, re.sub(r"(x_forwarded:\s*)\S+", r"\1true", e.line(ln)))
                else:
                    e.insert_after(node.value[0][0].start_mark.line + 1,
                                   " " * col + "x_forwarded: true")
    for f in _manual_findings(stack):
        plan.manual.append(f"{f.location}: {f.rule} {f.title} -- {f.fix}")


def _manual_findings(stack: Stack) -> list[Finding]:
    out: list[Finding] = []
    for check in (synapse_rules.check, compose_rules.check):
        for f in check(stack):
            if f.rule in _MANUAL_RULES:
                out.append(f)
    # Traefik labels and Caddyfiles are not edited: what they expose is listed as manual.
    out.extend(f for f in proxy_rules.check(stack) if f.rule in ("EM001", "EM013"))
    out.extend(f for nf in stack.nginx for f in nginx_rules._context_errors(stack, nf))
    return out


# Rules --fix cannot decide mechanically: listed after the diff as manual work.
_MANUAL_RULES = frozenset({"EM009", "EM010", "EM011", "EM015", "EM016", "EM017", "EM021",
                           "EM022", "EM023", "EM024"})


def _fix_element(plan: FixPlan, stack: Stack, host: str | None) -> None:
    pub = stack.homeserver.doc.data.get("public_baseurl") if stack.homeserver else None
    target = None
    if isinstance(pub, str):
        target = _http_url(pub, host).rstrip("/")
    for ef in stack.elements:
        bu = synapse_rules.element_base_url(ef)
        if bu is None:
            continue
        url, ln = bu
        new = target or _http_url(url, host).rstrip("/")
        if url != new:
            e = plan.edit(ef.path)
            if url in e.line(ln):
                e.replace(ln, e.line(ln).replace(url, new, 1))


def _fix_well_known_files(plan: FixPlan, stack: Stack, host: str | None) -> None:
    """Static ``.well-known/matrix/client`` files pointing at https."""
    for p in sorted(stack.root.rglob("client")):
        # `.well-known/matrix/client`, or the directory nginx serves it from under another
        # name (the bundled layout mounts ./nginx/well-known at /var/www/well-known).
        if p.parent.name != "matrix" or not p.is_file():
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if "m.homeserver" in text and "https://" in text:
            e = plan.edit(p)
            for i, line in enumerate(e.lines, 1):
                if "https://" in line:
                    e.replace(i, _https_to_http(line, host))


def apply_plan(plan: FixPlan) -> list[Path]:
    """Write every changed file (atomically, keeping its mode). Returns the paths written."""
    written: list[Path] = []
    for p, e in plan.edits.items():
        if not e.changed:
            continue
        mode = p.stat().st_mode & 0o7777
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(e.result())
            os.chmod(tmp, mode)
            os.replace(tmp, p)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(p)
    return written
