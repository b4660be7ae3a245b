"""``ssh.run`` and ``ssh.forward``: the steps that act on the instance (``ssh.upload`` is in
``ssh_upload.py``, the host-fact actions in ``compose.py``, ``systemd.py``...).

All of them share the inputs of :class:`SshInputs` and one connection per host per run
(``sshconn.connection``). ``host: local`` runs the same steps on this machine.
See ``docs/ssh.md`` for the operator-facing behaviour (host keys, config, reconnects).
"""

from __future__ import annotations

import math
import os
import re
import shlex
import time
from typing import Any

from pydantic import Field, field_validator, model_validator

from ..engine.action import Action, ActionFailed, Check, Inputs, Result, StepContext
from . import sshconn
from .sshconn import ChannelOpenError, ExecResult, Target


class SshInputs(Inputs):
    """Where to connect; shared by every ``ssh.*`` action."""

    # An address or ~/.ssh/config alias, or ``local`` for this machine. Never empty: an
    # empty host resolved to "ec2-user@:22" (a parameter left blank reached the SSH layer).
    host: str = Field(min_length=1)
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


class Run(Action[RunInputs]):
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


class Forward(Action[ForwardInputs]):
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
