"""Deployment decisions that are not any one service's: the permanent Matrix server name."""

from __future__ import annotations

import re

from ..engine.action import Action, ActionFailed, Check, Inputs, Result, StepContext

# EC2's own host names change when the instance is replaced, or stopped without an EIP.
EC2_HOSTNAME = re.compile(
    r"(^ec2-\d+-\d+-\d+-\d+\.[a-z0-9-]*\.?compute(-1)?\.amazonaws\.com$)|(^ip-\d+-\d+-\d+-\d+)"
    r"|(\.compute\.internal$)", re.I)
META_KEY = "matrix.server_name"


class ServerNameInputs(Inputs):
    # What the operator asked for (may be empty: then `fallback`).
    requested: str | None = None
    # Used when nothing was requested: e.g. the Elastic IP, stable for this deployment.
    fallback: str
    # True once Synapse has started: the name is then recorded and can never change.
    lock: bool = False


class ServerName(Action[ServerNameInputs]):
    """Choose the Matrix server name, warn about unstable names, refuse to change a locked one."""

    name = "deploy.server_name"
    Inputs = ServerNameInputs
    output_names = frozenset({"server_name", "locked"})

    def _decide(self, ctx: StepContext, inputs: ServerNameInputs) -> tuple[str, str | None]:
        wanted = (inputs.requested or "").strip() or inputs.fallback.strip()
        if not wanted:
            raise ActionFailed("no server name: neither server_name nor a public address is set",
                               fix="--set server_name=chat.example.org (a name you control)")
        locked = ctx.get_meta(META_KEY)
        return wanted, locked

    def check(self, ctx: StepContext, inputs: ServerNameInputs) -> Check:
        wanted, locked = self._decide(ctx, inputs)
        if locked == wanted:
            return Check(in_sync=True, outputs={"server_name": wanted, "locked": True})
        return Check(in_sync=None if not inputs.lock else False,
                     changes=[f"server name {wanted!r}" + (" (locked for good)" if inputs.lock
                                                           else "")])

    def apply(self, ctx: StepContext, inputs: ServerNameInputs) -> Result:
        wanted, locked = self._decide(ctx, inputs)
        if locked is not None and locked != wanted:
            raise ActionFailed(
                f"the server name of this deployment is {locked!r} and cannot become {wanted!r}",
                diagnosis="Synapse has already started with it: every user id (@user:"
                          f"{locked}) and room alias carries it in the database",
                fix=f"keep --set server_name={locked}; for another name create a new "
                    f"deployment (a new database)")
        if EC2_HOSTNAME.search(wanted.split(":")[0]):
            ctx.log(f"warning: {wanted!r} looks like an EC2 host name; it changes when the "
                    "instance is replaced, and the server name can never change. Prefer a "
                    "domain you control, or the Elastic IP.", "warning")
            ctx.note("warning", text=f"server name {wanted} looks like an EC2 host name")
        if inputs.lock and locked is None:
            ctx.set_meta(META_KEY, wanted)
            ctx.log(f"server name {wanted!r} is now permanent for this deployment")
            return Result("changed", outputs={"server_name": wanted, "locked": True})
        ctx.log(f"server name: {wanted!r}" + (" (permanent)" if locked else
                                             " (it becomes permanent when Synapse first starts)"))
        return Result("ok", outputs={"server_name": wanted, "locked": locked is not None})
