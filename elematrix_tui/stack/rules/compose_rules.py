"""Rules over the compose file: EM003, EM006, EM012, EM015 (and the password half of EM010)."""

from __future__ import annotations

import re
from typing import Any

from ..findings import Finding
from ..model import Service, Stack, service_env
from .secrets import weak_secret

_CERT_PATH = re.compile(r"(letsencrypt|certbot|/ssl|/certs?\b|\.pem\b|\.crt\b|\.key\b|acme)", re.I)
# Container ports that must never be published: PostgreSQL, Synapse's HTTP and metrics.
_PRIVATE_PORTS = {5432: "PostgreSQL", 8008: "Synapse", 9000: "Synapse metrics"}
_LOOPBACK = ("127.", "::1", "[::1]", "localhost")


def volumes(svc: Service) -> list[tuple[str, str, str, int]]:
    """(source, target, type, index) of a service's volumes, both syntaxes.

    type is ``volume`` (named), ``bind`` (host path), ``tmpfs`` or ``anonymous``.
    """
    out: list[tuple[str, str, str, int]] = []
    for i, v in enumerate(svc.data.get("volumes") or []):
        if isinstance(v, str):
            parts = v.split(":")
            if len(parts) == 1:
                out.append(("", parts[0], "anonymous", i))
                continue
            src, tgt = parts[0], parts[1]
            kind = "bind" if src.startswith((".", "/", "~", "$")) else "volume"
            out.append((src, tgt, kind, i))
        elif isinstance(v, dict):
            kind = str(v.get("type", "volume"))
            src = str(v.get("source", ""))
            if kind == "volume" and not src:
                kind = "anonymous"
            out.append((src, str(v.get("target", "")), kind, i))
    for i, t in enumerate(_as_list(svc.data.get("tmpfs"))):
        out.append(("", str(t).split(":")[0], "tmpfs", 1000 + i))
    return out


def _as_list(v: Any) -> list[Any]:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def published(svc: Service) -> list[tuple[int, str, int]]:
    """(container port, host ip, index) of every port a service publishes."""
    out: list[tuple[int, str, int]] = []
    for i, p in enumerate(svc.data.get("ports") or []):
        if isinstance(p, dict):
            target = p.get("target")
            host_ip = str(p.get("host_ip", ""))
            if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
                out.append((int(target), host_ip, i))
            continue
        s = str(p).split("/")[0]
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
        names = {s.name: s for s in cf.services}
        for svc in cf.services:
            if svc.role == "certbot":
                out.append(Finding(
                    "EM003", "warning", file, svc.line(),
                    f"certbot service `{svc.name}` on an HTTP-only host",
                    "an EC2 host name cannot get a Let's Encrypt certificate: the service "
                    "fails its challenges forever and spams the logs",
                    f"remove the `{svc.name}` service and its volumes"))
                continue
            for src, tgt, _kind, idx in volumes(svc):
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
            out.extend(_depends_on(stack, svc, names))
            if svc.role == "postgres":
                out.extend(_postgres(stack, svc))
    return out


def _depends_on(stack: Stack, svc: Service, names: dict[str, Service]) -> list[Finding]:
    out: list[Finding] = []
    dep = svc.data.get("depends_on")
    file = stack.rel(svc.compose.path)
    why = ("compose then starts `{svc}` as soon as `{dep}` is created, not when it is ready: "
           "Synapse exits on a database that is still initialising, nginx on an upstream "
           "that does not resolve yet")
    if isinstance(dep, list):
        for i, d in enumerate(dep):
            out.append(Finding(
                "EM015", "warning", file, svc.line("depends_on", i),
                f"`{svc.name}` depends on `{d}` without a health condition",
                why.format(svc=svc.name, dep=d),
                f"give `{d}` a healthcheck and write `{d}: {{condition: service_healthy}}`"))
    elif isinstance(dep, dict):
        for d, spec in dep.items():
            cond = spec.get("condition") if isinstance(spec, dict) else None
            if cond != "service_healthy" and cond != "service_completed_successfully":
                out.append(Finding(
                    "EM015", "warning", file, svc.line("depends_on", str(d)),
                    f"`{svc.name}` depends on `{d}` with condition {cond or 'service_started'}",
                    why.format(svc=svc.name, dep=d),
                    f"give `{d}` a healthcheck and use `condition: service_healthy`"))
    return out


def initdb_ok(args: str) -> bool:
    """True when POSTGRES_INITDB_ARGS gives UTF8 encoding and C collation and ctype."""
    a = args.replace("'", "").replace('"', "")
    enc = re.search(r"(--encoding[= ]|-E\s*)(UTF-?8)\b", a, re.I)
    locale_c = re.search(r"--locale[= ]C(\s|$)", a)
    collate = re.search(r"--lc-collate[= ]C(\s|$)", a) or locale_c
    ctype = re.search(r"--lc-ctype[= ]C(\s|$)", a) or locale_c
    return bool(enc and collate and ctype)


def _postgres(stack: Stack, svc: Service) -> list[Finding]:
    out: list[Finding] = []
    ev = service_env(svc, "POSTGRES_INITDB_ARGS")
    if ev is None or not initdb_ok(ev.value):
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
    pw = service_env(svc, "POSTGRES_PASSWORD")
    if pw is not None:
        why = weak_secret(pw.value)
        if why:
            out.append(Finding(
                "EM010", "error", stack.rel(pw.file), pw.line,
                f"POSTGRES_PASSWORD is {why}",
                "a guessable database password is one published port or one leaked "
                "backup away from the whole database",
                "generate a random value (e.g. `openssl rand -hex 32`) and set it both here "
                "and in homeserver.yaml database.args.password"))
    return out
