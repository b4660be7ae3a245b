"""Getting a connection inside a step: the pins (step, remembered, console), the
operator's question when nothing is pinned, the run's shared connection."""

from __future__ import annotations

from ...engine.action import ActionFailed, StepContext
from .base import Connection
from .connection import SshConnection
from .hostkeys import INFRA_HOST_KEYS, HostKeyProblem, host_key_failure
from .local import LocalConnection
from .target import Target


def open_connection(ctx: StepContext, target: Target, given: list[str],
                    *, interactive: bool = True, note: bool = True) -> Connection:
    """Connect with pinned host keys; ask the operator when nothing is pinned.

    Pins come from the step (``given``), else from what this deployment trusted before for
    this host (``ctx.get_meta('ssh.hostkeys.<host>:<port>')``), else from the instance's
    console fingerprints the infra phase stored (``ssh.host_key_fingerprints``). With no
    pins the operator is shown the fingerprint and must choose it (``ctx.questions.choose``):
    never accepted silently, not even with ``--yes``; a headless run without a terminal is
    refused and must pass ``host_key_fingerprints``. A mismatch is never offered. What was
    trusted is remembered.
    """
    if target.local:
        return LocalConnection(target)
    remembered = ctx.get_meta(target.meta_key) or []
    # The infra phase (aws.wait host_keys_of) stores the instance's console fingerprints
    # for the deployment: the pins of last resort when the step gives none.
    infra = ctx.get_meta(INFRA_HOST_KEYS) or []
    if given:
        pins, source = given, "the step's host_key_fingerprints"
    elif remembered:
        pins, source = list(remembered), f"this deployment's trusted keys ({target.meta_key})"
    else:
        pins, source = list(infra), f"the instance console output ({INFRA_HOST_KEYS})"
    conn = SshConnection(target, pins)
    try:
        conn.connect()
    except HostKeyProblem as e:
        conn.close()
        if pins:
            raise host_key_failure(target, e, source) from None
        kt, fp = e.presented[-1]
        never = ("A host key is never accepted without the operator, not even with --yes.")
        fix = ("Pass host_key_fingerprints (the infra phase reads them from the console output), "
               "or run interactively and compare the fingerprint with the console output.")
        if not interactive:
            raise ActionFailed(
                f"host key of {target} is not pinned",
                diagnosis=f"The server presented {fp} ({kt}) and no expected fingerprint is "
                          f"known. {never}", fix=fix) from None
        prompt = (f"{target} presented a {kt} host key with fingerprint\n  {fp}\n"
                  "No expected fingerprint is known for it. Accept it only if it matches the "
                  "instance's console output (BEGIN/END SSH HOST KEY FINGERPRINTS).")
        # Asked even under --yes: the questions implementation refuses when nobody can
        # answer (headless without a terminal), it never answers this one by itself.
        choice = ctx.questions.choose(ctx.step_id, prompt, [fp])
        if choice != fp:
            raise ActionFailed(
                f"host key of {target} was not accepted",
                diagnosis=f"The server presented {fp} ({kt}); it was refused (by the operator, "
                          f"or because no terminal could ask). {never}", fix=fix) from None
        conn = SshConnection(target, [fp])
        try:
            conn.connect()
        except HostKeyProblem as e2:  # the key changed between two handshakes
            conn.close()
            raise host_key_failure(target, e2) from None
        pins = [fp]
    if pins != list(remembered):
        ctx.set_meta(target.meta_key, pins)
    if note:
        ctx.note("ssh.connect", host=target.hostname, port=target.port, user=target.user,
                 host_key=conn.server_fingerprint, key_type=conn.server_key_type)
    return conn


def connection(ctx: StepContext, target: Target, given: list[str],
               *, interactive: bool = True) -> Connection:
    """The run's shared connection to ``target`` (created on first use, closed at run end)."""
    conn: Connection = ctx.resource(
        target.resource_key,
        lambda: open_connection(ctx, target, given, interactive=interactive),
        lambda c: c.close())
    fp = getattr(conn, "server_fingerprint", None)
    if given and fp and fp not in given:
        # Reused connection, but this step pins other keys: the step's pins win.
        ctx.drop_resource(target.resource_key)
        return connection(ctx, target, given, interactive=interactive)
    return conn
