"""A stack directory as the doctor sees it: its files, found wherever they are, parsed.

Operators' stacks are laid out every which way, so files are recognised by content:
a compose file has ``services:``, a homeserver config has ``server_name`` and
``listeners``/``database``, an Element config has ``default_server_config``, an nginx
file has ``server {``/``location {``/``proxy_pass``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import nginxconf, yamlpos
from .findings import Finding, rel

COMPOSE_NAMES = {"docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml"}
_SKIP_DIRS = {".git", "node_modules", ".venv", "venv", "__pycache__", ".mypy_cache"}
_MAX_BYTES = 2_000_000


@dataclass
class Service:
    """One compose service, with the role the doctor guessed for it."""

    name: str
    data: dict[str, Any]
    compose: ComposeFile
    role: str  # postgres | synapse | nginx | element | certbot | other

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


@dataclass
class Stack:
    root: Path
    compose: list[ComposeFile] = field(default_factory=list)
    homeservers: list[YamlFile] = field(default_factory=list)
    elements: list[JsonFile] = field(default_factory=list)
    nginx: list[NginxFile] = field(default_factory=list)
    problems: list[Finding] = field(default_factory=list)

    def rel(self, path: Path) -> str:
        return rel(path, self.root)

    def services(self, role: str) -> list[Service]:
        return [s for c in self.compose for s in c.services if s.role == role]

    @property
    def homeserver(self) -> YamlFile | None:
        return self.homeservers[0] if self.homeservers else None


def _role(name: str, data: dict[str, Any]) -> str:
    image = str(data.get("image", "")).lower()
    n = name.lower()
    for role, words in (
        ("certbot", ("certbot", "letsencrypt", "acme")),
        ("postgres", ("postgres", "postgis")),
        ("synapse", ("synapse",)),
        ("element", ("element-web", "element")),
        ("nginx", ("nginx", "openresty")),
    ):
        if any(w in image for w in words):
            return role
    for role, names in (
        ("certbot", ("certbot",)),
        ("postgres", ("postgres", "db", "database", "postgresql")),
        ("synapse", ("synapse", "homeserver", "matrix")),
        ("element", ("element", "element-web", "web")),
        ("nginx", ("nginx", "proxy", "web-proxy", "reverse-proxy")),
    ):
        if n in names:
            return role
    return "other"


def _parse_problem(stack: Stack, path: Path, line: int, what: str, err: str) -> None:
    stack.problems.append(Finding(
        "EM000", "error", stack.rel(path), line, f"{what} cannot be parsed",
        f"{err}; the service reading it will refuse to start, and the doctor cannot check it",
        "fix the syntax error at this line"))


class TooManyFiles(ValueError):
    """The directory is far larger than a stack: the operator pointed at the wrong place."""


_MAX_FILES = 20_000
_TEMPLATE_SUFFIXES = (".j2", ".jinja", ".jinja2", ".tmpl.j2")


def _walk(root: Path) -> list[Path]:
    out: list[Path] = []
    seen = 0
    # os.walk tolerates entries vanishing under it (/proc) and never follows symlinks.
    for dirpath, dirnames, filenames in os.walk(root, onerror=lambda _e: None):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in _SKIP_DIRS and not d.endswith(".previous"))
        for name in sorted(filenames):
            seen += 1
            if seen > _MAX_FILES:
                raise TooManyFiles(
                    f"{root} holds more than {_MAX_FILES} files: give the stack's own directory")
            p = Path(dirpath) / name
            try:
                if p.is_file() and not p.is_symlink() and p.stat().st_size <= _MAX_BYTES:
                    out.append(p)
            except OSError:
                continue
    return out


def load_stack(root: Path) -> Stack:
    """Find and parse every relevant file under root (a directory, or a single file)."""
    stack = Stack(root if root.is_dir() else root.parent)
    files = _walk(root) if root.is_dir() else [root]
    for p in files:
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        name = p.name.lower()
        if name.endswith(_TEMPLATE_SUFFIXES):
            continue  # Jinja templates are not configs yet (render them first)
        if name.endswith((".yml", ".yaml")):
            _load_yaml(stack, p, text)
        elif name.endswith(".json"):
            _load_json(stack, p, text)
        elif (name.endswith((".conf", ".conf.template", ".nginx"))
              or "nginx" in [x.lower() for x in p.parts]
              or "sites-enabled" in p.parts or "sites-available" in p.parts):
            if nginxconf.looks_like_nginx(text):
                try:
                    stack.nginx.append(NginxFile(p, nginxconf.parse(text, p)))
                except nginxconf.NginxSyntaxError as e:
                    _parse_problem(stack, p, e.line, "nginx config", str(e))
    return stack


def _load_yaml(stack: Stack, p: Path, text: str) -> None:
    try:
        doc = yamlpos.load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        if p.name.lower() in COMPOSE_NAMES or re.search(r"^(services|server_name):", text, re.M):
            _parse_problem(stack, p, mark.line + 1 if mark else 1, "YAML file", str(e))
        return
    data = doc.data
    if not isinstance(data, dict):
        return
    if isinstance(data.get("services"), dict):
        cf = ComposeFile(p, doc)
        for name, sdata in data["services"].items():
            if isinstance(sdata, dict):
                cf.services.append(Service(str(name), sdata, cf, _role(str(name), sdata)))
        stack.compose.append(cf)
    elif "server_name" in data and ("listeners" in data or "database" in data
                                    or p.name.startswith("homeserver")):
        stack.homeservers.append(YamlFile(p, doc))


def _load_json(stack: Stack, p: Path, text: str) -> None:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if "default_server_config" in text or "default_hs_url" in text:
            _parse_problem(stack, p, e.lineno, "Element config.json", e.msg)
        return
    if not isinstance(data, dict) or not ("default_server_config" in data
                                          or "default_hs_url" in data):
        return
    try:
        doc: yamlpos.Doc | None = yamlpos.load(text)
    except yaml.YAMLError:
        doc = None
    stack.elements.append(JsonFile(p, data, text, doc))


def env_file_values(path: Path) -> dict[str, tuple[str, int]]:
    """KEY=VALUE lines of an env file: {key: (value, line)}."""
    out: dict[str, tuple[str, int]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return out
    for i, ln in enumerate(lines, 1):
        s = ln.strip()
        if not s or s.startswith("#") or "=" not in s:
            continue
        k, v = s.split("=", 1)
        k = k.strip().removeprefix("export ").strip()
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
            v = v[1:-1]
        out[k] = (v, i)
    return out


@dataclass
class EnvValue:
    """A service's environment variable, resolved, with where it is written."""

    value: str
    file: Path
    line: int


