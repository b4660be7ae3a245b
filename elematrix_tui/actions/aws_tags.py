"""The tags every created resource carries, in the shapes the AWS APIs want."""

from __future__ import annotations

from typing import Any

from ..engine.action import StepContext

TAG_DEPLOYMENT = "elematrix:deployment"
TAG_RUN = "elematrix:run"


def tag_dict(ctx: StepContext, name: str | None = None,
             extra: dict[str, str] | None = None) -> dict[str, str]:
    """``{key: value}`` tags for a resource this run creates."""
    tags = {TAG_DEPLOYMENT: ctx.deployment, TAG_RUN: ctx.run_id}
    if name:
        tags["Name"] = name
    tags.update(extra or {})
    return tags


def tag_list(ctx: StepContext, name: str | None = None,
             extra: dict[str, str] | None = None) -> list[dict[str, str]]:
    """``[{"Key":..., "Value":...}]`` (EC2, IAM, CloudWatch, SNS use this shape)."""
    return [{"Key": k, "Value": v} for k, v in tag_dict(ctx, name, extra).items()]


def tag_spec(ctx: StepContext, resource_type: str, name: str | None = None) -> list[dict[str, Any]]:
    """EC2 ``TagSpecifications``: the tags land atomically with the resource."""
    return [{"ResourceType": resource_type, "Tags": tag_list(ctx, name)}]


def deployment_filter(deployment: str) -> list[dict[str, Any]]:
    """EC2 describe ``Filters`` selecting resources of one deployment."""
    return [{"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [deployment]}]


def has_deployment_tag(tags: list[dict[str, str]] | dict[str, str] | None,
                       deployment: str) -> bool:
    """True when a tag list/dict carries ``elematrix:deployment=deployment``."""
    if not tags:
        return False
    if isinstance(tags, dict):
        return tags.get(TAG_DEPLOYMENT) == deployment
    return any(t.get("Key") == TAG_DEPLOYMENT and t.get("Value") == deployment for t in tags)
