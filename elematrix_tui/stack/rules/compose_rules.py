"""Rules over the compose file: EM003, EM006, EM010 (env secrets), EM012, EM015, EM023, EM024."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..findings import Finding
from ..interp import read_dotenv
from ..model import ComposeFile, Service, Stack, resolve, service_env, volumes
from . import runtime
from .secrets import is_secret_name, weak_secret

_CERT_PATH = re.compile(r"(letsencrypt|certbot|/ssl|/certs?\b|\.pem\b|\.crt\b|\.key\b|acme)", re.I)
# Container ports that must never be published: PostgreSQL, Synapse's HTTP and metrics.
_PRIVATE_PORTS = {5432: "PostgreSQL", 8008: "Synapse", 9000: "Synapse metrics"}
_LOOPBACK = ("127.", "::1", "[::1]", "localhost")


def published(svc: Service) -> list[tuple[int, str, int]]:
    """(container port, host ip, index) of every TCP port a service publishes.

    UDP mappings are left out: PostgreSQL and Synapse only listen on TCP, so a published
    ``8008/udp`` exposes nothing.
    """
    out: list[tuple[int, str, int]] = []
    ports = svc.data.get("ports")
    for i, p in enumerate(ports if isinstance(ports, list) else []):
        if isinstance(p, dict):
            target = p.get("target")
            host_ip = str(p.get("host_ip", ""))
            if str(p.get("protocol", "tcp")).lower() == "udp":
                continue
            if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
                out.append((int(target), host_ip, i))
            continue
        spec, _, proto = str(p).partition("/")
        if proto.lower() == "udp":
            continue
        r = resolve(svc.compose, spec)
        s = r.value if r.value is not None else spec
        # [host_ip:][host_port:]container_port; ip may be [::1]
        m = re.fullmatch(r"(?:(\[[^\]]+\]|[\d.]+|localhost):)?(?:([\d-]*):)?([\d-]+)", s)
        if not m:
            continue
        cport = m.group(3).split("-")[0]
        if cport.isdigit():
            out.append((int(cport), m.group(1) or "", i))
    return out


def check(stack: Stack) -> list[Finding]:
    """Every compose rule over every compose file of the stack."""
    out: list[Finding] = []
    for cf in stack.compose:
        file = stack.rel(cf.path)
        for svc in cf.services:
            if svc.role == "certbot":
                if not stack.tls_intent:
                    out.append(Finding(
                        "EM003", "warning", file, svc.line(),
                        f"certbot service `{svc.name}` on an HTTP-only host",
                        "an EC2 host name cannot get a Let's Encrypt certificate: the service "
                        "fails its challenges forever and spams the logs",
                        f"remove the `{svc.name}` service and its volumes"))
                continue
            for src, tgt, _kind, idx in volumes(svc):
                if stack.tls_intent:
                    break  # certificates are what a TLS-built stack needs
                if idx < 1000 and (_CERT_PATH.search(src) or _CERT_PATH.search(tgt)):
                    out.append(Finding(
                        "EM003", "warning", file, svc.line("volumes", idx),
                        f"certificate mount `{src}:{tgt}` in `{svc.name}`",
                        "the HTTP-only host has no certificates: the bind mount creates an "
                        "empty directory and anything expecting files there fails",
                        "remove the mount"))
            for port, host_ip, idx in published(svc):
                if port in _PRIVATE_PORTS and not host_ip.startswith(_LOOPBACK):
                    out.append(Finding(
                        "EM012", "error", file, svc.line("ports", idx),
                        f"{_PRIVATE_PORTS[port]} port {port} of `{svc.name}` is published",
                        "it bypasses nginx (and for PostgreSQL exposes the database); the "
                        "security group is then the only thing in the way",
                        "remove the port mapping: nginx reaches the service on the compose "
                        "network (bind to 127.0.0.1 if the host itself needs it)"))
            if svc.role == "postgres":
                out.extend(_postgres(stack, svc))
        out.extend(_env_secrets(stack, cf))
        out.extend(_undefined_and_external(stack, cf))
    out.extend(runtime.start_order(stack))
    return out


def initdb_ok(args: str) -> bool:
    """True when POSTGRES_INITDB_ARGS gives UTF8 encoding and C collation and ctype."""
    a = args.replace("'", "").replace('"', "")
    enc = re.search(r"(--encoding[= ]|-E\s*)(UTF-?8)\b", a, re.I)
    locale_c = re.search(r"--locale[= ]C(\s|$)", a)
    collate = re.search(r"--lc-collate[= ]C(\s|$)", a) or locale_c
    ctype = re.search(r"--lc-ctype[= ]C(\s|$)", a) or locale_c
    return bool(enc and collate and ctype)


# An init script that creates the database itself with C collation (the postgres image
# runs /docker-entrypoint-initdb.d/*.sql on an empty volume, docker-library/postgres
# docker-entrypoint.sh `docker_process_init_files`).
_CREATE_DB_C = re.compile(
    r"CREATE\s+DATABASE\b[^;]*LC_COLLATE\s*=?\s*'C'[^;]*LC_CTYPE\s*=?\s*'C'"
    r"|CREATE\s+DATABASE\b[^;]*LC_CTYPE\s*=?\s*'C'[^;]*LC_COLLATE\s*=?\s*'C'"
    r"|CREATE\s+DATABASE\b[^;]*\bLOCALE\s*=?\s*'C'", re.I | re.S)


def _db_created_by_init_script(svc: Service) -> bool:
    from ..model import bind_mounts

    for host, tgt in bind_mounts(svc):
        if not tgt.startswith("/docker-entrypoint-initdb.d"):
            continue
        paths = [host] if host.is_file() else sorted(host.glob("*.sql")) if host.is_dir() else []
        for p in paths[:50]:
            try:
                if _CREATE_DB_C.search(p.read_text(encoding="utf-8", errors="replace")[:200_000]):
                    return True
            except OSError:
                continue
    return False


def _unsafe_locale_allowed(stack: Stack) -> bool:
    for hs in stack.homeservers:
        db = hs.doc.data.get("database") if isinstance(hs.doc.data, dict) else None
        if isinstance(db, dict) and db.get("allow_unsafe_locale") is True:
            return True
    return False


def _postgres(stack: Stack, svc: Service) -> list[Finding]:
    out: list[Finding] = []
    ev = service_env(svc, "POSTGRES_INITDB_ARGS")
    if ev is not None and not ev.checked:
        return out  # supplied at deploy time: not checked
    if (ev is None or not initdb_ok(ev.value)) and not _db_created_by_init_script(svc) \
            and not _unsafe_locale_allowed(stack):
        line = ev.line if ev else svc.line("environment") if "environment" in svc.data \
            else svc.line()
        out.append(Finding(
            "EM006", "error", stack.rel(ev.file if ev else svc.compose.path), line,
            "PostgreSQL is not initialised with UTF8 encoding and C collation"
            + ("" if ev else " (POSTGRES_INITDB_ARGS missing)"),
            "Synapse refuses to start on any collation but exactly C (even C.UTF-8), and "
            "collation can only be chosen when the database cluster is created",
            'set POSTGRES_INITDB_ARGS: "--encoding=UTF8 --lc-collate=C --lc-ctype=C" before '
            "the first start (an existing volume must be dumped and recreated)"))
    return out


def _env_secrets(stack: Stack, cf: ComposeFile) -> list[Finding]:
    """EM010 for every secret the compose project carries: service environment values
    (resolved through ``.env``), and secret-named ``.env`` lines."""
    out: list[Finding] = []
    seen: set[tuple[str, int]] = set()
    dotenv_path = cf.path.parent / ".env"

    def add(path: Path, line: int, name: str, why: str) -> None:
        key = (stack.rel(path), line)
        if key in seen:
            return
        seen.add(key)
        out.append(Finding(
            "EM010", "error", stack.rel(path), line, f"{name} is {why}",
            "a guessable or placeholder secret is one published port, one leaked backup or "
            "one read of the repository away from the service it guards",
            "generate a random value (e.g. `openssl rand -hex 32`) and set it everywhere it "
            "is used"))

    for svc in cf.services:
        env = svc.data.get("environment")
        keys = list(env) if isinstance(env, dict) else [
            str(e).split("=", 1)[0].strip() for e in env] if isinstance(env, list) else []
        for key in keys:
            if not is_secret_name(str(key)):
                continue
            ev = service_env(svc, str(key))
            if ev is None:
                continue
            if not ev.checked:  # supplied at deploy time: named in the coverage
                stack.deploy_time.update(ev.deploy_time)
                continue
            why = weak_secret(ev.value)
            if why:
                name = str(key)
                if ev.file == dotenv_path:
                    m = re.search(r"\$\{?([A-Za-z_]\w*)", ev.raw)
                    name = m.group(1) if m else name
                add(ev.file, ev.line, name, why)
    text = cf.doc.text
    for key, e in read_dotenv(dotenv_path).items():
        if not is_secret_name(key):
            continue
        why = weak_secret(e.value)
        # An empty value is a placeholder only where compose passes it to a service
        # (optional features are left empty on purpose); wording is one everywhere.
        if why == "empty" and not re.search(r"\$\{?" + re.escape(key) + r"\b", text):
            continue
        if why and why.startswith("too short") and not re.search(
                r"\$\{?" + re.escape(key) + r"\b", text):
            continue
        if why:
            add(dotenv_path, e.line, key, why)
    return out


def _undefined_and_external(stack: Stack, cf: ComposeFile) -> list[Finding]:
    """EM023: a service refers to a network/volume the file does not declare (compose
    refuses the whole project); EM024: an external one must exist before `up`."""
    out: list[Finding] = []
    file = stack.rel(cf.path)
    data = cf.doc.data if isinstance(cf.doc.data, dict) else {}
    declared: dict[str, Any] = {}
    for kind in ("networks", "volumes"):
        top = data.get(kind)
        declared[kind] = top if isinstance(top, dict) else {}
    used: dict[str, set[str]] = {"networks": set(), "volumes": set()}
    for svc in cf.services:
        nets = svc.data.get("networks")
        names = (list(nets) if isinstance(nets, dict)
                 else [n for n in nets if isinstance(n, str)] if isinstance(nets, list) else [])
        if not names and svc.data.get("network_mode") is None:
            used["networks"].add("default")
        used["networks"].update(str(n) for n in names)
        used["volumes"].update(src for src, _t, kind, _i in volumes(svc) if kind == "volume")
        for i, n in enumerate(names):
            if n != "default" and n not in declared["networks"]:
                where = svc.line("networks", n) if isinstance(nets, dict) else svc.line(
                    "networks", i)
                out.append(Finding(
                    "EM023", "error", file, where,
                    f"`{svc.name}` uses network `{n}`, which the file does not declare",
                    "compose refuses the whole project ('refers to undefined network'): "
                    "nothing starts",
                    f"declare `{n}` under the top-level `networks:` or use a declared one"))
        for src, _tgt, kind, idx in volumes(svc):
            if kind == "volume" and src and "$" not in src and src not in declared["volumes"]:
                out.append(Finding(
                    "EM023", "error", file, svc.line("volumes", idx),
                    f"`{svc.name}` uses volume `{src}`, which the file does not declare",
                    "compose refuses the whole project ('refers to undefined volume'): "
                    "nothing starts",
                    f"declare `{src}` under the top-level `volumes:`"))
    for kind in ("networks", "volumes"):
        for name, spec in declared[kind].items():
            # Compose only looks for the external ones a service uses.
            if (isinstance(spec, dict) and spec.get("external") in (True, "true")
                    and str(name) in used[kind]):
                out.append(Finding(
                    "EM024", "warning", file, cf.doc.line(kind, str(name), "external"),
                    f"external {kind[:-1]} `{name}` must exist before the stack starts",
                    f"compose does not create an external {kind[:-1]}: on a fresh host `up` "
                    "stops with 'declared as external, but could not be found'",
                    f"create it first (`docker {kind[:-1]} create {name}`) or let compose "
                    "own it (drop `external`)"))
    return out
