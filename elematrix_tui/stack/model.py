"""A stack directory as the doctor sees it: the parsed files and what a compose service
declares (its volumes, bind mounts and environment, resolved as compose resolves them).

Finding and parsing the files is :mod:`.load`.
"""


from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import nginxconf, yamlpos
from .findings import Finding, rel
from .interp import Resolved, interpolate, read_dotenv


@dataclass
class Service:
    """One compose service, with the role the doctor guessed for it."""

    name: str
    data: dict[str, Any]
    compose: ComposeFile
    role: str  # postgres | synapse | synapse-worker | nginx | element | certbot | traefik
    #            | caddy | other

    def line(self, *path: str | int) -> int:
        return self.compose.doc.line("services", self.name, *path,
                                     default=self.compose.doc.line("services", self.name))


@dataclass
class ComposeFile:
    path: Path
    doc: yamlpos.Doc
    services: list[Service] = field(default_factory=list)


@dataclass
class YamlFile:
    path: Path
    doc: yamlpos.Doc


@dataclass
class JsonFile:
    path: Path
    data: Any
    text: str
    doc: yamlpos.Doc | None  # the same text through the YAML composer, for line numbers

    def line(self, *path: str | int, needle: str | None = None) -> int:
        if self.doc is not None:
            n = self.doc.key_node(*path)
            if n is not None:
                return n.start_mark.line + 1
        if needle:
            for i, ln in enumerate(self.text.splitlines(), 1):
                if needle in ln:
                    return i
        return 1


@dataclass
class NginxFile:
    path: Path
    root: nginxconf.Directive
    context: str = "http"  # where nginx reads it: main (nginx.conf), http, server, ...
    service: str = ""      # the compose service whose nginx reads it ("" without compose)


@dataclass
class CaddyFile:
    path: Path
    text: str


@dataclass
class FileCover:
    """One stack file the doctor found: loaded (its rules ran) or skipped, and why."""

    file: str
    kind: str    # compose | nginx | homeserver | element | env | traefik | caddy | template
    status: str  # loaded | skipped
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file, "kind": self.kind, "status": self.status,
                "reason": self.reason}


@dataclass
class Stack:
    root: Path
    compose: list[ComposeFile] = field(default_factory=list)
    homeservers: list[YamlFile] = field(default_factory=list)
    elements: list[JsonFile] = field(default_factory=list)
    nginx: list[NginxFile] = field(default_factory=list)
    traefik: list[YamlFile] = field(default_factory=list)
    caddy: list[CaddyFile] = field(default_factory=list)
    problems: list[Finding] = field(default_factory=list)
    files: list[FileCover] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Set by the doctor once the transport intent is decided (intent.decide).
    tls_intent: bool = False
    # Secrets whose value is supplied at deploy time: named in the coverage, not checked.
    deploy_time: set[str] = field(default_factory=set)

    def rel(self, path: Path) -> str:
        return rel(path, self.root)

    def services(self, role: str) -> list[Service]:
        return [s for c in self.compose for s in c.services if s.role == role]

    @property
    def homeserver(self) -> YamlFile | None:
        return self.homeservers[0] if self.homeservers else None


def image_repo(image: str) -> str:
    """``ghcr.io/element-hq/synapse:v1`` -> ``synapse``."""
    ref = image.strip().lower().split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def volumes(svc: Service) -> list[tuple[str, str, str, int]]:
    """(source, target, type, index) of a service's volumes, both syntaxes.

    type is ``volume`` (named), ``bind`` (host path), ``tmpfs`` or ``anonymous``.
    """
    out: list[tuple[str, str, str, int]] = []
    vols = svc.data.get("volumes")
    for i, v in enumerate(vols if isinstance(vols, list) else []):
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
    tmpfs = svc.data.get("tmpfs")
    for i, t in enumerate(tmpfs if isinstance(tmpfs, list) else [tmpfs] if tmpfs else []):
        out.append(("", str(t).split(":")[0], "tmpfs", 1000 + i))
    return out


def bind_mounts(svc: Service) -> list[tuple[Path, str]]:
    """(host path, container path) of a service's bind mounts, ``${VAR}`` resolved."""
    out: list[tuple[Path, str]] = []
    for src, tgt, kind, _i in volumes(svc):
        if kind != "bind" or not tgt.startswith("/"):
            continue
        r = resolve(svc.compose, src)
        if r.value is None or r.value.startswith("~"):
            continue
        host = Path(os.path.normpath(svc.compose.path.parent / r.value))
        out.append((host, posixpath.normpath(tgt)))
    return out


