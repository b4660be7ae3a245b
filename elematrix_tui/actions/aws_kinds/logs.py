"""The CloudWatch Logs kind: one log group per logged compose service, with retention."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ...engine.action import StepContext
from ..aws_errors import error_code, explain
from ..aws_session import AwsApi
from ..aws_tags import tag_dict
from .base import Found, Kind, Spec


def _logged_services() -> list[str]:
    from ...stack.values import LOGGED_SERVICES

    return list(LOGGED_SERVICES)


class LogGroupsSpec(Spec):
    # Default: the stack's logged compose services (stack/values.py: LOGGED_SERVICES), so
    # the groups are exactly the ones the rendered compose file's awslogs driver writes to.
    names: list[str] = Field(default_factory=_logged_services)
    retention_days: int = 30


class LogGroups(Kind[LogGroupsSpec]):
    """Log groups ``<name>/<service>`` with retention; outputs the compose awslogs options.

    ``name`` is the prefix (``log_group_prefix`` of ``stack.render``); the group names
    come from ``stack.values.log_group_name``, the one naming scheme of container logs.
    """

    Spec = LogGroupsSpec
    title = "log groups"

    def _full(self, name: str, spec: LogGroupsSpec) -> list[str]:
        from ...stack.values import log_group_name

        return [log_group_name(name, n) for n in spec.names]

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: LogGroupsSpec) -> Found:
        groups = {g["logGroupName"]: g for g in api.checked(
            "logs", "describe_log_groups", logGroupNamePrefix=name)["logGroups"]}
        changes = []
        for g in self._full(name, spec):
            if g not in groups:
                changes.append(f"create log group {g} (retention {spec.retention_days} days)")
            elif groups[g].get("retentionInDays") != spec.retention_days:
                changes.append(f"set retention of {g} to {spec.retention_days} days")
        return Found(groups or None, self._outputs(api, name, spec), changes)

    def _outputs(self, api: AwsApi, name: str, spec: LogGroupsSpec) -> dict[str, Any]:
        return {"log_groups": self._full(name, spec), "prefix": name,
                "awslogs": {n: {"driver": "awslogs", "options": {
                    "awslogs-region": api.region, "awslogs-group": group,
                    "mode": "non-blocking"}}
                    for n, group in zip(spec.names, self._full(name, spec), strict=True)}}

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: LogGroupsSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        have = found.obj or {}
        for g in self._full(name, spec):
            if g not in have:
                try:
                    api.call("logs", "create_log_group", logGroupName=g,
                             tags=tag_dict(ctx, g))
                except Exception as e:
                    if error_code(e) != "ResourceAlreadyExistsException":
                        raise explain(e, "logs", "create_log_group", api.region) from e
            if have.get(g, {}).get("retentionInDays") != spec.retention_days:
                api.checked("logs", "put_retention_policy", logGroupName=g,
                            retentionInDays=spec.retention_days)
        return self._outputs(api, name, spec), bool(found.changes)
