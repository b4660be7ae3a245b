"""Where the product's operational files find things in a compose stack.

``backup.sh``, ``restore.sh`` and the systemd units (``assets/stack/*.j2``) read these
facts and nothing else about the stack: which compose service is Synapse and which is
PostgreSQL, the database and its user, where Synapse keeps its signing key and media
store inside its container, which ``homeserver.yaml`` it mounts, and which paths of the
stack directory Synapse reads (they must belong to its uid). The bundled rendering passes
:func:`bundled_layout`; ``stack.adapt`` passes :func:`layout_of` the operator's stack. One
home for these facts: the scripts are the same templates for both.
"""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .model import Service, Stack, YamlFile, bind_mounts, container_paths, volumes
from .values import StackValues

# The uid:gid Synapse runs as in its image: docker/start.py execs it through
# ``gosu 991:991`` (start.py:211-212, 279-282) unless UID/GID say otherwise.
SYNAPSE_OWNER = "991:991"
# The image's entrypoint (docker/Dockerfile: ENTRYPOINT ["/start.py"]).
SYNAPSE_START = "/start.py"
# Paths written into shell scripts and unit files unquoted by systemd: keep them plain.
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./@+-]+$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class StackLayout:
    """What the operational scripts need to know about one stack."""

    synapse_service: str
    postgres_service: str
    db_name: str
    db_user: str
    # Container paths in the Synapse service.
    signing_key: str
    media_store: str
    # The homeserver.yaml Synapse reads, relative to the stack directory.
    homeserver: str
    # Stack-relative paths mounted into Synapse (a directory: True): uid 991 on the host.
    synapse_owned: tuple[tuple[str, bool], ...]
    # The mount points (container paths) holding the signing key and the media store:
    # Synapse's entrypoint gives them to its uid before start.py (chown_entrypoint).
    synapse_writes: tuple[str, ...] = ()

    @property
    def owners(self) -> dict[str, str]:
        """``ssh.upload``'s ``owners``: every file Synapse reads from the stack directory."""
        return {(f"{p}/*" if is_dir else p): SYNAPSE_OWNER for p, is_dir in self.synapse_owned}

    @property
    def owned_paths(self) -> list[str]:
        """The stack-relative paths the boot unit chowns to Synapse's uid."""
        return [p for p, _ in self.synapse_owned]

    def outputs(self) -> dict[str, Any]:
        """The facts later runbook steps read (upload owners, the signing-key check)."""
        return {"owners": self.owners, "signing_key": self.signing_key,
                "synapse_service": self.synapse_service,
                "postgres_service": self.postgres_service}


def bundled_layout(v: StackValues) -> StackLayout:
    """The bundled stack's layout (assets/stack/docker-compose.yml.j2 mounts these)."""
    return StackLayout(synapse_service="synapse", postgres_service="postgres",
                       db_name="synapse", db_user="synapse",
                       signing_key=f"/data/{v.signing_key_file}", media_store="/media_store",
                       homeserver="synapse/homeserver.yaml",
                       synapse_owned=(("synapse", True),),
                       synapse_writes=("/data", "/media_store"))


def chown_entrypoint(dirs: list[str]) -> str:
    """Synapse's compose ``entrypoint`` that gives its writable directories to its uid first.

    Named volumes (and host directories docker creates) start root-owned, and the image's
    start.py does not chown in ``run`` mode (only in generate/migrate_config), so Synapse
    could not write its signing key or any upload. A JSON list is a valid YAML flow sequence.
    """
    return json.dumps(["/bin/sh", "-c",
                       f"chown {SYNAPSE_OWNER} {' '.join(dirs)} && exec {SYNAPSE_START}"])


class LayoutError(ValueError):
    """One fact the scripts need cannot be read from the stack: (file, line, message)."""

    def __init__(self, problems: list[tuple[Path | None, int, str]]) -> None:
        super().__init__("; ".join(m for _, _, m in problems))
        self.problems = problems


