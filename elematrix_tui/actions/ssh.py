"""``ssh.run``, ``ssh.upload`` and ``ssh.forward``: the steps that act on the instance.

All three share the inputs of :class:`SshInputs` and one connection per host per run
(``sshconn.connection``). ``host: local`` runs the same steps on this machine.
See ``docs/ssh.md`` for the operator-facing behaviour (host keys, config, reconnects).
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import os
import re
import shlex
import stat
import time
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from ..engine.action import Action, ActionFailed, Check, Inputs, Result, StepContext
from ..engine.containment import DeploymentPath, deployment_path
from . import sshconn
from .sshconn import ChannelOpenError, Connection, ExecResult, Target


class SshInputs(Inputs):
    """Where to connect; shared by every ``ssh.*`` action."""

    # An address or ~/.ssh/config alias, or ``local`` for this machine.
    host: str
    port: int | None = Field(default=None, ge=1, le=65535)  # default: ssh config, else 22
    user: str | None = None  # default: ssh config User, else ec2-user
    key_path: str | None = None
    # 'SHA256:...' strings, or the raw console block (BEGIN/END SSH HOST KEY FINGERPRINTS).
    host_key_fingerprints: list[str] | str | None = None
    connect_timeout: float = Field(default=10.0, gt=0, le=300)


def _on_this_machine(with_: dict[str, Any], doing: str) -> list[str]:
    """``local_effects`` of an ssh.* step: ``host: local`` is this machine itself."""
    host = str(with_.get("host", ""))
    root = " as root (sudo)" if with_.get("sudo") is True else ""
    if host == sshconn.LOCAL:
        return [f"{doing} on THIS machine{root} (host: local)"]
    if "{{" in host or "{%" in host:
        return [f"its host is chosen at run time and may be this machine "
                f"('{sshconn.LOCAL}'): 'elematrix plan' shows which"]
    return []


def _target(ctx: StepContext, inputs: SshInputs) -> Target:
    return sshconn.resolve_target(inputs.host, inputs.port, inputs.user, inputs.key_path,
                                  inputs.connect_timeout, ctx.deployment_dir)


def _remaining(ctx: StepContext, timeout: float | None) -> float | None:
    """The step's own timeout, cut to the engine's deadline for this attempt."""
    if ctx.deadline is None:
        return timeout
    left = max(0.0, ctx.deadline - time.monotonic())
    return left if timeout is None else min(timeout, left)


def _tail_lines(text: str, n: int = 12) -> str:
    lines = text.rstrip("\n").splitlines()
    return "\n".join(lines[-n:])


def build_command(command: str, env: dict[str, str], sudo: bool, local: bool,
                  timeout: float | None = None) -> str:
    """The shell text actually run: env exported first, the whole thing under ``sudo -n``.

    ``sudo -n`` never prompts: a host without passwordless sudo fails at once instead of
    hanging until the timeout. Env values are passed inline (sshd drops most
    ``AcceptEnv`` variables), so they are visible in the host's process list while it runs.
    A command under sudo runs as root, which the SSH 'signal' request (sent as the user)
    cannot stop: coreutils ``timeout`` on the host stops it one second after our own
    timeout fired.
    """
    script = "".join(f"export {k}={shlex.quote(v)}; " for k, v in env.items()) + command
    if sudo and not (local and os.geteuid() == 0):
        limit = f"timeout -k 2 {math.ceil(timeout) + 1} " if timeout is not None else ""
        return f"sudo -n -- {limit}sh -c {shlex.quote(script)}"
    return script


class _Matcher:
    """``expect_output``: a substring, or a regular expression written ``re:<pattern>``."""

    def __init__(self, spec: str | None) -> None:
        self.spec = spec
        self.regex = re.compile(spec[3:], re.M) if spec and spec.startswith("re:") else None
        self.found = spec is None

    def line(self, line: str) -> None:
        if not self.found:
            self.found = self._match(line)

    def text(self, text: str) -> None:
        if not self.found:
            self.found = self._match(text)

    def _match(self, s: str) -> bool:
        assert self.spec is not None
        if self.regex is not None:
            return self.regex.search(s) is not None
        return self.spec in s


class RunInputs(SshInputs):
    command: str
    sudo: bool = False
    env: dict[str, str] = Field(default_factory=dict)
    # Seconds for the whole command; also catches a frozen server. None: the step's timeout.
    timeout: float | None = Field(default=600.0, gt=0)
    expect_exit: int | list[int] = 0
    # Substring of stdout, or 're:<regex>' searched in each line and in the kept output.
    expect_output: str | None = None
    # Text fed to the command's standard input (then EOF): the way to hand a secret to a
    # command without it showing in the host's process list. Masked like a secret.
    stdin: str | None = None
    # A gate or a query: changes nothing on the host (reported ok, not changed).
    read_only: bool = False
    # Running the command twice is harmless: re-run it after a connection drop.
    idempotent: bool = False

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not sshconn.ENV_NAME_RE.fullmatch(k):
                raise ValueError(f"env name {k!r} is not a valid shell variable name")
        return v

    @field_validator("expect_output")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v and v.startswith("re:"):
            try:
                re.compile(v[3:])
            except re.error as e:
                raise ValueError(f"expect_output is not a valid regular expression: {e}") from e
        return v


class Run(Action):
    """Run one shell command on the host, streaming its output, and check its exit code."""

    name = "ssh.run"
    Inputs = RunInputs
    secret_inputs = frozenset({"stdin"})

    def local_effects(self, with_: dict[str, Any]) -> list[str]:
        command = " ".join(str(with_.get("command", "")).split())
        return _on_this_machine(with_, f"runs `{command[:80]}`")

    def describe(self, inputs: RunInputs) -> str:
        sudo = "sudo " if inputs.sudo else ""
        return f"run on {inputs.host}: {sudo}{inputs.command}"

    def check(self, ctx: StepContext, inputs: RunInputs) -> Check:
        # A command's effect cannot be known without running it: gates re-run, and others
        # are re-applied on resume (mark them idempotent when that is harmless).
        return Check(in_sync=None, changes=[self.describe(inputs)])

    def apply(self, ctx: StepContext, inputs: RunInputs) -> Result:
        target = _target(ctx, inputs)
        given = sshconn.parse_fingerprints(inputs.host_key_fingerprints)
        expected = ([inputs.expect_exit] if isinstance(inputs.expect_exit, int)
                    else list(inputs.expect_exit))
        ctx.log(f"$ {'sudo ' if inputs.sudo else ''}{inputs.command}", "cmd")
        reconnects = 0
        while True:
            matcher = _Matcher(inputs.expect_output)

            def sink(line: str, stream: str, m: _Matcher = matcher) -> None:
                ctx.log(line, stream)
                if stream == "stdout":
                    m.line(line)

            conn = sshconn.connection(ctx, target, given)
            limit = _remaining(ctx, inputs.timeout)
            command = build_command(inputs.command, inputs.env, inputs.sudo, target.local,
                                    limit)
            try:
                res = conn.exec(command, timeout=limit, cancel=ctx.cancel, sink=sink,
                                stdin=inputs.stdin.encode() if inputs.stdin is not None
                                else None)
            except ChannelOpenError as e:
                # Nothing ran: reconnecting and starting it is always safe.
                ctx.drop_resource(target.resource_key)
                reconnects += 1
                if reconnects > 2:
                    raise ActionFailed(
                        f"cannot start the command on {target}: {e}",
                        diagnosis="The connection failed each time before the command started.",
                        fix="Check that the host is up and sshd answers.") from e
                ctx.log(f"connection to {target} lost before the command started: reconnecting",
                        "info")
                continue
            if res.dropped:
                ctx.drop_resource(target.resource_key)
                ctx.note("ssh.dropped", host=target.hostname, after_s=round(res.duration, 3),
                         rerun=inputs.idempotent and reconnects == 0)
                if inputs.idempotent and reconnects == 0:
                    reconnects += 1
                    ctx.log(f"connection to {target} dropped after {res.duration:.1f}s: "
                            "reconnecting and running the command again (idempotent)", "info")
                    continue
                why = ("It was not run again because the step is not marked idempotent."
                       if not inputs.idempotent else
                       "The connection dropped again while re-running it: the host or the "
                       "network is unstable.")
                raise ActionFailed(
                    f"connection to {target} dropped while the command was running",
                    diagnosis=f"The command was interrupted mid-command after "
                              f"{res.duration:.1f}s: it may have finished, partly run, or still "
                              f"be running on the host. {why}",
                    fix="Look at the host's state (ssh in), then resume the run. If running the "
                        "command twice is harmless, mark the step 'idempotent: true'."
                    if not inputs.idempotent else
                    "Check the instance (status checks, memory: an OOM kill of sshd drops "
                    "connections) and resume the run.")
            break
        return self._result(ctx, inputs, target, res, matcher, expected)

    def _result(self, ctx: StepContext, inputs: RunInputs, target: Target, res: ExecResult,
                matcher: _Matcher, expected: list[int]) -> Result:
        left = ("The command was stopped (SIGTERM through SSH)." if res.stopped else
                "The command could not be signalled (frozen host or connection): it may still "
                "be running on the host. The connection was closed.")
        if res.timed_out:
            raise ActionFailed(
                f"command on {target} timed out after {res.duration:.1f}s",
                diagnosis="No exit status within the timeout: the command hangs (waiting for "
                          "input, a lock, the network) or is just slow, or the host or the "
                          f"connection froze. {left}",
                fix="Raise 'timeout' if the command is only slow; otherwise ssh in and look.")
        if res.cancelled:
            raise ActionFailed("command interrupted by the operator", diagnosis=left)
        outputs: dict[str, Any] = {"exit_code": res.exit_code, "stdout": res.stdout,
                                   "stderr": res.stderr, "duration_s": round(res.duration, 3)}
        if res.exit_code not in expected:
            what = ("was killed by a signal or closed without an exit status"
                    if res.exit_code == -1 else f"exited with {res.exit_code}")
            detail = _tail_lines(res.stderr) or _tail_lines(res.stdout) or "(no output)"
            sudo_hint = (" 'sudo -n' needs passwordless sudo for this user."
                         if inputs.sudo and "sudo" in res.stderr else "")
            raise ActionFailed(
                f"command {what} (expected {', '.join(map(str, expected))})",
                diagnosis=f"Last output lines:\n{detail}{sudo_hint}")
        matcher.text(res.stdout)
        if not matcher.found:
            raise ActionFailed(
                f"command output does not contain {inputs.expect_output!r}",
                diagnosis=f"The command exited {res.exit_code}, but its output lacks the expected "
                          f"text. Last lines:\n{_tail_lines(res.stdout) or '(no output)'}")
        return Result(status="ok" if inputs.read_only else "changed", outputs=outputs,
                      data=outputs, message=f"exit {res.exit_code} in {res.duration:.2f}s")


# --------------------------------------------------------------------------------------
# ssh.upload
# --------------------------------------------------------------------------------------
MODE_RE = re.compile(r"0?[0-7]{3}")  # fullmatch: "644\n" is not a mode


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

    @model_validator(mode="after")
    def _modes(self) -> UploadInputs:
        for m in [*self.modes.values(), *([self.default_mode] if self.default_mode else [])]:
            if not MODE_RE.fullmatch(m):
                raise ValueError(f"mode {m!r} must be octal like '0600' or '644'")
        if not self.dest or self.dest.strip() in {"/", "~"}:
            raise ValueError("dest must be a directory below / (not / itself)")
        return self


def _glob_mode(rel: str, path: Path, inputs: UploadInputs) -> int | None:
    for pattern, m in inputs.modes.items():
        if fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(path.name, pattern):
            return int(m, 8)
    return None


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


def _parse_stat(stdout: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in stdout.splitlines():
        mode, _, name = line.partition(" ")
        if mode.isdigit() and name:
            out[name[2:] if name.startswith("./") else name] = int(mode, 8)
    return out


class Upload(Action):
    """Copy a rendered directory to the host: only files that differ, atomically, with modes."""

    name = "ssh.upload"
    Inputs = UploadInputs

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
                      names: list[str], sudo: bool) -> tuple[dict[str, str], dict[str, int]]:
        """Checksums and modes of the files that exist on the host, in one command."""
        if not names:
            return {}, {}
        quoted = " ".join(shlex.quote(f"./{n}") for n in names)
        # Missing files make sha256sum/stat complain on stderr: that just means "create".
        cmd = (f"cd {shlex.quote(dest)} 2>/dev/null || exit 0; "
               f"sha256sum -- {quoted} 2>/dev/null; echo '::stat::'; "
               f"stat -c '%a %n' -- {quoted} 2>/dev/null; exit 0")
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
            elif modes.get(rel) != mode:
                chmod.append(rel)
            else:
                same.append(rel)
        return files, create, update, chmod, same

    @staticmethod
    def _changes(files: dict[str, tuple[Path, int]], dest: str, create: list[str],
                 update: list[str], chmod: list[str]) -> list[str]:
        return ([f"create {dest}/{r} (mode {files[r][1]:04o})" for r in create]
                + [f"update {dest}/{r} (content differs)" for r in update]
                + [f"chmod {dest}/{r} to {files[r][1]:04o}" for r in chmod])

    def check(self, ctx: StepContext, inputs: UploadInputs) -> Check:
        try:
            target = _target(ctx, inputs)
            given = sshconn.parse_fingerprints(inputs.host_key_fingerprints)
            conn = sshconn.connection(ctx, target, given, interactive=False)
            files, create, update, chmod, same = self._plan(ctx, inputs, conn)
        except (ActionFailed, ChannelOpenError) as e:
            return Check(in_sync=None,
                         changes=[f"{self.describe(inputs)} (cannot compare now: {e})"])
        changes = self._changes(files, _dest(inputs.dest, conn), create, update, chmod)
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
        if inputs.default_mode:
            wanted = int(inputs.default_mode, 8)
            for rel in todo + chmod:
                path, mode = files[rel]
                if mode != wanted and _glob_mode(rel, path, inputs) is None:
                    ctx.log(f"{rel}: kept private at {mode:04o}, not default_mode "
                            f"{wanted:04o}: its source is not readable by others", "info")
        if inputs.sudo and (todo or chmod):
            self._sudo_write(ctx, conn, dest, files, todo, chmod)
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
                    chmod: list[str]) -> None:
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
                script += [f"mkdir -p -- {shlex.quote(d)}",
                           f"install -m {mode:04o} -- {shlex.quote(f'{staging}/{i}')} "
                           f"{shlex.quote(tmp)}",
                           f"mv -f -- {shlex.quote(tmp)} {shlex.quote(final)}"]
            script += [f"chmod {files[r][1]:04o} -- {shlex.quote(f'{dest}/{r}')}" for r in chmod]
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


# --------------------------------------------------------------------------------------
# ssh.forward
# --------------------------------------------------------------------------------------
class ForwardInputs(SshInputs):
    remote_host: str = "127.0.0.1"
    remote_port: int | None = Field(default=None, ge=1, le=65535)
    local_port: int = Field(default=0, ge=0, le=65535)  # 0: any free port
    # Close the forward opened by an earlier step with the same host/remote/local_port.
    close: bool = False
    # Open one tunnel right away so a dead remote port fails this step, not a later one.
    probe: bool = True

    @model_validator(mode="after")
    def _port(self) -> ForwardInputs:
        if self.remote_port is None:
            raise ValueError("remote_port is required")
        return self


def _forward_key(target: Target, inputs: ForwardInputs) -> str:
    local = f":{inputs.local_port}" if inputs.local_port else ""
    return f"ssh.forward:{target.resource_key}->{inputs.remote_host}:{inputs.remote_port}{local}"


class Forward(Action):
    """A local port forward to a port on the host's loopback, open until the run ends."""

    name = "ssh.forward"
    Inputs = ForwardInputs

    def local_effects(self, with_: dict[str, Any]) -> list[str]:
        return _on_this_machine(with_, f"forwards to port {with_.get('remote_port')}")
    # Opening a tunnel changes nothing on the host.
    read_only = True
    # The tunnel dies with the process: a resumed run opens it again.
    process_local = True

    def describe(self, inputs: ForwardInputs) -> str:
        if inputs.close:
            return f"close the forward to {inputs.host}:{inputs.remote_host}:{inputs.remote_port}"
        return (f"forward 127.0.0.1:{inputs.local_port or 'free port'} to "
                f"{inputs.remote_host}:{inputs.remote_port} on {inputs.host}")

    def apply(self, ctx: StepContext, inputs: ForwardInputs) -> Result:
        target = _target(ctx, inputs)
        key = _forward_key(target, inputs)
        assert inputs.remote_port is not None
        remote = f"{inputs.remote_host}:{inputs.remote_port}"
        if inputs.close:
            ctx.drop_resource(key)
            ctx.log(f"closed the forward to {remote} on {target}", "info")
            return Result(status="ok", outputs={"closed": True})
        given = sshconn.parse_fingerprints(inputs.host_key_fingerprints)
        created: list[bool] = []

        def factory() -> sshconn.Forwarder:
            # The forward owns its own connection: it outlives steps and must survive the
            # shared connection being dropped and reopened by a failing command.
            conn = sshconn.open_connection(ctx, target, given, note=False)
            try:
                fwd = sshconn.Forwarder(conn, inputs.remote_host, inputs.remote_port or 0,
                                        inputs.local_port)
            except OSError as e:
                conn.close()
                raise ActionFailed(f"cannot listen on 127.0.0.1:{inputs.local_port}: {e}",
                                   diagnosis="Another program uses that local port.",
                                   fix="Use local_port: 0 to take any free port.") from e
            created.append(True)
            return fwd

        fwd = ctx.resource(key, factory, lambda f: f.close())
        if inputs.probe:
            try:
                fwd.probe()
            except Exception as e:
                ctx.drop_resource(key)
                raise ActionFailed(
                    f"nothing answers on {remote} on {target}: {e}",
                    diagnosis=f"The SSH connection works, but the host refused a connection to "
                              f"{remote}: the service there is not running (yet) or listens "
                              "on another address/port.",
                    fix="Check the container is up (docker compose ps) and its published port."
                ) from e
        url = f"http://127.0.0.1:{fwd.local_port}"
        if created:
            ctx.log(f"forwarding {url} -> {remote} on {target}", "info")
        outputs = {"local_port": fwd.local_port, "url": url, "remote": remote}
        return Result(status="changed" if created else "ok", outputs=outputs, data=outputs,
                      message=f"{url} -> {remote}")
