"""The Data Lifecycle Manager kind: an EBS snapshot schedule for the deployment's volumes.

A lifecycle policy has no name of its own: it is found by its tags (the deployment tag
and ``Name``), and it targets the volumes that carry the deployment tag (the instance kind
tags the root volume in RunInstances' ``TagSpecifications``). DLM's request rules
(Description ``[0-9A-Za-z _-]``, Interval one of 1, 2, 3, 4, 6, 8, 12, 24 hours, one
start time ``hh:mm`` UTC, 1-1000 snapshots kept) are checked in the spec, so a bad value
is a validation error before any AWS call.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ...engine.action import StepContext
from ..aws_session import AwsApi
from ..aws_tags import TAG_DEPLOYMENT, tag_dict
from .base import Found, Kind, Spec, safe_call

# DLM API Reference, CreateRule: "The supported values are 1, 2, 3, 4, 6, 8, 12, and 24".
DLM_INTERVALS = (1, 2, 3, 4, 6, 8, 12, 24)
DlmInterval = Literal[1, 2, 3, 4, 6, 8, 12, 24]
SCHEDULE_NAME = "elematrix root volume"


class SnapshotPolicySpec(Spec):
    # The execution role (trusted by dlm.amazonaws.com, with the AWS-managed
    # AWSDataLifecycleManagerServiceRole policy): the iam_role step's role_arn.
    role_arn: str
    # Start of the daily window, UTC ("hh:mm"); DLM starts within the hour after it.
    time: str = Field(default="03:00", pattern=r"^(0[0-9]|1[0-9]|2[0-3]):[0-5][0-9]$")
    interval_hours: DlmInterval = 24
    # Snapshots kept per volume (DLM deletes the oldest beyond it).
    retain: int = Field(default=7, ge=1, le=1000)
    enabled: bool = True


def _description(ctx: StepContext) -> str:
    # DLM's PolicyDescription pattern is [0-9A-Za-z _-]+: no colon, no dot.
    return f"elematrix {ctx.deployment} root volume snapshots"


def _details(ctx: StepContext, spec: SnapshotPolicySpec) -> dict[str, Any]:
    """The PolicyDetails the policy must have."""
    return {
        "PolicyType": "EBS_SNAPSHOT_MANAGEMENT",
        "ResourceTypes": ["VOLUME"],
        "TargetTags": [{"Key": TAG_DEPLOYMENT, "Value": ctx.deployment}],
        "Schedules": [{
            "Name": SCHEDULE_NAME,
            # The volume's tags (the deployment tag among them) go onto its snapshots, so
            # the teardown finds them.
            "CopyTags": True,
            "CreateRule": {"Interval": spec.interval_hours, "IntervalUnit": "HOURS",
                           "Times": [spec.time]},
            "RetainRule": {"Count": spec.retain},
        }],
    }


def _view(details: dict[str, Any]) -> list[Any]:
    """What is compared of a policy's details, whatever else DLM adds to its answer."""
    s = (details.get("Schedules") or [{}])[0]
    rule, keep = s.get("CreateRule") or {}, s.get("RetainRule") or {}
    return [details.get("PolicyType"), details.get("ResourceTypes"),
            sorted((t.get("Key"), t.get("Value")) for t in details.get("TargetTags") or []),
            len(details.get("Schedules") or []), bool(s.get("CopyTags")),
            rule.get("Interval"), rule.get("IntervalUnit"), rule.get("Times"),
            rule.get("CronExpression"), keep.get("Count")]


def _state(spec: SnapshotPolicySpec) -> str:
    return "ENABLED" if spec.enabled else "DISABLED"


def _schedule_text(spec: SnapshotPolicySpec) -> str:
    every = "daily" if spec.interval_hours == 24 else f"every {spec.interval_hours} h"
    return f"{every} from {spec.time} UTC, keep {spec.retain}"


