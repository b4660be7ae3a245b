"""Load a stack directory: find its files wherever they are, recognise them, parse them.

Operators' stacks are laid out every which way, so files are recognised by content:
a compose file has ``services:``, a homeserver config has ``server_name`` and
``listeners``/``database``, an Element config has ``default_server_config``, an nginx
file has ``server {``/``location {``/``proxy_pass``. The model they load into is
:mod:`.model`.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import re
from pathlib import Path
from typing import Any, TypeVar

import yaml

from . import nginxconf, yamlpos
from .findings import Finding
from .model import (
    CaddyFile,
    ComposeFile,
    FileCover,
    JsonFile,
    NginxFile,
    Service,
    Stack,
    YamlFile,
    container_paths,
    host_path,
    image_repo,
    service_env,
)

COMPOSE_NAMES = {"docker-compose.yml", "docker-compose.yaml", "compose.yml", "compose.yaml"}
_SKIP_DIRS = {".git", "node_modules", ".venv", "venv", "__pycache__", ".mypy_cache"}
_MAX_BYTES = 2_000_000


# Images by repository (the part after the last '/', before ':' or '@'): a service is
# what it runs, never what it is called (`synapse-admin` is a web UI, not Synapse).
_IMAGE_ROLES: dict[str, str] = {
    "synapse": "synapse",
    "postgres": "postgres", "postgis": "postgres", "postgresql": "postgres",
    "nginx": "nginx", "openresty": "nginx", "nginx-unprivileged": "nginx",
    "element-web": "element",
    "certbot": "certbot", "acme.sh": "certbot", "dns-cloudflare": "certbot",
    "traefik": "traefik",
    "caddy": "caddy",
}
# Without an image (``build:``), only an exact, conventional name says what it is.
_NAME_ROLES: dict[str, str] = {
    "synapse": "synapse", "homeserver": "synapse",
    "postgres": "postgres", "postgresql": "postgres", "db": "postgres", "database": "postgres",
    "nginx": "nginx", "element": "element", "element-web": "element", "certbot": "certbot",
    "traefik": "traefik", "caddy": "caddy",
}


def _role(name: str, data: dict[str, Any]) -> str:
    image = data.get("image")
    command = data.get("command")
    cmd = " ".join(str(c) for c in command) if isinstance(command, list) else str(command or "")
    env = data.get("environment")
    env_keys = set(env) if isinstance(env, dict) else {
        str(e).split("=", 1)[0] for e in env} if isinstance(env, list) else set()
    role = _IMAGE_ROLES.get(image_repo(str(image))) if isinstance(image, str) else None
    if role == "synapse" or "synapse.app." in cmd:
        # Workers run the same image with their own config: not the main process.
        if "SYNAPSE_WORKER" in env_keys or "worker" in cmd:
            return "synapse-worker"
        return "synapse"
    if role:
        return role
    if image is None:
        if env_keys & {"SYNAPSE_CONFIG_PATH", "SYNAPSE_SERVER_NAME"}:
            return "synapse"
        if env_keys & {"POSTGRES_PASSWORD", "POSTGRES_INITDB_ARGS"}:
            return "postgres"
        return _NAME_ROLES.get(name.lower(), "other")
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


_TEMPLATE_MARK = re.compile(r"__[A-Z][A-Z0-9_]*__")
# Files every nginx image ships: an include of them needs nothing from the stack.
_IMAGE_NGINX_FILES = ("mime.types", "fastcgi_params", "fastcgi.conf", "scgi_params",
                      "uwsgi_params", "koi-utf", "koi-win", "win-utf", "modules/")
_NGINX_PREFIX = "/etc/nginx/"
_SYNAPSE_DEFAULT_CONFIG = "/data/homeserver.yaml"


def unrendered_markers(text: str) -> list[str]:
    """``__VAR__`` markers a setup script substitutes: two or more distinct ones mean the
    file is a template that is not rendered yet (its values are not the deployed ones)."""
    marks = sorted(set(_TEMPLATE_MARK.findall(text)))
    return marks if len(marks) >= 2 else []


def _cover(stack: Stack, path: Path, kind: str, status: str, reason: str) -> None:
    rel_path = stack.rel(path)
    for fc in stack.files:
        if fc.file == rel_path and fc.kind == kind:
            fc.status, fc.reason = status, reason
            return
    stack.files.append(FileCover(rel_path, kind, status, reason))


def load_stack(root: Path) -> Stack:
    """Find and parse every relevant file under root (a directory, or a single file), then
    keep what the stack really loads (compose mounts, nginx includes, SYNAPSE_CONFIG_PATH)
    and record in ``stack.files`` what was loaded or skipped, and why."""
    stack = Stack(root if root.is_dir() else root.parent)
    files = _walk(root) if root.is_dir() else [root]
    nginx_candidates: list[NginxFile] = []
    include_only: list[NginxFile] = []
    for p in files:
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError, ValueError):
            continue
        name = p.name.lower()
        if name.endswith(_TEMPLATE_SUFFIXES):
            _cover(stack, p, "template", "skipped", "a Jinja template: not a config until rendered")
            continue
        if name == ".env" or name.endswith(".env"):
            _cover(stack, p, "env", "loaded", "variables for compose interpolation")
        elif name.endswith((".yml", ".yaml")):
            _load_yaml(stack, p, text)
        elif name.endswith(".json"):
            _load_json(stack, p, text)
        elif name == "caddyfile" or name.endswith((".caddyfile", ".caddy")):
            stack.caddy.append(CaddyFile(p, text))
            _cover(stack, p, "caddy", "loaded", "a Caddyfile")
        elif (name.endswith((".conf", ".conf.template", ".nginx", ".template"))
              or "nginx" in [x.lower() for x in p.parts]
              or "sites-enabled" in p.parts or "sites-available" in p.parts):
            if nginxconf.looks_like_nginx(text):
                try:
                    nginx_candidates.append(NginxFile(p, nginxconf.parse(text, p)))
                    _cover(stack, p, "nginx", "loaded", "an nginx config")
                except nginxconf.NginxSyntaxError as e:
                    _parse_problem(stack, p, e.line, "nginx config", str(e))
                    _cover(stack, p, "nginx", "loaded", f"cannot be parsed: {e}")
            else:
                # No server/location of its own (ssl params, snippets): nginx reads it
                # only where an include names it, so it is kept for includes alone.
                try:
                    include_only.append(NginxFile(p, nginxconf.parse(text, p)))
                except nginxconf.NginxSyntaxError:
                    pass
    _drop_templates(stack, nginx_candidates)
    _env_files_used(stack)
    if stack.compose:
        _select_by_mounts(stack, nginx_candidates, include_only)
    else:
        for nf in nginx_candidates:
            nf.context = _file_context(nf)
        stack.nginx = nginx_candidates
        if nginx_candidates or stack.homeservers or stack.elements:
            stack.notes.append("no compose file: every config found is checked as loaded")
    return stack


def _env_files_used(stack: Stack) -> None:
    """An env file is read only as the ``.env`` beside a compose file or as an env_file."""
    used: dict[str, str] = {}
    for cf in stack.compose:
        used.setdefault(stack.rel(cf.path.parent / ".env"), "variables for compose interpolation")
        for svc in cf.services:
            efs = svc.data.get("env_file")
            for ef in efs if isinstance(efs, list) else [efs] if efs else []:
                p = ef.get("path") if isinstance(ef, dict) else ef
                if isinstance(p, str):
                    rel_p = stack.rel(Path(os.path.normpath(cf.path.parent / p)))
                    used.setdefault(rel_p, f"env_file of `{svc.name}`")
    for fc in stack.files:
        if fc.kind == "env":
            if fc.file in used:
                fc.status, fc.reason = "loaded", used[fc.file]
            elif stack.compose:
                fc.status, fc.reason = "skipped", "neither beside a compose file nor an env_file"


def _drop_templates(stack: Stack, nginx_candidates: list[NginxFile]) -> None:
    def keep(path: Path, text: str, kind: str) -> bool:
        marks = unrendered_markers(text)
        if marks:
            _cover(stack, path, kind, "skipped",
                   f"a template not rendered yet (holds {', '.join(marks[:3])}"
                   + (", ..." if len(marks) > 3 else "") + ")")
        return not marks

    stack.homeservers = [h for h in stack.homeservers if keep(h.path, h.doc.text, "homeserver")]
    stack.elements = [e for e in stack.elements if keep(e.path, e.text, "element")]
    kept = []
    for nf in nginx_candidates:
        try:
            text = nf.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            text = ""
        if keep(nf.path, text, "nginx"):
            kept.append(nf)
    nginx_candidates[:] = kept


def _select_by_mounts(stack: Stack, nginx_candidates: list[NginxFile],
                      include_only: list[NginxFile]) -> None:
    # nginx: what each nginx-running service reads, following includes from nginx.conf.
    loaded: dict[Path, NginxFile] = {}
    for svc in stack.services("nginx") + stack.services("element"):
        view: dict[str, NginxFile] = {}
        for nf in nginx_candidates + include_only:
            for cp in container_paths(svc, nf.path):
                view[cp] = nf
                # The nginx images render /etc/nginx/templates/*.template into conf.d.
                if cp.startswith("/etc/nginx/templates/") and cp.endswith(".template"):
                    view["/etc/nginx/conf.d/" + posixpath.basename(cp)[:-9]] = nf
        main = view.get("/etc/nginx/nginx.conf")
        queue: list[tuple[NginxFile, str, str]] = []
        ctx_dir = _build_context(svc)
        if not view and ctx_dir is not None:
            # Built from a Dockerfile and nothing mounted: the configs in the build context
            # are what the image copies in (the Dockerfile itself is not read).
            queue += [(nf, _file_context(nf), "(copied by its build)") for nf in
                      nginx_candidates if ctx_dir == nf.path.parent or ctx_dir in nf.path.parents]
        if main is not None:
            queue.append((main, "main", "/etc/nginx/nginx.conf"))
        else:  # the image's own nginx.conf includes conf.d/*.conf inside http {}
            queue += [(nf, "http", cp) for cp, nf in sorted(view.items(), key=lambda kv: kv[0])
                      if fnmatch.fnmatch(cp, "/etc/nginx/conf.d/*.conf")]
        seen: set[Path] = set()
        while queue:
            nf, context, cp = queue.pop(0)
            if nf.path in seen:
                continue
            seen.add(nf.path)
            nf.context = context
            nf.service = svc.name
            loaded[nf.path] = nf
            _cover(stack, nf.path, "nginx", "loaded", f"read by nginx in `{svc.name}` as {cp}"
                   if cp.startswith("/") else f"read by nginx in `{svc.name}` {cp}")
            for d in nf.root.walk():
                if d.name != "include" or not d.args:
                    continue
                pattern = d.args[0]
                pattern = pattern if pattern.startswith("/") else _NGINX_PREFIX + pattern
                hits = [(c, f) for c, f in view.items() if fnmatch.fnmatch(c, pattern)]
                for c, f in hits:
                    queue.append((f, nginxconf.context_of(d) or context, c))
                if not hits and not any(x in pattern for x in _IMAGE_NGINX_FILES) \
                        and "*" not in pattern:
                    stack.notes.append(
                        f"{stack.rel(nf.path)}:{d.line}: include {d.args[0]} is not in the "
                        "stack (mounted from elsewhere, or missing): not checked")
    for nf in nginx_candidates:
        if nf.path not in loaded:
            _cover(stack, nf.path, "nginx", "skipped",
                   "no service's nginx reads it (not mounted, or no include matches it)")
    stack.nginx = [nf for nf in nginx_candidates + include_only if nf.path in loaded]
    # Synapse reads one config: SYNAPSE_CONFIG_PATH or --config-path, through a mount.
    stack.homeservers = _pick(stack, stack.homeservers, "homeserver", [
        (svc, _synapse_config_path(svc)) for svc in stack.services("synapse")])
    stack.elements = _pick(stack, stack.elements, "element", [
        (svc, "/app/config.json") for svc in stack.services("element")])
    traefik_targets = [(svc, p) for svc in stack.services("traefik")
                       for p in ("/etc/traefik/traefik.yml", "/etc/traefik/traefik.yaml")]
    stack.traefik = _pick(stack, stack.traefik, "traefik", traefik_targets, strict=True)
    caddy_targets = [(svc, "/etc/caddy/Caddyfile") for svc in stack.services("caddy")]
    stack.caddy = _pick(stack, stack.caddy, "caddy", caddy_targets, strict=True)


_F = TypeVar("_F", YamlFile, JsonFile, CaddyFile)


def _pick(stack: Stack, found: list[_F], kind: str, targets: list[tuple[Service, str]],
          strict: bool = False) -> list[_F]:
    """The files of ``found`` that a service reads at one of ``targets``; the others are
    skipped. With no service to tell (and not ``strict``), every file found is kept."""
    wanted: dict[Path, str] = {}
    for svc, cpath in targets:
        hp = host_path(svc, cpath)
        if hp is not None:
            wanted.setdefault(hp, f"read by `{svc.name}` as {cpath}")
    if not wanted and not strict:
        if targets and found:
            stack.notes.append(f"{kind}: no mount tells which file is read: all checked")
        return found
    out = []
    for f in found:
        if f.path in wanted:
            _cover(stack, f.path, kind, "loaded", wanted[f.path])
            out.append(f)
        else:
            _cover(stack, f.path, kind, "skipped",
                   "no service mounts it where it is read" + (
                       f" (read instead: {', '.join(stack.rel(p) for p in wanted)})"
                       if wanted else ""))
    for hp, why in wanted.items():
        if not hp.is_file() and kind in ("homeserver", "element"):
            stack.notes.append(f"{kind}: {stack.rel(hp)} ({why}) is not in the stack "
                               "(generated at first start, or missing): its rules did not run")
    return out


def _build_context(svc: Service) -> Path | None:
    build = svc.data.get("build")
    ctx = build.get("context") if isinstance(build, dict) else build
    if not isinstance(ctx, str) or "://" in ctx:
        return None
    return Path(os.path.normpath(svc.compose.path.parent / ctx))


def _file_context(nf: NginxFile) -> str:
    return "main" if any(d.name in ("http", "events") for d in nf.root.block or []) else "http"


def _synapse_config_path(svc: Service) -> str:
    cmd = svc.data.get("command")
    text = " ".join(str(c) for c in cmd) if isinstance(cmd, list) else str(cmd or "")
    m = re.search(r"(?:--config-path[= ]|-c\s+)(\S+)", text)
    if m:
        return m.group(1)
    ev = service_env(svc, "SYNAPSE_CONFIG_PATH")
    if ev is not None and ev.checked and ev.value.startswith("/"):
        return ev.value
    return _SYNAPSE_DEFAULT_CONFIG


def _load_yaml(stack: Stack, p: Path, text: str) -> None:
    try:
        doc = yamlpos.load(text)
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        mark = getattr(e, "problem_mark", None)
        if p.name.lower() in COMPOSE_NAMES or re.search(r"^(services|server_name):", text, re.M):
            _cover(stack, p, "yaml", "loaded", "cannot be parsed")
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
        _cover(stack, p, "compose", "loaded", "a compose file")
    elif "server_name" in data and ("listeners" in data or "database" in data
                                    or p.name.startswith("homeserver")):
        stack.homeservers.append(YamlFile(p, doc))
        _cover(stack, p, "homeserver", "loaded", "a Synapse config")
    elif ("entryPoints" in data or "certificatesResolvers" in data) and (
            "providers" in data or "entryPoints" in data):
        stack.traefik.append(YamlFile(p, doc))
        _cover(stack, p, "traefik", "loaded", "a Traefik static config")


def _load_json(stack: Stack, p: Path, text: str) -> None:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        if isinstance(e, RecursionError):
            return
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
    _cover(stack, p, "element", "loaded", "an Element config")