def _mount_of(path: str, mounts: list[str]) -> str | None:
    """The longest mount point holding ``path`` (None: on the container's own layer)."""
    holding = [m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")]
    return max(holding, key=len) if holding else None


def _read_only(svc: Service, index: int) -> bool:
    vols = svc.data.get("volumes")
    v = vols[index] if isinstance(vols, list) and index < len(vols) else None
    if isinstance(v, str):
        parts = v.split(":")
        return len(parts) > 2 and "ro" in parts[2].split(",")
    return isinstance(v, dict) and bool(v.get("read_only"))


def layout_of(stack: Stack, synapse: Service, postgres: Service,
              hs: YamlFile) -> StackLayout:
    """The layout of an operator's stack, read as the doctor reads it (Synapse identified by
    image/command; the homeserver.yaml it mounts). Raises :class:`LayoutError`."""
    problems: list[tuple[Path | None, int, str]] = []
    # The compose project is the uploaded directory: the deploy steps, backup.sh and
    # restore.sh run `docker compose --project-directory <remote_dir>`, which reads the
    # compose file at its top only.
    for svc in (synapse, postgres) if postgres.compose is not synapse.compose else (synapse,):
        if svc.compose.path.parent != stack.root:
            problems.append((svc.compose.path, svc.line(),
                             f"`{svc.name}` is defined in "
                             f"{svc.compose.path.relative_to(stack.root).as_posix()}: the "
                             f"deployment runs docker compose in the stack's top directory; "
                             f"put the compose file there"))
    homeserver: dict[str, Any] = hs.doc.data if isinstance(hs.doc.data, dict) else {}
    homeserver_path = hs.path
    db = homeserver.get("database")
    args = db.get("args") if isinstance(db, dict) else None
    args = args if isinstance(args, dict) else {}

    def path_key(key: str, what: str) -> str:
        val = homeserver.get(key)
        hs_line = hs.doc.line(key, default=0)
        if not isinstance(val, str) or not val.startswith("/"):
            problems.append((homeserver_path, hs_line,
                             f"no absolute {key} in homeserver.yaml: backup.sh and restore.sh "
                             f"must know where {what} is; set it (e.g. {key}: /data/...)"))
            return ""
        if not _SAFE_PATH.match(val):
            problems.append((homeserver_path, hs_line,
                             f"{key} {val!r} has characters the backup scripts do not quote "
                             f"in unit files: use letters, digits and ./_-"))
        return posixpath.normpath(val)

    signing_key = path_key("signing_key_path", "the signing key")
    media_store = path_key("media_store_path", "the media store")
    vols = [(posixpath.normpath(tgt), i) for _src, tgt, kind, i in volumes(synapse)
            if kind in ("bind", "volume") and tgt.startswith("/")]
    writes: list[str] = []
    for key, val in (("signing_key_path", posixpath.dirname(signing_key)),
                     ("media_store_path", media_store)):
        if not val:
            continue
        mount = _mount_of(val, [t for t, _ in vols])
        if mount is None:
            problems.append((homeserver_path, hs.doc.line(key),
                             f"{key} {val} is on no volume of the `{synapse.name}` service: "
                             f"it would be lost when the container is recreated; mount a "
                             f"volume there"))
        elif not any(t == mount and _read_only(synapse, i) for t, i in vols) and \
                mount not in writes:
            writes.append(mount)
    owned: list[tuple[str, bool]] = []
    for host, _tgt in bind_mounts(synapse):
        try:
            rel = host.relative_to(stack.root).as_posix()
        except ValueError:
            continue  # outside the stack: not uploaded; the entrypoint chowns what it writes
        if not host.exists():
            problems.append((synapse.compose.path, synapse.line("volumes"),
                             f"`{synapse.name}` mounts ./{rel}, which is not in your stack: "
                             f"docker would create an empty directory there; add the file"))
            continue
        if not _SAFE_PATH.match(rel):
            problems.append((synapse.compose.path, synapse.line("volumes"),
                             f"`{synapse.name}` mounts ./{rel}: use letters, digits and ./_- "
                             f"in paths the boot unit chowns"))
            continue
        if rel != "." and (rel, host.is_dir()) not in owned:
            owned.append((rel, host.is_dir()))
    if not container_paths(synapse, homeserver_path):
        problems.append((homeserver_path, 0, f"this homeserver.yaml is not mounted into "
                                              f"`{synapse.name}`: mount the one Synapse reads"))
    # psycopg2 takes libpq's `dbname` and its older alias `database` (the bundled
    # homeserver.yaml writes dbname).
    db_key = "dbname" if "dbname" in args else "database"
    for key in (db_key, "user"):
        arg = args.get(key)
        if not isinstance(arg, str) or not arg:
            problems.append((homeserver_path, hs.doc.line("database", default=0),
                             f"no database.args.{key} in homeserver.yaml: backup.sh dumps it"))
        elif not _SAFE_NAME.match(arg):
            problems.append((homeserver_path, hs.doc.line("database", "args", key, default=0),
                             f"database.args.{key} {arg!r}: the backup scripts take plain "
                             f"names (letters, digits, _ . -)"))
    if problems:
        raise LayoutError(problems)
    return StackLayout(synapse_service=synapse.name, postgres_service=postgres.name,
                       db_name=str(args[db_key]), db_user=str(args["user"]),
                       signing_key=signing_key, media_store=media_store,
                       homeserver=homeserver_path.relative_to(stack.root).as_posix(),
                       synapse_owned=tuple(sorted(owned)), synapse_writes=tuple(writes))