def _outputs(ctx: StepContext, policy: dict[str, Any]) -> dict[str, Any]:
    return {"policy_id": policy["PolicyId"], "policy_arn": policy.get("PolicyArn", ""),
            "state": policy.get("State"),
            "target_tag": f"{TAG_DEPLOYMENT}={ctx.deployment}"}


class SnapshotPolicy(Kind[SnapshotPolicySpec]):
    """A DLM lifecycle policy snapshotting the deployment's tagged volumes."""

    Spec = SnapshotPolicySpec
    title = "DLM snapshot policy"

    @staticmethod
    def _ours(api: AwsApi, ctx: StepContext, name: str) -> list[dict[str, Any]]:
        """The policies tagged for this deployment and ``name`` (summaries)."""
        r = safe_call(api, "dlm", "get_lifecycle_policies", ("ResourceNotFoundException",))
        return [p for p in (r or {}).get("Policies", [])
                if (p.get("Tags") or {}).get(TAG_DEPLOYMENT) == ctx.deployment
                and (p.get("Tags") or {}).get("Name") == name]

    def find(self, api: AwsApi, ctx: StepContext, name: str,
             spec: SnapshotPolicySpec) -> Found:
        ours = sorted(self._ours(api, ctx, name), key=lambda p: str(p["PolicyId"]))
        if not ours:
            return Found(None, changes=[
                f"create DLM policy {name}: snapshots of the volumes tagged "
                f"{TAG_DEPLOYMENT}={ctx.deployment}, {_schedule_text(spec)}, "
                f"{_state(spec).lower()}"])
        policy = api.checked("dlm", "get_lifecycle_policy",
                             PolicyId=ours[0]["PolicyId"])["Policy"]
        changes: list[str] = [f"delete duplicate DLM policy {p['PolicyId']}" for p in ours[1:]]
        if policy.get("State") != _state(spec):
            changes.append(f"{'enable' if spec.enabled else 'disable'} DLM policy "
                           f"{policy['PolicyId']} (it is {policy.get('State')})")
        if _view(policy.get("PolicyDetails") or {}) != _view(_details(ctx, spec)):
            changes.append(f"set the schedule of {policy['PolicyId']}: volumes tagged "
                           f"{TAG_DEPLOYMENT}={ctx.deployment}, {_schedule_text(spec)}")
        if policy.get("ExecutionRoleArn") != spec.role_arn:
            changes.append(f"set the execution role of {policy['PolicyId']} to "
                           f"{spec.role_arn}")
        if policy.get("Description") != _description(ctx):
            changes.append(f"set the description of {policy['PolicyId']}")
        return Found(policy, _outputs(ctx, policy), changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: SnapshotPolicySpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        want = {"ExecutionRoleArn": spec.role_arn, "Description": _description(ctx),
                "State": _state(spec), "PolicyDetails": _details(ctx, spec)}
        if found.obj is None:
            # Tags in the create call: a kill after it cannot leave an untagged policy
            # that a resumed run would not find (DLM has no client token).
            pid = api.checked("dlm", "create_lifecycle_policy", **want,
                              Tags=tag_dict(ctx, name))["PolicyId"]
            policy = api.checked("dlm", "get_lifecycle_policy", PolicyId=pid)["Policy"]
            return _outputs(ctx, policy), True
        pid = found.obj["PolicyId"]
        for change in found.changes:
            if change.startswith("delete duplicate DLM policy "):
                safe_call(api, "dlm", "delete_lifecycle_policy",
                          ("ResourceNotFoundException",), PolicyId=change.rsplit(" ", 1)[-1])
        if any(not c.startswith("delete duplicate") for c in found.changes):
            api.checked("dlm", "update_lifecycle_policy", PolicyId=pid, **want)
        policy = api.checked("dlm", "get_lifecycle_policy", PolicyId=pid)["Policy"]
        return _outputs(ctx, policy), bool(found.changes)
