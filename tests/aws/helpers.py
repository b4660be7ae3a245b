"""Helpers shared by the AWS tests: counting tagged resources independently of the code
under test, and injecting AWS errors through a botocore ``before-send`` handler."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

TAG = "elematrix:deployment"


def _tagged(tags: list[dict[str, str]] | None, dep: str) -> bool:
    return any(t.get("Key") == TAG and t.get("Value") == dep for t in tags or [])


def count_tagged(session: Any, dep: str) -> dict[str, int]:
    """How many live resources of each kind carry elematrix:deployment=dep.

    Written with plain boto3 calls (not the action layer) so it checks the actions.
    """
    ec2 = session.client("ec2")
    flt = [{"Name": f"tag:{TAG}", "Values": [dep]}]
    out: dict[str, int] = {}
    res = ec2.describe_instances(Filters=[*flt, {"Name": "instance-state-name", "Values": [
        "pending", "running", "stopping", "stopped"]}])["Reservations"]
    out["instance"] = sum(len(r["Instances"]) for r in res)
    out["eip"] = len(ec2.describe_addresses(Filters=flt)["Addresses"])
    out["security_group"] = len(ec2.describe_security_groups(Filters=flt)["SecurityGroups"])
    out["key_pair"] = len(ec2.describe_key_pairs(Filters=flt)["KeyPairs"])
    out["volume"] = len(ec2.describe_volumes(Filters=[*flt, {"Name": "status", "Values": [
        "creating", "available", "in-use"]}])["Volumes"])
    out["snapshot"] = len(ec2.describe_snapshots(OwnerIds=["self"], Filters=flt)["Snapshots"])
    iam = session.client("iam")
    out["role"] = sum(1 for r in iam.list_roles()["Roles"]
                      if _tagged(iam.list_role_tags(RoleName=r["RoleName"])["Tags"], dep))
    out["instance_profile"] = sum(
        1 for p in iam.list_instance_profiles()["InstanceProfiles"]
        if _tagged(iam.get_instance_profile(InstanceProfileName=p["InstanceProfileName"])
                   ["InstanceProfile"].get("Tags"), dep))
    s3 = session.client("s3")
    n = 0
    for b in s3.list_buckets().get("Buckets", []):
        try:
            if _tagged(s3.get_bucket_tagging(Bucket=b["Name"])["TagSet"], dep):
                n += 1
        except Exception:
            # An untagged bucket with our name still counts: it would be an orphan.
            if b["Name"].startswith(f"elematrix-{dep}-"):
                n += 1
    out["bucket"] = n
    cw = session.client("cloudwatch")
    out["alarm"] = sum(
        1 for a in cw.describe_alarms()["MetricAlarms"]
        if _tagged(cw.list_tags_for_resource(ResourceARN=a["AlarmArn"])["Tags"], dep))
    sns = session.client("sns")
    out["topic"] = sum(
        1 for t in sns.list_topics()["Topics"]
        if _tagged(sns.list_tags_for_resource(ResourceArn=t["TopicArn"])["Tags"], dep))
    logs = session.client("logs")
    out["log_group"] = sum(
        1 for g in logs.describe_log_groups()["logGroups"]
        if logs.list_tags_log_group(logGroupName=g["logGroupName"])["tags"].get(TAG) == dep)
    out["dlm_policy"] = sum(1 for p in session.client("dlm").get_lifecycle_policies()["Policies"]
                            if (p.get("Tags") or {}).get(TAG) == dep)
    out["snapshot"] = len(ec2.describe_snapshots(OwnerIds=["self"], Filters=flt)["Snapshots"])
    return out


def count_all(session: Any) -> dict[str, int]:
    """Every live resource of the kinds infra creates, tagged or not (for 'exactly')."""
    ec2 = session.client("ec2")
    res = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": [
        "pending", "running", "stopping", "stopped"]}])["Reservations"]
    return {
        "instance": sum(len(r["Instances"]) for r in res),
        "eip": len(ec2.describe_addresses()["Addresses"]),
        "security_group": len(ec2.describe_security_groups()["SecurityGroups"]),
        "key_pair": len(ec2.describe_key_pairs()["KeyPairs"]),
        "volume": len(ec2.describe_volumes()["Volumes"]),
        "role": len(session.client("iam").list_roles()["Roles"]),
        "instance_profile": len(session.client("iam").list_instance_profiles()[
            "InstanceProfiles"]),
        "bucket": len(session.client("s3").list_buckets().get("Buckets", [])),
        "dlm_policy": len(session.client("dlm").get_lifecycle_policies()["Policies"]),
    }


# Two roles: the instance's and DLM's execution role (snapshot_schedule, on by default).
INFRA_SET = {"instance": 1, "eip": 1, "security_group": 1, "key_pair": 1, "volume": 1,
             "role": 2, "instance_profile": 1, "bucket": 1, "alarm": 0, "topic": 0,
             "log_group": 0, "dlm_policy": 1, "snapshot": 0}


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body


def error_response(code: str, message: str, status: int, protocol: str = "ec2") -> Any:
    """A botocore AWSResponse carrying an AWS error in the service's wire format."""
    from botocore.awsrequest import AWSResponse

    if protocol == "head":  # S3 HEAD: no body, the status is the code
        return AWSResponse("https://injected", status, {}, _Raw(b""))
    if protocol == "ec2":
        body = (f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message>"
                f"</Error></Errors><RequestID>injected-{code}</RequestID></Response>")
    else:  # query protocol (sts, iam, sns, cloudwatch)
        body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
                f"<Message>{message}</Message></Error>"
                f"<RequestId>injected-{code}</RequestId></ErrorResponse>")
    return AWSResponse("https://injected", status, {"x-amzn-requestid": f"injected-{code}"},
                       _Raw(body.encode()))


def inject(session: Any, event: str, code: str, message: str, *, status: int = 400,
           times: int | None = None, protocol: str = "ec2") -> list[int]:
    """Make ``times`` requests matching ``event`` (e.g. ``before-send.ec2.RunInstances``)
    fail with ``code`` (None: every request). Returns a one-item counter of injections."""
    counter = [0]

    def handler(**_: Any) -> Any:
        if times is not None and counter[0] >= times:
            return None
        counter[0] += 1
        return error_response(code, message, status, protocol)

    session.events.register_first(event, handler, unique_id=f"inject-{event}-{code}")
    return counter


def hook_sessions(fn: Callable[[Any], None]) -> None:
    """Run ``fn(boto3_session)`` on every AwsSession the actions create from now on."""
    from elematrix_tui.actions.aws_session import AwsSession

    AwsSession.on_create.append(lambda shared: fn(shared.session))


_ids = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{next(_ids)}"
