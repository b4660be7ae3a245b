"""``ssh.upload``: copy a rendered directory to the host, only what differs, with modes and
owners (cut from ``ssh.py``, whose connection helpers it shares).

``check`` reads the host's facts in one command (sha256, mode, owner of every file) and
names each file that would be created, updated, chmodded or chowned; ``apply`` changes
exactly those. See ``docs/ssh.md``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shlex
import stat
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from ..engine.action import Action, ActionFailed, Check, Result, StepContext
from ..engine.containment import DeploymentPath, deployment_path
from . import sshconn
from .hostfacts import CHANGE_NOTE
from .ssh import SshInputs, _on_this_machine, _remaining, _tail_lines, _target, build_command
from .sshconn import ChannelOpenError, Connection

# --------------------------------------------------------------------------------------
# ssh.upload
# --------------------------------------------------------------------------------------
MODE_RE = re.compile(r"0?[0-7]{3}")  # fullmatch: "644\n" is not a mode
# Numeric only: stat(1) on the host prints numbers, and a name may not exist there yet
# (Synapse's uid 991 has no entry in the host's passwd).
OWNER_RE = re.compile(r"[0-9]{1,10}:[0-9]{1,10}")


class UploadInputs(SshInputs):
    # A local directory inside the deployment's directory (relative paths start there).
    source: DeploymentPath
    # The remote directory (created when missing).
    dest: str
    # Glob (on the path relative to source, or on the file name) -> octal mode, first wins.
    modes: dict[str, str] = Field(default_factory=dict)
    # Files no glob names: None keeps each source file's own mode; a mode given here never
    # adds group/other bits the source lacks (a 0600 key stays 0600).
    default_mode: str | None = None
    # Write as root (dest not writable by the SSH user, e.g. /opt/...): files are staged in
    # a private temp dir, then installed with 'sudo -n install -m MODE' and renamed.
    sudo: bool = False
    # 'uid:gid' (numeric) of every uploaded file; None: whoever writes it (the SSH user, or
    # root under sudo). Only root can give a file away: needs sudo.
    owner: str | None = None
    # Glob -> 'uid:gid', like ``modes`` (first wins); files no glob names get ``owner``.
    owners: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _modes(self) -> UploadInputs:
        for m in [*self.modes.values(), *([self.default_mode] if self.default_mode else [])]:
            if not MODE_RE.fullmatch(m):
                raise ValueError(f"mode {m!r} must be octal like '0600' or '644'")
        for o in [*self.owners.values(), *([self.owner] if self.owner else [])]:
            if not OWNER_RE.fullmatch(o):
                raise ValueError(f"owner {o!r} must be numeric 'uid:gid' like '991:991'")
        if (self.owner or self.owners) and not self.sudo:
            raise ValueError("owner/owners need sudo: true (only root can give a file away)")
        if not self.dest or self.dest.strip() in {"/", "~"}:
            raise ValueError("dest must be a directory below / (not / itself)")
        return self


def _glob_mode(rel: str, path: Path, inputs: UploadInputs) -> int | None:
    for pattern, m in inputs.modes.items():
        if fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(path.name, pattern):
            return int(m, 8)
    return None


def _upload_owner(rel: str, path: Path, inputs: UploadInputs) -> str | None:
    """The 'uid:gid' a file gets on the host (None: not managed)."""
    for pattern, o in inputs.owners.items():
        if fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(path.name, pattern):
            return o
    return inputs.owner


def _upload_mode(rel: str, path: Path, inputs: UploadInputs) -> int:
    """The mode a file gets on the host: its glob's, else the source's (see default_mode)."""
    named = _glob_mode(rel, path, inputs)
    if named is not None:
        return named  # named for this file by the runbook's author: as written
    source = stat.S_IMODE(path.stat().st_mode)
    if inputs.default_mode is None:
        return source
    # SFTP and install(1) would otherwise publish a 0600 secret as 0644.
    return int(inputs.default_mode, 8) & (0o700 | (source & 0o077))


def _dest(dest: str, conn: Connection) -> str:
    """The destination as both the shell and SFTP understand it.

    ``~/x`` is not expanded once quoted, so it becomes ``x``: a relative path, which the
    login shell and SFTP both resolve from the user's home.
    """
    if conn.target.local:
        return os.path.expanduser(dest).rstrip("/") or "/"
    if dest.startswith("~/"):
        dest = dest[2:]
    return dest.rstrip("/") or "/"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _parse_sha(stdout: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        if len(line) > 66 and line[64:66] in ("  ", " *"):
            name = line[66:]
            if name.startswith("./"):
                name = name[2:]
            out[name] = line[:64]
    return out


def _attrs_match(seen: tuple[int, str] | None, mode: int, owner: str | None) -> bool:
    """The host's mode (and owner, when the step manages it) are the wanted ones."""
    return seen is not None and seen[0] == mode and (owner is None or seen[1] == owner)


