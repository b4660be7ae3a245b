"""Render the bundled Matrix/Element stack for one deployment.

The templates live in ``assets/stack`` (``*.j2``; ``elematrix_tui/bundled.py`` finds the
folder in a checkout and in an installed wheel). They are rendered in a Jinja2 sandbox
with undefined names as errors, into a fresh directory that then replaces the previous
rendering; the previous one is kept beside it (``<out_dir>.previous``) and a unified diff
against it is returned, with every secret value masked, so an operator can review what
changes before anything is uploaded.

Only a rendering is ever replaced or removed: each one carries a marker file (``MARKER``),
and a directory without it (the operator's own files) is refused, never moved aside or
deleted. A directory rendered before the marker existed is recognised by holding only
files the templates produce.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import shlex
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from ..bundled import assets_dir
from .layout import SYNAPSE_OWNER, StackLayout, bundled_layout, chown_entrypoint
from .values import DB_POOL_MAX, SECRET_NAMES, StackValues

# Rendered files that hold a secret (mode 0600); everything else is 0644, scripts 0755.
# (The last two are a worker deployment's: stack/workers.py.)
SECRET_FILES: frozenset[str] = frozenset({"synapse/homeserver.yaml", "postgres.env",
                                          "synapse/workers.yaml", "redis/redis.conf"})
EXECUTABLE_FILES: frozenset[str] = frozenset({"backup.sh", "restore.sh"})
# The product's operational files: rendered for the bundled stack and, from the facts of
# its layout (stack/layout.py), for an operator's own stack (stack.adapt).
OPS_FILES: tuple[str, ...] = ("backup.sh", "restore.sh", "systemd/elematrix-backup.service",
                              "systemd/elematrix-backup.timer",
                              "systemd/elematrix-stack.service")
MASK = "********"
# Written into every rendering: the proof that the directory is ours to replace. Not a
# template output, so never diffed, and ssh.upload leaves it behind.
MARKER = ".elematrix-rendering"
_MARKER_TEXT = ("Written by elematrix stack.render. This directory is replaced by the next "
                "rendering; keep nothing of your own here.\n")


class RenderError(ValueError):
    """The values or secrets cannot produce a stack (message says which and why)."""


class NotARendering(RenderError):
    """out_dir (or its .previous) holds files no rendering wrote: never replaced."""


@dataclass
class RenderResult:
    """What a rendering produced and how it differs from the previous one."""

    path: Path
    files: list[str]
    changed_files: list[str]
    # Unified diff against the previous rendering, secrets masked; empty when unchanged.
    diff: list[str] = field(default_factory=list)
    previous: Path | None = None

    @property
    def changed(self) -> bool:
        return bool(self.changed_files)


def template_root() -> Traversable:
    """The bundled templates, from the source tree or an installed wheel."""
    return assets_dir() / "stack"


def _walk(root: Traversable, prefix: str = "") -> Iterator[tuple[str, Traversable]]:
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        rel = f"{prefix}{entry.name}"
        if entry.is_dir():
            yield from _walk(entry, rel + "/")
        elif entry.name.endswith(".j2"):
            yield rel[: -len(".j2")], entry


def _q(value: object) -> str:
    # A JSON string is a valid YAML double-quoted scalar: safe for any brand or secret.
    return json.dumps(str(value), ensure_ascii=False)


def _unit(value: object) -> str:
    # systemd expands % specifiers and ends a value at a newline.
    return str(value).replace("%", "%%").replace("\n", " ")


def _tojson_pretty(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    env.filters["q"] = _q
    env.filters["sh"] = lambda v: shlex.quote(str(v))
    env.filters["unit"] = _unit
    env.filters["tojson_pretty"] = _tojson_pretty
    return env


def element_config(v: StackValues) -> dict[str, Any]:
    """Element Web's white-label ``config.json`` as a dict."""
    base = v.public_baseurl.rstrip("/")
    cfg: dict[str, Any] = {
        "default_server_config": {
            "m.homeserver": {"base_url": base, "server_name": v.server_name},
        },
        "brand": v.brand,
        "default_theme": v.theme,
        "disable_guests": True,
        "disable_custom_urls": True,
        "disable_3pid_login": True,
        "show_labs_settings": False,
        "room_directory": {"servers": [v.server_name]},
        "setting_defaults": {"UIFeature.feedback": False},
    }
    if v.logo_url:
        cfg["branding"] = {"auth_header_logo_url": v.logo_url}
    if v.welcome_url:
        cfg["embedded_pages"] = {"welcome_url": v.welcome_url}
    return cfg


# Files only a stack with its own PostgreSQL container has: the container's environment,
# and restore.sh, which loads a dump into that container (a database on RDS is restored
# from RDS's own snapshots or point-in-time recovery, not by this script).
CONTAINER_DB_FILES = frozenset({"postgres.env", "restore.sh"})
_DB_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})")


