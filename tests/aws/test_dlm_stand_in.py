"""The DLM stand-in (elematrix_tui/practice_dlm.py) is at least as strict as DLM: each rule
its docstring copies from the DLM API Reference and botocore's service model is refused
with DLM's error code, as a botocore ClientError, through boto3 and the
``AWS_ENDPOINT_URL_DLM`` the tests' conftest sets (in-process moto here)."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from elematrix_tui.practice_dlm import ENV_ENDPOINT

TRUST_DLM = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "dlm.amazonaws.com"},
     "Action": "sts:AssumeRole"}]}
TRUST_EC2 = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
     "Action": "sts:AssumeRole"}]}
DETAILS: dict[str, Any] = {
    "PolicyType": "EBS_SNAPSHOT_MANAGEMENT", "ResourceTypes": ["VOLUME"],
    "TargetTags": [{"Key": "elematrix:deployment", "Value": "strict"}],
    "Schedules": [{"Name": "daily", "CreateRule": {"Interval": 24, "IntervalUnit": "HOURS",
                                                   "Times": ["03:00"]},
                   "RetainRule": {"Count": 7}}]}


@pytest.fixture(scope="module")
def dlm(moto: None) -> Any:
    from botocore.config import Config

    assert os.environ[ENV_ENDPOINT].startswith("http://127.0.0.1:")
    # botocore checks minimum lengths itself; without that the server's own rules are
    # what refuses (DLM enforces them too, for clients that do not validate).
    return boto3.client("dlm", region_name="us-east-1",
                        config=Config(parameter_validation=False))


@pytest.fixture(scope="module")
def roles(moto: None) -> dict[str, str]:
    iam = boto3.client("iam", region_name="us-east-1")
    return {name: iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(doc)
                                  )["Role"]["Arn"]
            for name, doc in (("dlm-ok", TRUST_DLM), ("ec2-only", TRUST_EC2))}


def _create(dlm: Any, role: str, **over: Any) -> Any:
    kw: dict[str, Any] = {"ExecutionRoleArn": role, "Description": "strict test",
                          "State": "ENABLED", "PolicyDetails": copy.deepcopy(DETAILS)}
    kw.update(over)
    return dlm.create_lifecycle_policy(**kw)


def _details(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    d = copy.deepcopy(DETAILS)
    target: Any = d
    for k in path[:-1]:
        target = target[k]
    if value is _DROP:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return d


_DROP = object()
RULE = ("Schedules", 0, "CreateRule")


@pytest.mark.parametrize(("why", "over"), [
    ("role that does not exist", {"ExecutionRoleArn": "arn:aws:iam::123456789012:role/nobody"}),
    ("role DLM cannot assume", {"ExecutionRoleArn": "ec2-only"}),
    ("role of another account", {"ExecutionRoleArn": "arn:aws:iam::210987654321:role/dlm-ok"}),
    ("not a role ARN", {"ExecutionRoleArn": "arn:aws:iam::123456789012:user/dlm-ok"}),
    ("interval 5 h", {"PolicyDetails": _details((*RULE, "Interval"), 5)}),
    ("interval 48 h", {"PolicyDetails": _details((*RULE, "Interval"), 48)}),
    ("no start time", {"PolicyDetails": _details((*RULE, "Times"), _DROP)}),
    ("bad start time", {"PolicyDetails": _details((*RULE, "Times"), ["3:00"])}),
    ("cron and interval", {"PolicyDetails": _details((*RULE, "CronExpression"),
                                                     "cron(0 3 * * ? *)")}),
    ("bad cron", {"PolicyDetails": {**DETAILS, "Schedules": [
        {"CreateRule": {"CronExpression": "0 3 * * ? *"}, "RetainRule": {"Count": 7}}]}}),
    ("retain 0", {"PolicyDetails": _details(("Schedules", 0, "RetainRule", "Count"), 0)}),
    ("retain 1001", {"PolicyDetails": _details(("Schedules", 0, "RetainRule", "Count"),
                                               1001)}),
    ("no retain rule", {"PolicyDetails": _details(("Schedules", 0, "RetainRule"), _DROP)}),
    ("no target tags", {"PolicyDetails": _details(("TargetTags",), _DROP)}),
    ("empty target tags", {"PolicyDetails": _details(("TargetTags",), [])}),
    ("resource type SNAPSHOT", {"PolicyDetails": _details(("ResourceTypes",), ["SNAPSHOT"])}),
    ("two resource types", {"PolicyDetails": _details(("ResourceTypes",),
                                                      ["VOLUME", "INSTANCE"])}),
    ("description with a colon", {"Description": "elematrix: daily"}),
    ("description of 501 characters", {"Description": "x" * 501}),
    ("state PAUSED", {"State": "PAUSED"}),
    ("tag key aws:", {"Tags": {"aws:reserved": "x"}}),
    ("five schedules", {"PolicyDetails": _details(("Schedules",), DETAILS["Schedules"] * 5)}),
])
def test_create_refuses_what_dlm_refuses(dlm: Any, roles: dict[str, str], why: str,
                                         over: dict[str, Any]) -> None:
    if over.get("ExecutionRoleArn") in roles:
        over = {**over, "ExecutionRoleArn": roles[over["ExecutionRoleArn"]]}
    with pytest.raises(ClientError) as e:
        _create(dlm, roles["dlm-ok"], **over)
    assert e.value.response["Error"]["Code"] == "InvalidRequestException", why
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_a_valid_policy_round_trips_and_unknown_ids_are_not_found(
        dlm: Any, roles: dict[str, str]) -> None:
    pid = _create(dlm, roles["dlm-ok"], Tags={"elematrix:deployment": "strict"})["PolicyId"]
    policy = dlm.get_lifecycle_policy(PolicyId=pid)["Policy"]
    assert policy["State"] == "ENABLED" and policy["PolicyArn"].endswith(f":policy/{pid}")
    assert policy["PolicyDetails"]["TargetTags"] == DETAILS["TargetTags"]
    listed = dlm.get_lifecycle_policies(TargetTags=["elematrix:deployment=strict"])["Policies"]
    assert [p["PolicyId"] for p in listed] == [pid]
    assert dlm.get_lifecycle_policies(TargetTags=["elematrix:deployment=other"])[
        "Policies"] == []
    # Update is checked as create is; a disabled policy lists as DISABLED.
    with pytest.raises(ClientError) as e:
        dlm.update_lifecycle_policy(PolicyId=pid, PolicyDetails=_details((*RULE, "Interval"), 7))
    assert e.value.response["Error"]["Code"] == "InvalidRequestException"
    with pytest.raises(ClientError) as e:
        dlm.update_lifecycle_policy(PolicyId=pid, ExecutionRoleArn=roles["ec2-only"])
    assert e.value.response["Error"]["Code"] == "InvalidRequestException"
    dlm.update_lifecycle_policy(PolicyId=pid, State="DISABLED")
    assert dlm.get_lifecycle_policies(State="DISABLED")["Policies"][0]["PolicyId"] == pid
    dlm.tag_resource(ResourceArn=policy["PolicyArn"], Tags={"Name": "x"})
    assert dlm.list_tags_for_resource(ResourceArn=policy["PolicyArn"])["Tags"] == {
        "elematrix:deployment": "strict", "Name": "x"}
    dlm.delete_lifecycle_policy(PolicyId=pid)
    for call, kw in ((dlm.get_lifecycle_policy, {"PolicyId": pid}),
                     (dlm.delete_lifecycle_policy, {"PolicyId": pid}),
                     (dlm.update_lifecycle_policy, {"PolicyId": pid, "State": "ENABLED"}),
                     (dlm.get_lifecycle_policies, {"PolicyIds": [pid]}),
                     (dlm.tag_resource, {"ResourceArn": policy["PolicyArn"],
                                         "Tags": {"a": "b"}})):
        with pytest.raises(ClientError) as e:
            call(**kw)
        assert e.value.response["Error"]["Code"] == "ResourceNotFoundException", call
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_the_policy_quota_is_a_limit_exceeded(dlm: Any, roles: dict[str, str]) -> None:
    from elematrix_tui.practice_dlm import POLICY_QUOTA

    have = len(dlm.get_lifecycle_policies()["Policies"])
    made = [_create(dlm, roles["dlm-ok"])["PolicyId"] for _ in range(POLICY_QUOTA - have)]
    try:
        # LimitExceededException is HTTP 429: botocore's standard mode retries it, so
        # keep this client from retrying (the same answer comes back each time).
        from botocore.config import Config

        once = boto3.client("dlm", region_name="us-east-1",
                            config=Config(retries={"total_max_attempts": 1},
                                          parameter_validation=False))
        with pytest.raises(ClientError) as e:
            _create(once, roles["dlm-ok"])
        assert e.value.response["Error"]["Code"] == "LimitExceededException"
    finally:
        for pid in made:
            dlm.delete_lifecycle_policy(PolicyId=pid)


def test_the_snapshot_policy_kind_finds_converges_and_never_creates_twice(
        moto: None, ctx: Any) -> None:
    """The ``snapshot_policy`` kind on the stand-in: created once with the deployment tag
    (on the policy, and as its target), found again, and a disabled or changed policy is
    drift the next run converges."""
    from elematrix_tui.actions.aws import Ensure

    dep = ctx.deployment
    role = ctx.run(Ensure(), {"kind": "iam_role", "name": f"elematrix-{dep}-dlm", "spec": {
        "trust_policy": "aws/dlm-trust-policy.json",
        "managed_policies": [
            "arn:aws:iam::aws:policy/service-role/AWSDataLifecycleManagerServiceRole"]}})
    inputs = {"kind": "snapshot_policy", "name": f"elematrix-{dep}-root",
              "spec": {"role_arn": role.outputs["role_arn"], "time": "03:00", "retain": 7}}
    assert ctx.check(Ensure(), inputs).changes[0].startswith(f"create DLM policy elematrix-{dep}")
    first = ctx.run(Ensure(), inputs)
    assert first.status == "changed" and first.outputs["state"] == "ENABLED"
    assert ctx.check(Ensure(), inputs).in_sync
    again = ctx.run(Ensure(), inputs)
    assert again.status == "ok" and again.outputs["policy_id"] == first.outputs["policy_id"]
    dlm = boto3.client("dlm", region_name="us-east-1")
    ours = [p for p in dlm.get_lifecycle_policies()["Policies"]
            if p["Tags"].get("elematrix:deployment") == dep]
    assert [p["PolicyId"] for p in ours] == [first.outputs["policy_id"]]
    got = dlm.get_lifecycle_policy(PolicyId=first.outputs["policy_id"])["Policy"]
    assert got["PolicyDetails"]["TargetTags"] == [{"Key": "elematrix:deployment", "Value": dep}]
    rule = got["PolicyDetails"]["Schedules"][0]
    assert (rule["CreateRule"], rule["RetainRule"]) == (
        {"Interval": 24, "IntervalUnit": "HOURS", "Times": ["03:00"]}, {"Count": 7})

    dlm.update_lifecycle_policy(PolicyId=first.outputs["policy_id"], State="DISABLED")
    drift = ctx.check(Ensure(), inputs)
    assert not drift.in_sync and any(c.startswith("enable DLM policy") for c in drift.changes)
    assert ctx.run(Ensure(), inputs).outputs["state"] == "ENABLED"
    longer = {**inputs, "spec": {**inputs["spec"], "retain": 14}}
    assert any("keep 14" in c for c in ctx.check(Ensure(), longer).changes)
    ctx.run(Ensure(), longer)
    assert dlm.get_lifecycle_policy(PolicyId=first.outputs["policy_id"])["Policy"][
        "PolicyDetails"]["Schedules"][0]["RetainRule"] == {"Count": 14}
    # DLM's own rules are the spec's: a bad value is refused before any AWS call.
    with pytest.raises(Exception, match="interval_hours"):
        ctx.check(Ensure(), {**inputs, "spec": {**inputs["spec"], "interval_hours": 5}})
