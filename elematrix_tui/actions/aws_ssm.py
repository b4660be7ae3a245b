"""``aws.ssm_run``: send an SSM Run Command and wait for it, in one resumable step.

The command id is written to the deployment's journal meta (``aws.ssm_run:<run>:<step>``)
the moment ``send_command`` returns, before any waiting. A run killed while it waits is
resumed by the runner with ``check`` (the step was interrupted): ``check`` reads that
command's invocation, and ``apply`` waits on the same command instead of sending a second
one. Only a command of the same request (instance, document, parameters: a digest is kept
beside the id) is reused; a new run sends again.

What is real in the tests and what is not (moto 5.2.5, ``moto/ssm/models.py``): moto
stores the command and answers ``get_command_invocation`` for its instances, but every
invocation is ``Success`` the moment it is sent (``Command.invocation_response``), nothing
runs and the output is empty; an unknown command id is ``InvalidCommandId``, an instance the
command was not sent to ``InvocationDoesNotExist``. Real SSM goes Pending -> InProgress ->
Success/Failed/TimedOut..., and answers ``InvocationDoesNotExist`` for a few seconds right
after the send: that is treated as "pending" here, never as a failure.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import Field

from ..engine.action import Action, ActionFailed, Check, Inputs, Result, StepContext
from ..engine.poll import PollCancelled, PollTimeout, poll_step

# Get-command-invocation statuses (ssm API reference, CommandInvocationStatus).
SUCCESS = "Success"
PENDING = frozenset({"Pending", "InProgress", "Delayed"})
FAILED = frozenset({"Cancelled", "Cancelling", "TimedOut", "Failed", "Undeliverable",
                    "Terminated", "DeliveryTimedOut", "ExecutionTimedOut", "Incomplete",
                    "InvalidPlatform", "AccessDenied"})
# The invocation appears a moment after send_command on AWS (eventual consistency).
NOT_YET = "InvocationDoesNotExist"


class SsmRunInputs(Inputs):
    instance_id: str
    document: str = "AWS-RunShellScript"
    parameters: dict[str, list[str]] = Field(default_factory=dict)
    comment: str = ""
    # Seconds between looks, and the longest wait for the command to finish.
    delay: float = Field(default=5.0, gt=0, le=300)
    max_wait: float = Field(default=600.0, ge=0)


def _digest(inputs: SsmRunInputs) -> str:
    request = {"instance": inputs.instance_id, "document": inputs.document,
               "parameters": inputs.parameters}
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]


def meta_key(ctx: StepContext) -> str:
    """Where the step's command id is kept (one per run and step: a resume reuses it)."""
    return f"aws.ssm_run:{ctx.run_id}:{ctx.step_id}"


