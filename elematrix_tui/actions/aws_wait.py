"""``aws.wait``: wait for a state (a boto3 waiter, or an operation polled until a JMESPath
equals a value) or for the SSH host key fingerprints EC2 prints to an instance's console.

Every wait goes through the one polling helper (``engine/poll.py``): bounded by
``max_wait`` and the step's deadline, ended by a cancel within one pause, with progress.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field, model_validator

from ..engine.action import Action, ActionFailed, Inputs, Result, StepContext
from ..engine.poll import Attempt, PollTimeout, poll_step
from .aws_data import clean, jsonable
from .aws_errors import explain
from .aws_session import AwsApi, aws_for
from .sshconn.hostkeys import BEGIN_KEYS, END_KEYS, INFRA_HOST_KEYS

# Where the fingerprints are kept for the SSH steps: one home, on the SSH side.
META_HOST_KEYS = INFRA_HOST_KEYS


class WaitInputs(Inputs):
    service: str = "ec2"
    # A boto3 waiter name (instance_running, instance_status_ok, ...)...
    waiter: str | None = None
    # ...or an operation polled until ``query`` (JMESPath) equals ``equals``...
    operation: str | None = None
    query: str | None = None
    equals: Any = None
    # ...or the SSH host key fingerprints EC2 prints to the console of this instance.
    host_keys_of: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    # Polled operation: error codes that mean "not there yet" (keep polling), e.g.
    # InvocationDoesNotExist right after ssm.send_command.
    retry_errors: list[str] = Field(default_factory=list)
    # Polled operation: values of ``query`` that can never turn into ``equals`` (fail now).
    fail_values: list[Any] = Field(default_factory=list)
    delay: float = Field(default=5.0, ge=0)
    # Seconds; 0 means a single look.
    max_wait: float = Field(default=600, ge=0)

    @model_validator(mode="after")
    def _one_mode(self) -> WaitInputs:
        modes = [self.waiter is not None, self.operation is not None,
                 self.host_keys_of is not None]
        if sum(modes) != 1:
            raise ValueError("give exactly one of: waiter, operation (+query/equals), "
                             "host_keys_of")
        if self.operation is not None and self.query is None:
            raise ValueError("'operation' needs 'query' (and usually 'equals')")
        return self


def parse_host_keys(console: str) -> list[dict[str, Any]]:
    """Fingerprint lines EC2/cloud-init print between the BEGIN/END markers."""
    out: list[dict[str, Any]] = []
    if BEGIN_KEYS not in console:
        return out
    block = console.split(BEGIN_KEYS, 1)[1].split(END_KEYS, 1)[0]
    for line in block.splitlines():
        # "256 SHA256:abc... root@host (ED25519)" as ssh-keygen -l prints it, behind the
        # prefix cloud-init's logger adds ("ec2: ", or "<14>Dec  1 08:00:00 ec2: " when
        # logger --stderr writes a syslog header): the key size is the word right before
        # the fingerprint, never the first number (that is the day of the month).
        parts = line.strip().split()
        at = next((i for i, p in enumerate(parts) if p.startswith(("SHA256:", "MD5:"))), None)
        if at is None:
            continue
        fp = parts[at]
        ktype = parts[-1].strip("()") if parts[-1].startswith("(") else ""
        bits = int(parts[at - 1]) if at > 0 and parts[at - 1].isdigit() else None
        out.append({"fingerprint": fp, "type": ktype, "bits": bits})
    return out


class Wait(Action[WaitInputs]):
    """Wait for a state (waiter or polled JMESPath) or the console's host keys, with
    progress events (elapsed time, attempts) and prompt cancellation."""

    name = "aws.wait"
    Inputs = WaitInputs
    read_only = True

    def describe(self, inputs: WaitInputs) -> str:
        if inputs.waiter:
            return f"wait for {inputs.service} {inputs.waiter}"
        if inputs.host_keys_of:
            return f"read SSH host key fingerprints of {inputs.host_keys_of}"
        return f"wait until {inputs.service}.{inputs.operation} {inputs.query} == {inputs.equals}"

    def apply(self, ctx: StepContext, inputs: WaitInputs) -> Result:
        api = aws_for(ctx)
        t0 = time.monotonic()
        if inputs.host_keys_of:
            return self._host_keys(ctx, inputs, api, t0)
        # What the last attempt saw, for the progress line and the timeout message.
        last: list[Any] = [None]

        def probe(attempt: int) -> Result | None:
            elapsed = time.monotonic() - t0
            if inputs.waiter:
                return self._waiter_once(ctx, inputs, api, attempt, elapsed, last)
            return self._query_once(ctx, inputs, api, attempt, elapsed, last)

        def on_wait(a: Attempt) -> None:
            ctx.progress(f"waiting ({a.number} attempts, {a.elapsed:.0f}s): {last[0]}",
                         a.elapsed, inputs.max_wait or None)

        try:
            # final_probe False: give up before a pause that would pass max_wait (a
            # delay of 5 s with max_wait 0 is "a single look").
            what = (f"{inputs.service} {inputs.waiter}" if inputs.waiter else
                    f"{inputs.service}.{inputs.operation} {inputs.query} == {inputs.equals!r}")
            return poll_step(ctx, probe, what=what, timeout=inputs.max_wait,
                             interval=inputs.delay, on_wait=on_wait, final_probe=False)
        except PollTimeout as e:
            raise ActionFailed(
                f"gave up after {e.elapsed:.0f}s and {e.attempts} attempts: {last[0]}",
                diagnosis="The resource did not reach the expected state in time.",
                fix="Look at the instance in the console (status checks, system log); "
                    "resume to wait again.") from e

    @staticmethod
    def _waiter_once(ctx: StepContext, inputs: WaitInputs, api: AwsApi, attempt: int,
                     elapsed: float, last: list[Any]) -> Result | None:
        """One attempt of a boto3 waiter: we own the pacing, progress and cancel."""
        from botocore.exceptions import WaiterError

        assert inputs.waiter is not None
        waiter = api.client(inputs.service).get_waiter(inputs.waiter)
        t_poll = time.monotonic()
        try:
            waiter.wait(**inputs.params, WaiterConfig={"Delay": 0, "MaxAttempts": 1})
        except WaiterError as e:
            reason = str(e)
            if "Max attempts exceeded" not in reason:
                last_resp = getattr(e, "last_response", {}) or {}
                if "Error" in last_resp:
                    from botocore.exceptions import ClientError

                    raise explain(ClientError(last_resp, inputs.waiter),
                                  inputs.service, inputs.waiter, api.region) from e
                raise ActionFailed(f"{inputs.waiter}: {reason}",
                                   diagnosis="The resource reached a state from which "
                                             "the wait cannot succeed.") from e
            last[0] = reason
            rid = (getattr(e, "last_response", None) or {}).get(
                "ResponseMetadata", {}).get("RequestId")
            ctx.note("aws.call", service=inputs.service,
                     operation=f"waiter:{inputs.waiter}", params=inputs.params,
                     request_id=rid, attempt=attempt,
                     duration=round(time.monotonic() - t_poll, 4), summary="not yet")
            return None
        ctx.note("aws.call", service=inputs.service,
                 operation=f"waiter:{inputs.waiter}", params=inputs.params,
                 request_id=None, attempt=attempt,
                 duration=round(time.monotonic() - t_poll, 4), summary="satisfied")
        ctx.log(f"{inputs.waiter}: satisfied after {attempt} attempt(s), {elapsed:.0f}s")
        return Result("ok", {"elapsed": round(elapsed, 1), "attempts": attempt},
                      data={"elapsed": elapsed, "attempts": attempt})

    @staticmethod
    def _query_once(ctx: StepContext, inputs: WaitInputs, api: AwsApi, attempt: int,
                    elapsed: float, last: list[Any]) -> Result | None:
        """One call of the polled operation; its JMESPath decides done, not yet or final."""
        import jmespath

        from .aws_errors import error_code

        try:
            resp = api.call(inputs.service, str(inputs.operation), **inputs.params)
        except Exception as e:
            if error_code(e) not in inputs.retry_errors:
                raise explain(e, inputs.service, str(inputs.operation), api.region) from e
            last[0] = f"not yet ({error_code(e)})"
            return None
        last[0] = jmespath.search(str(inputs.query), jsonable(clean(resp)))
        if last[0] == inputs.equals or (inputs.equals is None and last[0]):
            ctx.log(f"{inputs.query} = {last[0]!r} after {attempt} attempt(s)")
            return Result("ok", {"elapsed": round(elapsed, 1), "attempts": attempt,
                                 "value": last[0]}, data=jsonable(clean(resp)))
        if last[0] in inputs.fail_values:
            raise ActionFailed(
                f"{inputs.service}.{inputs.operation}: {inputs.query} is {last[0]!r}",
                diagnosis=f"{last[0]!r} is final: it will never become {inputs.equals!r}.",
                fix="Look at the resource's own details (for SSM commands: "
                    "`aws ssm get-command-invocation --details`), fix, resume.")
        return None

    def _host_keys(self, ctx: StepContext, inputs: WaitInputs, api: AwsApi,
                   t0: float) -> Result:
        instance = str(inputs.host_keys_of)

        def probe(attempt: int) -> list[dict[str, Any]] | None:
            try:
                # Latest: on Nitro instances (t3) the live console, not a snapshot taken
                # at boot; other instance types refuse it and get the snapshot.
                r = api.call("ec2", "get_console_output", InstanceId=instance, Latest=True)
            except Exception as e:
                from .aws_errors import error_code

                if error_code(e) not in ("UnsupportedOperation", "InvalidParameterValue",
                                         "InvalidParameterCombination"):
                    raise explain(e, "ec2", "get_console_output", api.region) from e
                r = api.checked("ec2", "get_console_output", InstanceId=instance)
            return parse_host_keys(r.get("Output") or "") or None

        def on_wait(a: Attempt) -> None:
            ctx.progress(f"waiting for host key fingerprints in the console output "
                         f"({a.number} attempts, {a.elapsed:.0f}s)", a.elapsed, inputs.max_wait)

        try:
            keys = poll_step(ctx, probe, what=f"host key fingerprints of {instance}",
                             timeout=inputs.max_wait, interval=inputs.delay, on_wait=on_wait,
                             final_probe=False)
        except PollTimeout as e:
            # Not a failure: the SSH step then asks the operator to check the key.
            ctx.log("no SSH host key fingerprints in the console output (an emulator such "
                    "as moto prints none; on AWS they appear 1-3 min after boot): nothing "
                    "pinned, the SSH step must ask the operator", "stderr")
            ctx.note("aws.host_keys_missing", instance_id=instance, attempts=e.attempts)
            return Result("ok", {"fingerprints": [], "host_keys": [],
                                 "elapsed": round(time.monotonic() - t0, 1)},
                          data={"fingerprints": [], "host_keys": []},
                          message="no host key fingerprints in the console output")
        elapsed = time.monotonic() - t0
        fps = [k["fingerprint"] for k in keys]
        ctx.set_meta(META_HOST_KEYS, fps)
        for k in keys:
            ctx.log(f"pinned host key {k['type']} {k['fingerprint']}")
        return Result("ok", {"fingerprints": fps, "host_keys": keys,
                             "elapsed": round(elapsed, 1)},
                      data={"fingerprints": fps, "host_keys": keys})