def service_env(svc: Service, key: str) -> EnvValue | None:
    """Resolve ``key`` of a service: ``environment`` (mapping or list), then ``env_file``.

    A ``${VAR}`` value is looked up in the ``.env`` beside the compose file, as compose does.
    """
    cf = svc.compose
    env = svc.data.get("environment")
    found: EnvValue | None = None
    if isinstance(env, dict) and key in env:
        found = EnvValue("" if env[key] is None else str(env[key]), cf.path,
                         svc.line("environment", key))
    elif isinstance(env, list):
        for i, item in enumerate(env):
            if isinstance(item, str) and item.split("=", 1)[0] == key:
                found = EnvValue(item.split("=", 1)[1] if "=" in item else "", cf.path,
                                 svc.line("environment", i))
    if found is None:
        env_files = svc.data.get("env_file")
        if isinstance(env_files, str):
            env_files = [env_files]
        for ef in env_files or []:
            ef_path = ef.get("path") if isinstance(ef, dict) else ef
            if not isinstance(ef_path, str):
                continue
            p = (cf.path.parent / ef_path)
            vals = env_file_values(p)
            if key in vals:
                found = EnvValue(vals[key][0], p, vals[key][1])
    if found is not None:
        m = re.fullmatch(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)(?::?-[^}]*)?\}?", found.value)
        if m:
            dotenv = env_file_values(cf.path.parent / ".env")
            if m.group(1) in dotenv:
                v, ln = dotenv[m.group(1)]
                return EnvValue(v, cf.path.parent / ".env", ln)
    return found