class SsmRun(Action[SsmRunInputs]):
    """Send a Run Command document to one instance and wait until it has finished."""

    name = "aws.ssm_run"
    Inputs = SsmRunInputs
    output_names = frozenset({"command_id", "status", "stdout"})

    def describe(self, inputs: SsmRunInputs) -> str:
        return f"run {inputs.document} on {inputs.instance_id} (SSM) and wait"

    def _sent(self, ctx: StepContext, inputs: SsmRunInputs) -> str | None:
        """This run's command of this very request, if one was sent."""
        rec = ctx.get_meta(meta_key(ctx))
        if isinstance(rec, dict) and rec.get("request") == _digest(inputs):
            cid = rec.get("command_id")
            return str(cid) if cid else None
        return None

    def _status(self, ctx: StepContext, command_id: str,
                inputs: SsmRunInputs) -> tuple[str, dict[str, Any]]:
        from .aws_errors import error_code, explain
        from .aws_session import aws_for

        api = aws_for(ctx)
        try:
            inv = api.call("ssm", "get_command_invocation", quiet=True, CommandId=command_id,
                           InstanceId=inputs.instance_id)
        except ActionFailed as e:
            if NOT_YET in (e.message + (e.diagnosis or "")):
                return "Pending", {}
            raise
        except Exception as e:
            if error_code(e) == NOT_YET:
                return "Pending", {}
            raise explain(e, "ssm", "get_command_invocation", api.region) from e
        return str(inv.get("Status", "")), inv

    @staticmethod
    def _outputs(command_id: str, status: str, inv: dict[str, Any]) -> dict[str, Any]:
        return {"command_id": command_id, "status": status,
                "stdout": str(inv.get("StandardOutputContent", ""))[-4000:]}

    def check(self, ctx: StepContext, inputs: SsmRunInputs) -> Check:
        cid = self._sent(ctx, inputs)
        if cid is None:
            return Check(in_sync=False, changes=[f"send {inputs.document} to "
                                                 f"{inputs.instance_id} and wait"])
        status, inv = self._status(ctx, cid, inputs)
        if status == SUCCESS:
            return Check(in_sync=True, outputs=self._outputs(cid, status, inv))
        if status in FAILED:
            return Check(in_sync=False, changes=[f"send {inputs.document} again (command "
                                                 f"{cid} ended {status})"])
        return Check(in_sync=False, changes=[f"wait for command {cid} (it is {status}; "
                                             "it is not sent again)"])

    def apply(self, ctx: StepContext, inputs: SsmRunInputs) -> Result:
        cid = self._sent(ctx, inputs)
        if cid is not None:
            status, inv = self._status(ctx, cid, inputs)
            if status == SUCCESS:
                return Result("ok", outputs=self._outputs(cid, status, inv),
                              message=f"command {cid} had already succeeded")
            if status in FAILED:
                ctx.log(f"command {cid} ended {status}: sending it again", "info")
                cid = None
            else:
                ctx.log(f"waiting on command {cid} sent before the interruption ({status})",
                        "info")
        if cid is None:
            cid = self._send(ctx, inputs)
        return self._wait(ctx, inputs, cid)

    def _send(self, ctx: StepContext, inputs: SsmRunInputs) -> str:
        from .aws_session import aws_for

        api = aws_for(ctx)
        params: dict[str, Any] = {"DocumentName": inputs.document,
                                  "InstanceIds": [inputs.instance_id],
                                  "Parameters": inputs.parameters}
        if inputs.comment:
            params["Comment"] = inputs.comment[:100]  # the API's limit
        resp = api.call("ssm", "send_command", **params)
        cid = str(resp["Command"]["CommandId"])
        # Kept before any waiting: a resume of this step waits on this command.
        ctx.set_meta(meta_key(ctx), {"command_id": cid, "request": _digest(inputs)})
        ctx.note("aws.ssm_run.sent", command_id=cid, document=inputs.document,
                 instance_id=inputs.instance_id)
        ctx.log(f"sent {inputs.document} to {inputs.instance_id}: command {cid}", "info")
        return cid

    def _wait(self, ctx: StepContext, inputs: SsmRunInputs, cid: str) -> Result:
        last = [""]

        def probe(attempt: int) -> Result | None:
            status, inv = self._status(ctx, cid, inputs)
            last[0] = status
            if status == SUCCESS:
                return Result("changed", outputs=self._outputs(cid, status, inv),
                              data=inv, message=f"command {cid}: {status}")
            if status in FAILED:
                err = str(inv.get("StandardErrorContent", "")).strip()[-2000:]
                raise ActionFailed(
                    f"command {cid} ({inputs.document}) ended {status} on "
                    f"{inputs.instance_id}",
                    diagnosis=f"Its error output:\n{err}" if err else
                    f"Status details: {inv.get('StatusDetails', status)}",
                    fix="Read the command's output in the console (Systems Manager > Run "
                        "Command) or with `aws ssm get-command-invocation`, then resume: "
                        "it is sent again.")
            return None

        try:
            return poll_step(ctx, probe, what=f"command {cid}", timeout=inputs.max_wait,
                             interval=inputs.delay,
                             on_wait=lambda a: ctx.progress(f"command {cid}: {last[0]}"))
        except PollTimeout as e:
            raise ActionFailed(
                f"command {cid} is still {last[0]} after {inputs.max_wait:g} s",
                diagnosis="The instance's SSM agent has not finished the command.",
                fix="Resume later: the step waits on the same command, it is not sent "
                    "again.") from e
        except PollCancelled as e:
            raise ActionFailed("interrupted while waiting for the command; resume "
                               "waits on the same one") from e
