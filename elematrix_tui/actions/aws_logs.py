"""``aws.logs_flowing``: prove that container logs reach CloudWatch Logs.

The compose file's awslogs driver (in dockerd on the instance) creates one log stream
per container in each service's log group (``stack.values.log_group_name``) and sends
its lines in batches (every few seconds). Retention on a group says nothing about that:
this gate polls each group until it has a stream that received events, or names the
groups that never did.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field

from ..engine.action import Action, ActionFailed, Inputs, Result, StepContext
from ..engine.poll import PollTimeout, poll_step
from .aws_errors import error_code, explain
from .aws_session import aws_for


class LogsFlowingInputs(Inputs):
    """The log groups to prove, and how long to wait for the first events."""

    log_groups: list[str] = Field(min_length=1)
    # Seconds; the awslogs driver flushes every 5 s, a container may log only at start.
    max_wait: float = Field(default=180, ge=0)
    delay: float = Field(default=10, gt=0)


class LogsFlowing(Action[LogsFlowingInputs]):
    """Gate: every log group has a log stream that received events (polled, read-only)."""

    name = "aws.logs_flowing"
    Inputs = LogsFlowingInputs
    read_only = True
    output_names = frozenset({"streams", "events"})

    def describe(self, inputs: LogsFlowingInputs) -> str:
        return f"log events arrive in {', '.join(inputs.log_groups)}"

    def _look(self, api: Any, group: str) -> tuple[list[str], int]:
        """(stream names, events seen: 0 or 1) of one group."""
        try:
            streams = api.call("logs", "describe_log_streams", logGroupName=group,
                               limit=50).get("logStreams", [])
            events = api.call("logs", "filter_log_events", logGroupName=group,
                              limit=1).get("events", []) if streams else []
        except Exception as e:
            if error_code(e) == "ResourceNotFoundException":
                raise ActionFailed(
                    f"log group {group} does not exist",
                    diagnosis="the awslogs driver cannot write to a missing group "
                              "(awslogs-create-group is false)",
                    fix="run the harden phase's log_groups step (it creates every group "
                        "the compose file names)") from e
            raise explain(e, "logs", "describe_log_streams", api.region) from e
        return [s["logStreamName"] for s in streams], len(events)

    def apply(self, ctx: StepContext, inputs: LogsFlowingInputs) -> Result:
        api = aws_for(ctx)
        t0 = time.monotonic()
        seen: dict[str, tuple[list[str], int]] = {}
        missing: list[str] = []

        def probe(attempt: int) -> bool | None:
            nonlocal seen, missing
            seen = {g: self._look(api, g) for g in inputs.log_groups}
            missing = [g for g, (streams, events) in seen.items() if not streams or not events]
            ctx.progress(f"{len(seen) - len(missing)}/{len(seen)} log groups receive events "
                         f"(attempt {attempt}, {time.monotonic() - t0:.0f} s)")
            return True if not missing else None

        try:
            # final_probe False: no pause that would pass max_wait or the step's deadline.
            poll_step(ctx, probe, what="container log events", timeout=inputs.max_wait,
                      interval=inputs.delay, final_probe=False)
        except PollTimeout as e:
            lines = [f"{g}: " + ("no log stream" if not seen[g][0] else
                                 f"streams {', '.join(seen[g][0][:3])} but no events")
                     for g in missing]
            raise ActionFailed(
                f"no container logs in {len(missing)} of {len(seen)} log groups after "
                f"{e.elapsed:.0f} s: " + "; ".join(lines),
                diagnosis="the containers do not log through the awslogs driver into "
                          "these groups: the compose file on the host still uses json-file, "
                          "names other groups, or the instance role may not write logs",
                fix="check `docker inspect -f '{{.HostConfig.LogConfig}}' <container>` on "
                    "the host and the role's logs:CreateLogStream/PutLogEvents grant "
                    "(CloudWatchAgentServerPolicy), then run harden again") from e
        for g, (streams, _) in seen.items():
            ctx.log(f"{g}: events in {', '.join(streams[:3])}")
        return Result(status="ok", outputs={"streams": {g: s for g, (s, _) in seen.items()},
                                            "events": {g: n for g, (_, n) in seen.items()}},
                      message=f"{len(seen)} log groups receive events")