def host_path(svc: Service, container: str) -> Path | None:
    """The host file behind a container path, through the longest matching bind mount."""
    best: tuple[str, Path] | None = None
    for host, tgt in bind_mounts(svc):
        if container == tgt or container.startswith(tgt.rstrip("/") + "/"):
            if best is None or len(tgt) > len(best[0]):
                best = (tgt, host)
    if best is None:
        return None
    rest = container[len(best[0]):].lstrip("/")
    return best[1] / rest if rest else best[1]


def container_paths(svc: Service, host: Path) -> list[str]:
    """Where a host file appears inside a service's container (may be several places)."""
    out = []
    for h, tgt in bind_mounts(svc):
        if host == h:
            out.append(tgt)
        elif h in host.parents:
            out.append(posixpath.join(tgt, host.relative_to(h).as_posix()))
    return out


@dataclass
class EnvValue:
    """A service's environment variable, resolved, with where it is written.

    ``deploy_time`` names the variables compose takes from the deploy-time environment
    (not in ``.env``): then ``value`` is the text as written and nothing can be checked.
    """

    value: str
    file: Path
    line: int
    deploy_time: list[str] = field(default_factory=list)
    raw: str = ""

    @property
    def checked(self) -> bool:
        return not self.deploy_time


def env_file_values(path: Path) -> dict[str, tuple[str, int]]:
    """KEY=VALUE lines of an env file: {key: (value, line)}."""
    return {k: (e.value, e.line) for k, e in read_dotenv(path).items()}


def compose_env(cf: ComposeFile) -> dict[str, str]:
    """The variables compose interpolates with: the ``.env`` beside the compose file."""
    return {k: e.value for k, e in read_dotenv(cf.path.parent / ".env").items()}


def resolve(cf: ComposeFile, text: str) -> Resolved:
    """A compose value with every ``${...}`` form resolved against ``.env``."""
    return interpolate(text, compose_env(cf))


def service_env(svc: Service, key: str) -> EnvValue | None:
    """Resolve ``key`` of a service: ``environment`` (mapping or list), then ``env_file``.

    Values are interpolated against the ``.env`` beside the compose file, as compose does;
    a ``${VAR}`` whose VAR is an ``.env`` line is located at that line. A pass-through
    item (``- KEY`` with no ``=``) takes KEY from ``.env``, else from the deploy-time shell.
    """
    cf = svc.compose
    dotenv = read_dotenv(cf.path.parent / ".env")
    env_vals = {k: e.value for k, e in dotenv.items()}
    env = svc.data.get("environment")
    raw: str | None = None
    line = 0
    passthrough = False
    if isinstance(env, dict) and key in env:
        raw, line = ("" if env[key] is None else str(env[key])), svc.line("environment", key)
        passthrough = env[key] is None
    elif isinstance(env, list):
        for i, item in enumerate(env):
            if isinstance(item, str) and item.split("=", 1)[0].strip() == key:
                passthrough = "=" not in item
                raw = item.split("=", 1)[1] if "=" in item else ""
                line = svc.line("environment", i)
    if raw is not None:
        if passthrough:
            if key in dotenv:
                e = dotenv[key]
                return EnvValue(e.value, cf.path.parent / ".env", e.line, [], key)
            return EnvValue("", cf.path, line, [key], "")
        r = interpolate(raw, env_vals)
        # `${VAR}` alone: the value is written at VAR's .env line; point there.
        m = re.fullmatch(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)(?:[:?+-][^}]*)?\}?", raw.strip())
        if m and m.group(1) in dotenv and r.value is not None:
            return EnvValue(r.value, cf.path.parent / ".env", dotenv[m.group(1)].line, [], raw)
        return EnvValue(r.value if r.value is not None else raw, cf.path, line,
                        r.deploy_time, raw)
    env_files = svc.data.get("env_file")
    if isinstance(env_files, str):
        env_files = [env_files]
    found: EnvValue | None = None
    for ef in env_files if isinstance(env_files, list) else []:
        ef_path = ef.get("path") if isinstance(ef, dict) else ef
        if not isinstance(ef_path, str):
            continue
        p = cf.path.parent / ef_path
        vals = read_dotenv(p)
        if key in vals:
            found = EnvValue(vals[key].value, p, vals[key].line, [], vals[key].value)
    return found