def _parse_stat(stdout: str) -> dict[str, tuple[int, str]]:
    """``stat -c '%a %u:%g %n'`` lines -> {name: (mode, 'uid:gid')}."""
    out: dict[str, tuple[int, str]] = {}
    for line in stdout.splitlines():
        mode, _, rest = line.partition(" ")
        owner, _, name = rest.partition(" ")
        if mode.isdigit() and OWNER_RE.fullmatch(owner) and name:
            out[name[2:] if name.startswith("./") else name] = (int(mode, 8), owner)
    return out


class Upload(Action[UploadInputs]):
    """Copy a rendered directory to the host: only files that differ, atomically, with modes."""

    name = "ssh.upload"
    Inputs = UploadInputs
    check_first = True

    def local_effects(self, with_: dict[str, Any]) -> list[str]:
        return _on_this_machine(with_, f"writes files into {with_.get('dest')}")

    def describe(self, inputs: UploadInputs) -> str:
        return f"upload {inputs.source} to {inputs.host}:{inputs.dest}"

    # -- planning ----------------------------------------------------------------------
    def _source(self, ctx: StepContext, inputs: UploadInputs) -> Path:
        # Uploads come only from the deployment's own directory: never ~/.ssh or the like.
        src = deployment_path(ctx.deployment_dir, inputs.source, what="source")
        if not src.is_dir():
            raise ActionFailed(f"source {src} is not a directory",
                               diagnosis="There is nothing to upload at that path.",
                               fix="Render the stack first (stack.render), or fix 'source'.")
        return src

    def _local_files(self, src: Path, inputs: UploadInputs) -> dict[str, tuple[Path, int]]:
        from ..stack.render import MARKER

        files: dict[str, tuple[Path, int]] = {}
        for p in sorted(src.rglob("*")):
            if not p.is_file():
                continue
            rel = p.relative_to(src).as_posix()
            if rel == MARKER:  # the renderer's own bookkeeping stays on this machine
                continue
            files[rel] = (p, _upload_mode(rel, p, inputs))
        return files

    def _remote_state(self, ctx: StepContext, conn: Connection, dest: str,
                      names: list[str], sudo: bool
                      ) -> tuple[dict[str, str], dict[str, tuple[int, str]]]:
        """Checksums, modes and owners of the files that exist on the host, in one command."""
        if not names:
            return {}, {}
        quoted = " ".join(shlex.quote(f"./{n}") for n in names)
        # Missing files make sha256sum/stat complain on stderr: that just means "create".
        cmd = (f"cd {shlex.quote(dest)} 2>/dev/null || exit 0; "
               f"sha256sum -- {quoted} 2>/dev/null; echo '::stat::'; "
               f"stat -c '%a %u:%g %n' -- {quoted} 2>/dev/null; exit 0")
        cmd = build_command(cmd, {}, sudo, conn.target.local)
        res = conn.exec(cmd, timeout=_remaining(ctx, 120.0), cancel=ctx.cancel,
                        sink=lambda line, stream: None)
        if res.exit_code != 0 or res.dropped or res.timed_out:
            raise ActionFailed(f"cannot read checksums under {dest} on {conn.target}",
                               diagnosis=_tail_lines(res.stderr) or "the command failed",
                               fix="Check that 'sha256sum' and 'stat' exist on the host.")
        sha_part, _, stat_part = res.stdout.partition("::stat::\n")
        return _parse_sha(sha_part), _parse_stat(stat_part)

    def _plan(self, ctx: StepContext, inputs: UploadInputs,
              conn: Connection) -> tuple[dict[str, tuple[Path, int]], list[str], list[str],
                                         list[str], list[str]]:
        src = self._source(ctx, inputs)
        files = self._local_files(src, inputs)
        sums, modes = self._remote_state(ctx, conn, _dest(inputs.dest, conn), list(files),
                                         inputs.sudo)
        create, update, chmod, same = [], [], [], []
        for rel, (path, mode) in files.items():
            if rel not in sums:
                create.append(rel)
            elif sums[rel] != _sha256(path):
                update.append(rel)
            elif not _attrs_match(modes.get(rel), mode, _upload_owner(rel, path, inputs)):
                chmod.append(rel)
            else:
                same.append(rel)
        return files, create, update, chmod, same

    @staticmethod
    def _changes(files: dict[str, tuple[Path, int]], dest: str, create: list[str],
                 update: list[str], chmod: list[str], inputs: UploadInputs) -> list[str]:
        def attrs(r: str) -> str:
            owner = _upload_owner(r, files[r][0], inputs)
            return f"{files[r][1]:04o}" + (f", owner {owner}" if owner else "")

        return ([f"create {dest}/{r} (mode {attrs(r)})" for r in create]
                + [f"update {dest}/{r} (content differs)" for r in update]
                + [f"chmod {dest}/{r} to {attrs(r)}" for r in chmod])

    def check(self, ctx: StepContext, inputs: UploadInputs) -> Check:
        try:
            target = _target(ctx, inputs)
            given = sshconn.parse_fingerprints(inputs.host_key_fingerprints)
            conn = sshconn.connection(ctx, target, given, interactive=False)
            files, create, update, chmod, same = self._plan(ctx, inputs, conn)
        except (ActionFailed, ChannelOpenError) as e:
            return Check(in_sync=None,
                         changes=[f"{self.describe(inputs)} (cannot compare now: {e})"])
        changes = self._changes(files, _dest(inputs.dest, conn), create, update, chmod,
                               inputs)
        outputs = {"uploaded": [], "skipped": same, "chmodded": []}
        return Check(in_sync=not changes, changes=changes, outputs=outputs)

    # -- doing -------------------------------------------------------------------------
    def apply(self, ctx: StepContext, inputs: UploadInputs) -> Result:
        target = _target(ctx, inputs)
        given = sshconn.parse_fingerprints(inputs.host_key_fingerprints)
        conn = sshconn.connection(ctx, target, given)
        files, create, update, chmod, same = self._plan(ctx, inputs, conn)
        dest = _dest(inputs.dest, conn)
        todo = create + update
        if todo or chmod:
            ctx.note(CHANGE_NOTE, action=self.name,
                     changes=self._changes(files, dest, create, update, chmod, inputs))
        if inputs.default_mode:
            wanted = int(inputs.default_mode, 8)
            for rel in todo + chmod:
                path, mode = files[rel]
                if mode != wanted and _glob_mode(rel, path, inputs) is None:
                    ctx.log(f"{rel}: kept private at {mode:04o}, not default_mode "
                            f"{wanted:04o}: its source is not readable by others", "info")
        if inputs.sudo and (todo or chmod):
            self._sudo_write(ctx, conn, dest, files, todo, chmod, inputs)
        elif todo:
            dirs = sorted({dest} | {f"{dest}/{r.rsplit('/', 1)[0]}" for r in todo if "/" in r})
            res = conn.exec("mkdir -p -- " + " ".join(shlex.quote(d) for d in dirs),
                            timeout=_remaining(ctx, 60.0), cancel=ctx.cancel,
                            sink=lambda line, stream: ctx.log(line, stream))
            if res.exit_code != 0:
                raise ActionFailed(f"cannot create {dest} on {target}",
                                   diagnosis=_tail_lines(res.stderr) or "mkdir failed",
                                   fix=f"Make {dest} writable by {target.user}, or choose a "
                                       "dest under the user's home.")
        total = len(todo) + len(chmod)
        done = 0
        for rel in [] if inputs.sudo else todo:
            path, mode = files[rel]
            try:
                conn.put_file(path, f"{dest}/{rel}", mode)
            except OSError as e:
                raise ActionFailed(f"cannot write {dest}/{rel} on {target}: {e}",
                                   diagnosis="The upload failed part-way; files already written "
                                             "are complete (each is renamed into place).",
                                   fix=f"Check that {dest} is writable by {target.user}, then "
                                       "run the step again: unchanged files are skipped.") from e
            done += 1
            ctx.log(f"{'created' if rel in create else 'updated'} {dest}/{rel} ({mode:04o})",
                    "info")
            ctx.progress(f"uploading {rel}", done, total)
        for rel in [] if inputs.sudo else chmod:
            conn.chmod(f"{dest}/{rel}", files[rel][1])
            done += 1
            ctx.log(f"chmod {files[rel][1]:04o} {dest}/{rel}", "info")
        outputs = {"uploaded": todo, "skipped": same, "chmodded": chmod, "dest": dest}
        return Result(status="changed" if total else "ok", outputs=outputs, data=outputs,
                      message=f"{len(todo)} uploaded, {len(chmod)} chmodded, "
                              f"{len(same)} unchanged")


    def _sudo_write(self, ctx: StepContext, conn: Connection, dest: str,
                    files: dict[str, tuple[Path, int]], todo: list[str],
                    chmod: list[str], inputs: UploadInputs) -> None:
        """Stage as the SSH user in a 0700 temp dir, then install as root in one command."""
        def quiet(line: str, stream: str) -> None:
            if stream == "stderr":
                ctx.log(line, stream)

        target = conn.target
        res = conn.exec('mktemp -d "${TMPDIR:-/tmp}/elematrix-upload.XXXXXXXX"',
                        timeout=_remaining(ctx, 60.0), cancel=ctx.cancel, sink=quiet)
        staging = res.stdout.strip()
        if res.exit_code != 0 or not staging.startswith("/"):
            raise ActionFailed(f"cannot create a staging directory on {target}",
                               diagnosis=_tail_lines(res.stderr) or "mktemp failed")
        try:
            script = ["set -e", f"mkdir -p -- {shlex.quote(dest)}"]
            for i, rel in enumerate(todo):
                path, mode = files[rel]
                # Flat staged names: no directories to create as the SSH user.
                conn.put_file(path, f"{staging}/{i}", mode)
                ctx.progress(f"staging {rel}", i + 1, len(todo))
                final = f"{dest}/{rel}"
                d, name = final.rsplit("/", 1)
                tmp = f"{d}/.{name}.elematrix-tmp"
                owner = _upload_owner(rel, path, inputs)
                own = f"-o {owner.split(':')[0]} -g {owner.split(':')[1]} " if owner else ""
                script += [f"mkdir -p -- {shlex.quote(d)}",
                           f"install -m {mode:04o} {own}-- {shlex.quote(f'{staging}/{i}')} "
                           f"{shlex.quote(tmp)}",
                           f"mv -f -- {shlex.quote(tmp)} {shlex.quote(final)}"]
            script += [f"chmod {files[r][1]:04o} -- {shlex.quote(f'{dest}/{r}')}" for r in chmod]
            script += [f"chown {o} -- {shlex.quote(f'{dest}/{r}')}" for r in chmod
                       if (o := _upload_owner(r, files[r][0], inputs))]
            res = conn.exec(build_command("\n".join(script), {}, True, target.local),
                            timeout=_remaining(ctx, 300.0), cancel=ctx.cancel, sink=quiet)
            if res.exit_code != 0:
                raise ActionFailed(
                    f"cannot install the files under {dest} on {target} with sudo",
                    diagnosis=_tail_lines(res.stderr) or f"exit {res.exit_code}",
                    fix="The SSH user needs passwordless sudo (ec2-user has it on Amazon "
                        "Linux); run the step again: unchanged files are skipped.")
        finally:
            conn.exec(f"rm -rf -- {shlex.quote(staging)}", timeout=_remaining(ctx, 30.0),
                      cancel=None, sink=quiet)
        for rel in todo:
            ctx.log(f"installed {dest}/{rel} ({files[rel][1]:04o}, as root)", "info")
        for rel in chmod:
            ctx.log(f"chmod {files[rel][1]:04o} {dest}/{rel} (as root)", "info")