@dataclass(frozen=True)
class Database:
    """The PostgreSQL server Synapse's ``database:`` names. The default is the stack's own
    container; ``external`` is a server outside the stack (RDS): then no container, no
    ``postgres.env``, and backup.sh leaves the database to that server's own backups."""

    host: str = "postgres"
    port: int = 5432
    # psycopg2's sslmode; empty: libpq's default (prefer), as on the stack's own network.
    sslmode: str = ""
    external: bool = False

    def __post_init__(self) -> None:
        # Written into homeserver.yaml and backup.sh as they are: a host name, nothing else.
        if not _DB_HOST.fullmatch(self.host):
            raise RenderError(f"database host {self.host!r} is not a host name")
        if self.sslmode not in ("", "disable", "require"):
            raise RenderError(f"database sslmode {self.sslmode!r}: use require or disable "
                              "(verify-ca/verify-full need a CA bundle in the containers)")


def _context(v: StackValues, secrets: Mapping[str, str],
             layout: StackLayout | None = None,
             db: Database | None = None) -> dict[str, Any]:
    lay = layout or bundled_layout(v)
    return {
        "v": v,
        "s": dict(secrets),
        "l": lay,
        "db": db or Database(),
        "db_pool_max": DB_POOL_MAX,
        "owner": SYNAPSE_OWNER,
        "element_config": element_config(v),
        "synapse_entrypoint": chown_entrypoint(list(lay.synapse_writes)),
    }


def _values(values: Mapping[str, Any] | StackValues) -> StackValues:
    try:
        return values if isinstance(values, StackValues) else StackValues.model_validate(values)
    except ValueError as e:
        raise RenderError(f"invalid stack values: {e}") from e


def render_ops(values: Mapping[str, Any] | StackValues, layout: StackLayout) -> dict[str, str]:
    """Render only the operational files (``OPS_FILES``) for a stack of this layout: the
    same templates as the bundled rendering, so there is one backup.sh. Writes nothing."""
    v = _values(values)
    env = _environment()
    ctx = _context(v, {}, layout)
    templates = dict(_walk(template_root()))
    out: dict[str, str] = {}
    for rel in OPS_FILES:
        tmpl = env.from_string(templates[rel].read_text(encoding="utf-8"), globals=None)
        tmpl.name = rel
        out[rel] = tmpl.render(ctx)
    return out


def render_files(values: Mapping[str, Any] | StackValues,
                 secrets: Mapping[str, str], db: Database | None = None) -> dict[str, str]:
    """Render every template to text, keyed by relative path. Writes nothing.

    ``db`` names an external PostgreSQL server (:class:`Database`); the default is the
    stack's own container."""
    v = _values(values)
    missing = [n for n in SECRET_NAMES if not secrets.get(n)]
    if missing:
        raise RenderError(f"missing secrets: {', '.join(missing)}")
    for name in SECRET_NAMES:
        value = secrets[name]
        # Secrets land in YAML, env files and URLs: keep them to a safe alphabet.
        if not all(c.isalnum() or c in "-_." for c in value) or len(value) < 16:
            raise RenderError(f"secret {name} must be >= 16 characters of [A-Za-z0-9._-]")
    env = _environment()
    ctx = _context(v, secrets, db=db)
    out: dict[str, str] = {}
    for rel, entry in _walk(template_root()):
        if db is not None and db.external and rel in CONTAINER_DB_FILES:
            continue
        tmpl = env.from_string(entry.read_text(encoding="utf-8"), globals=None)
        tmpl.name = rel
        out[rel] = tmpl.render(ctx)
    return out


# Lines of the rendered files that carry a secret, whatever its value (the previous
# rendering may hold secrets that are no longer in the keyring). Blanks, not \s: an empty
# `POSTGRES_PASSWORD=` must not take the next line as its value (and mask it).
_SECRET_LINE = re.compile(
    r"^(?P<key>\s*(?:registration_shared_secret|macaroon_secret_key|form_secret|password|"
    r"POSTGRES_PASSWORD|worker_replication_secret|requirepass)[ \t]*[:= ][ \t]*)"
    r"(?P<value>\S.*)$", re.M)


def _secret_lines(text: str) -> dict[str, str]:
    return {m.group("key").strip(): m.group("value") for m in _SECRET_LINE.finditer(text)}


