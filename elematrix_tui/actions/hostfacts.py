"""What the host-fact actions share (``compose.*``, ``systemd.install``, ``postgres.locale``).

They read facts on the host over the run's SSH connection (or on this machine with
``host: local``), say in ``check`` what differs, and change only that in ``apply``. Every
change goes through :func:`note_change` first, so the journal's ``host.change`` notes count
exactly what was changed on the host (a re-run or a resume whose facts hold has none).
"""

from __future__ import annotations

from collections.abc import Callable

from ..engine.action import ActionFailed, Check, StepContext
from . import sshconn
from .ssh import SshInputs, _remaining, _tail_lines, _target, build_command
from .sshconn import ChannelOpenError, Connection, ExecResult

# The note kind every host-fact action writes just before it changes something on the host.
CHANGE_NOTE = "host.change"


def host_connection(ctx: StepContext, inputs: SshInputs, *,
                    interactive: bool = True) -> Connection:
    """The run's shared connection to the step's host (host keys checked as for ssh.run)."""
    target = _target(ctx, inputs)
    given = sshconn.parse_fingerprints(inputs.host_key_fingerprints)
    return sshconn.connection(ctx, target, given, interactive=interactive)


def host_run(ctx: StepContext, inputs: SshInputs, command: str, *, sudo: bool,
             timeout: float, what: str, stream: bool = False, interactive: bool = True,
             check_exit: bool = True, private_stdout: bool = False) -> ExecResult:
    """Run one shell command on the host and return what it did.

    Every command of these actions converges (reads a fact, or brings the host to a stated
    state), so running it again after a dropped connection is harmless: it is re-run once
    on a fresh connection. A timeout or an unexpected exit raises :class:`ActionFailed`
    naming ``what`` (``check_exit=False`` leaves the exit code to the caller);
    ``private_stdout``: the output may hold secrets (compose's resolved config), so a failure
    quotes only stderr.
    """
    sink: Callable[[str, str], None] = ((lambda line, s: ctx.log(line, s)) if stream
                                        else (lambda line, s: None))
    for attempt in range(3):
        conn = host_connection(ctx, inputs, interactive=interactive)
        limit = _remaining(ctx, timeout)
        full = build_command(command, {}, sudo, conn.target.local, limit)
        try:
            res = conn.exec(full, timeout=limit, cancel=ctx.cancel, sink=sink)
        except ChannelOpenError as e:
            ctx.drop_resource(conn.target.resource_key)
            if attempt == 2:
                raise ActionFailed(f"cannot {what} on {conn.target}: {e}",
                                   fix="Check that the host is up and sshd answers.") from e
            continue
        if res.dropped:
            ctx.drop_resource(conn.target.resource_key)
            ctx.log(f"connection to {conn.target} dropped: running it again", "info")
            continue
        if res.cancelled:
            raise ActionFailed(f"interrupted while trying to {what}")
        if res.timed_out:
            raise ActionFailed(f"timed out after {res.duration:.0f}s trying to {what} on "
                               f"{conn.target}",
                               fix="Raise 'timeout' if the host is only slow; otherwise ssh "
                                   "in and look.")
        if check_exit and res.exit_code != 0:
            detail = (_tail_lines(res.stderr)
                      or ("" if private_stdout else _tail_lines(res.stdout)) or "(no output)")
            hint = (" 'sudo -n' needs passwordless sudo for this user."
                    if sudo and "sudo" in res.stderr else "")
            raise ActionFailed(f"cannot {what} on {conn.target} (exit {res.exit_code})",
                               diagnosis=f"Last output lines:\n{detail}{hint}")
        return res
    raise ActionFailed(f"the connection dropped each time while trying to {what}",
                       diagnosis="The host or the network is unstable.",
                       fix="Check the instance (status checks, memory), then resume.")


def note_change(ctx: StepContext, action: str, changes: list[str]) -> None:
    """Record what is about to change on the host (the journal's ``host.change`` note)."""
    ctx.note(CHANGE_NOTE, action=action, changes=changes)
    for line in changes:
        ctx.log(f"will {line}", "info")


def facts_check(describe: str, read: Callable[[], Check]) -> Check:
    """``check`` of a host-fact action: the facts' verdict, or "cannot tell" (with why) when
    they cannot be read now (plan before the instance exists, the stack not uploaded yet)."""
    try:
        return read()
    except (ActionFailed, ChannelOpenError) as e:
        why = e.message if isinstance(e, ActionFailed) else str(e)
        return Check(in_sync=None, changes=[f"{describe} (cannot compare now: {why})"])