def _mask(text: str, secrets: Mapping[str, str], changed: frozenset[str] = frozenset()) -> str:
    """Replace every secret in text by MASK; a rotated one reads MASK (changed)."""
    def line(m: re.Match[str]) -> str:
        note = " (changed)" if m.group("key").strip() in changed else ""
        return f'{m.group("key")}"{MASK}{note}"'

    text = _SECRET_LINE.sub(line, text)
    for value in sorted((s for s in secrets.values() if s), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def _read_tree(root: Path) -> dict[str, str]:
    if not root.is_dir():
        return {}
    out: dict[str, str] = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.relative_to(root).as_posix() != MARKER:
            out[p.relative_to(root).as_posix()] = p.read_text(encoding="utf-8", errors="replace")
    return out


def is_rendering(path: Path) -> bool:
    """Whether ``path`` is a directory a rendering wrote (and so may be replaced)."""
    if (path / MARKER).is_file():
        return True
    # Renderings made before the marker: nothing in them but files the templates produce.
    names = {rel for rel, _ in _walk(template_root())}
    files = [p for p in path.rglob("*") if not p.is_dir()]
    return bool(files) and all(p.relative_to(path).as_posix() in names for p in files)


def _may_replace(path: Path) -> None:
    """Refuse to move aside or delete a directory that is not a rendering."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink() and (not any(path.iterdir())
                                                     or is_rendering(path)):
        return
    raise NotARendering(f"{path} is not written by a rendering (no {MARKER} in it) and is "
                        f"not empty: it is never replaced or deleted")


def diff_trees(old: Mapping[str, str], new: Mapping[str, str],
               secrets: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(changed file names, unified diff lines) between two renderings, secrets masked."""
    changed: list[str] = []
    lines: list[str] = []
    for rel in sorted(set(old) | set(new)):
        a, b = old.get(rel), new.get(rel)
        if a == b:
            continue
        changed.append(rel)
        old_s, new_s = _secret_lines(a or ""), _secret_lines(b or "")
        rotated = frozenset(k for k in new_s if k in old_s and old_s[k] != new_s[k])
        a_lines = _mask(a, secrets).splitlines() if a is not None else []
        b_lines = _mask(b, secrets, rotated).splitlines() if b is not None else []
        lines.extend(difflib.unified_diff(
            a_lines, b_lines,
            fromfile=f"a/{rel}" if a is not None else "/dev/null",
            tofile=f"b/{rel}" if b is not None else "/dev/null",
            lineterm="",
        ))
    return changed, lines


def _mode(rel: str) -> int:
    if rel in SECRET_FILES:
        return 0o600
    if rel in EXECUTABLE_FILES:
        return 0o755
    return 0o644


def write_tree(root: Path, files: Mapping[str, str]) -> None:
    """Write files under root with their modes (secret files never exist with wider mode)."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    for rel, text in {**files, MARKER: _MARKER_TEXT}.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        # Create with the final mode: a secret is never readable by others, not even briefly.
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _mode(rel))
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(p, _mode(rel))


def plan_render(values: Mapping[str, Any] | StackValues, secrets: Mapping[str, str],
                out_dir: Path, files: Mapping[str, str] | None = None,
                ) -> tuple[dict[str, str], list[str], list[str]]:
    """Render in memory and compare with what is in out_dir: (files, changed, diff).

    ``files``: an already rendered tree (a worker deployment's, stack/workers.py) instead
    of the bundled templates' rendering.
    """
    _may_replace(Path(out_dir))
    files = dict(files) if files is not None else render_files(values, secrets)
    changed, diff = diff_trees(_read_tree(out_dir), files, secrets)
    if not changed:
        # Content equal; a wrong mode on a secret file is a change too.
        for rel in SECRET_FILES & set(files):
            p = out_dir / rel
            if p.exists() and stat.S_IMODE(p.stat().st_mode) != 0o600:
                changed.append(rel)
    return files, changed, diff


def swap_in(out_dir: Path, fill: Callable[[Path], None]) -> None:
    """Write a new tree with ``fill(tmp)`` in a temporary sibling (0700), then swap it in by
    renames; the tree it replaces becomes ``<out_dir>.previous``. Nothing half-written is
    ever at ``out_dir``. The one way a rendering or an adapted copy is put in place."""
    previous = out_dir.with_name(out_dir.name + ".previous")
    if out_dir.exists():
        _may_replace(previous)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
    try:
        fill(tmp)
        if out_dir.exists():
            if previous.exists():
                shutil.rmtree(previous)
            out_dir.rename(previous)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def render_stack(values: Mapping[str, Any] | StackValues, secrets: Mapping[str, str],
                 out_dir: Path, files: Mapping[str, str] | None = None) -> RenderResult:
    """Render the stack into out_dir, keeping the previous rendering as ``<out_dir>.previous``.

    The new tree is written to a temporary sibling directory first and swapped in with
    renames, so out_dir is never half-written. When nothing changed, nothing is touched.
    """
    out_dir = Path(out_dir)
    previous = out_dir.with_name(out_dir.name + ".previous")
    # First of all (in plan_render): a directory of the operator's is never moved or removed.
    files, changed, diff = plan_render(values, secrets, out_dir, files)
    if not changed:
        return RenderResult(out_dir, sorted(files), [], [],
                            previous if previous.exists() else None)
    swap_in(out_dir, lambda tmp: write_tree(tmp, files))
    return RenderResult(out_dir, sorted(files), changed, diff,
                        previous if previous.exists() else None)
