"""Discovery and deletion of everything a deployment created, by its deployment tag.

Discovery is read-only and cheap to repeat, so teardown is resumable: a second run finds
only what the first did not delete yet. Deletion goes in dependency order (alarms before
topics, the Elastic IP and instance before the security group, profile before role...),
and every delete treats "already gone" as success.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..engine.action import ActionFailed, StepContext
from ..engine.poll import PollCancelled, PollTimeout, poll_step
from .aws_errors import error_code, explain
from .aws_kinds.base import safe_call
from .aws_session import AwsApi
from .aws_tags import TAG_DEPLOYMENT, deployment_filter, has_deployment_tag
from .aws_teardown_managed import (
    BACK,
    DATA_KINDS,
    FRONT,
    delete_back,
    delete_front,
    discover_managed,
    held,
    revoke_group_references,
)

# Deletion order; discovery fills the same keys. The production runbook's managed services
# (``aws_teardown_managed``) go before the instances (FRONT) and after their groups (BACK).
ORDER = ["alarm", "topic", "log_group", "ssm_parameter", "dlm_policy", *FRONT, "eip",
         "instance", "security_group", *BACK, "instance_profile", "role", "key_pair",
         "snapshot", "bucket"]


@dataclass
class Inventory:
    items: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in ORDER})
    # Extra facts needed to delete (EIP association ids, profile roles...).
    extra: dict[str, Any] = field(default_factory=dict)

    def kept(self, kind: str, ident: str, include_bucket: bool) -> bool:
        """Data stores (and what a kept database stands in) stay without the typed
        confirmation."""
        if include_bucket:
            return False
        return kind in DATA_KINDS or held(self.extra, self.items, kind, ident)

    def lines(self, include_bucket: bool) -> list[str]:
        out = []
        for k in ORDER:
            for ident in self.items[k]:
                if k == "bucket" and not include_bucket:
                    out.append(f"keep bucket {ident} (holds backups; pass "
                               "confirm_deployment=<deployment name> to delete it)")
                elif k == "snapshot" and not include_bucket:
                    out.append(f"keep snapshot {ident} (a copy of the instance's disk, "
                               "database included: a DLM backup or the upgrade runbook's "
                               "pre-upgrade snapshot; pass confirm_deployment=<deployment "
                               "name> to delete it)")
                elif k == "db_instance" and not include_bucket:
                    out.append(f"keep db instance {ident} (holds the Synapse database; pass "
                               "confirm_deployment=<deployment name> to delete it)")
                elif self.kept(k, ident, include_bucket):
                    out.append(f"keep {k.replace('_', ' ')} {ident} (the kept database "
                               "stands in it)")
                else:
                    out.append(f"delete {k.replace('_', ' ')} {ident}")
        return out

    def count(self, include_bucket: bool) -> int:
        return sum(1 for k, v in self.items.items() for ident in v
                   if not self.kept(k, ident, include_bucket))


def _pages(api: AwsApi, service: str, op: str, key: str, token_in: str, token_out: str,
           **params: Any) -> list[Any]:
    out: list[Any] = []
    token = None
    while True:
        kw = dict(params)
        if token:
            kw[token_in] = token
        r = api.checked(service, op, **kw)
        out += r.get(key, [])
        token = r.get(token_out)
        if not token:
            return out


def discover(api: AwsApi, ctx: StepContext, prefix: str, log_prefix: str,
             ssm_prefix: str, managed: bool = False) -> Inventory:
    """Find every resource tagged ``elematrix:deployment=<ctx.deployment>`` (``managed``:
    the production runbook's ALB, ACM, Route 53, ElastiCache, RDS and VPC too)."""
    dep = ctx.deployment
    inv = Inventory()
    if managed:
        discover_managed(api, ctx, inv.items, inv.extra)
    # EC2: the tag filter does the work.
    for r in api.checked("ec2", "describe_instances", Filters=[
            *deployment_filter(dep),
            {"Name": "instance-state-name",
             "Values": ["pending", "running", "stopping", "stopped", "shutting-down"]}],
            )["Reservations"]:
        inv.items["instance"] += [i["InstanceId"] for i in r["Instances"]]
    for a in api.checked("ec2", "describe_addresses", Filters=deployment_filter(dep))["Addresses"]:
        inv.items["eip"].append(a["AllocationId"])
        inv.extra.setdefault("eip_assoc", {})[a["AllocationId"]] = a.get("AssociationId")
    for g in api.checked("ec2", "describe_security_groups",
                         Filters=deployment_filter(dep))["SecurityGroups"]:
        inv.items["security_group"].append(g["GroupId"])
    for k in api.checked("ec2", "describe_key_pairs", Filters=deployment_filter(dep))["KeyPairs"]:
        inv.items["key_pair"].append(k["KeyName"])
    # IAM: list by name prefix (cheap), then trust only the tag.
    for role in _pages(api, "iam", "list_roles", "Roles", "Marker", "Marker"):
        if role["RoleName"].startswith(prefix):
            tags = api.checked("iam", "list_role_tags", RoleName=role["RoleName"])["Tags"]
            if has_deployment_tag(tags, dep):
                inv.items["role"].append(role["RoleName"])
    for ip in _pages(api, "iam", "list_instance_profiles", "InstanceProfiles", "Marker",
                     "Marker"):
        if ip["InstanceProfileName"].startswith(prefix):
            # ListInstanceProfiles omits tags; GetInstanceProfile has them (and moto lacks
            # ListInstanceProfileTags).
            full = api.checked("iam", "get_instance_profile",
                               InstanceProfileName=ip["InstanceProfileName"])["InstanceProfile"]
            if has_deployment_tag(full.get("Tags", []), dep):
                inv.items["instance_profile"].append(ip["InstanceProfileName"])
                inv.extra.setdefault("profile_roles", {})[ip["InstanceProfileName"]] = [
                    x["RoleName"] for x in ip.get("Roles", [])]
    # CloudWatch, SNS, logs, SSM: names carry the deployment; the tag decides.
    for a in api.checked("cloudwatch", "describe_alarms",
                         AlarmNamePrefix=prefix)["MetricAlarms"]:
        tags = api.checked("cloudwatch", "list_tags_for_resource",
                           ResourceARN=a["AlarmArn"])["Tags"]
        if has_deployment_tag(tags, dep):
            inv.items["alarm"].append(a["AlarmName"])
    for t in _pages(api, "sns", "list_topics", "Topics", "NextToken", "NextToken"):
        arn = t["TopicArn"]
        if arn.rsplit(":", 1)[-1].startswith(prefix):
            tags = api.checked("sns", "list_tags_for_resource", ResourceArn=arn)["Tags"]
            if has_deployment_tag(tags, dep):
                inv.items["topic"].append(arn)
    for g in api.checked("logs", "describe_log_groups",
                         logGroupNamePrefix=log_prefix + "/")["logGroups"]:
        tags = api.checked("logs", "list_tags_log_group",
                           logGroupName=g["logGroupName"]).get("tags", {})
        if has_deployment_tag(tags, dep):
            inv.items["log_group"].append(g["logGroupName"])
    for p in _pages(api, "ssm", "describe_parameters", "Parameters", "NextToken", "NextToken",
                    ParameterFilters=[{"Key": "Name", "Option": "BeginsWith",
                                       "Values": [ssm_prefix]}]):
        tags = api.checked("ssm", "list_tags_for_resource", ResourceType="Parameter",
                           ResourceId=p["Name"])["TagList"]
        if has_deployment_tag(tags, dep):
            inv.items["ssm_parameter"].append(p["Name"])
    # DLM: the policies carry the deployment tag (set in the create call). Snapshots: the
    # ones DLM took carry it (CopyTags copies the volume's tags), and so do the upgrade
    # runbook's pre-upgrade ones; only this account's own (OwnerIds=self: never the
    # public snapshots EC2 would list too). One listing: both were listed twice.
    r = safe_call(api, "dlm", "get_lifecycle_policies", ("ResourceNotFoundException",))
    inv.items["dlm_policy"] += [p["PolicyId"] for p in (r or {}).get("Policies", [])
                                if has_deployment_tag(p.get("Tags") or {}, dep)]
    for snap in _pages(api, "ec2", "describe_snapshots", "Snapshots", "NextToken",
                       "NextToken", OwnerIds=["self"], Filters=deployment_filter(dep)):
        inv.items["snapshot"].append(snap["SnapshotId"])
    # S3: a bucket may be untagged if a run died between create and tag; its name is ours.
    expected = f"{prefix}-{api.account_id}"
    for b in api.checked("s3", "list_buckets").get("Buckets", []):
        name = b["Name"]
        if not name.startswith(prefix + "-"):
            continue
        try:
            tags = api.call("s3", "get_bucket_tagging", quiet=True, Bucket=name)["TagSet"]
        except Exception as e:
            if error_code(e) not in ("NoSuchTagSet", "NoSuchBucket"):
                raise explain(e, "s3", "get_bucket_tagging", api.region) from e
            tags = []
        if has_deployment_tag(tags, dep) or (not tags and name == expected):
            inv.items["bucket"].append(name)
    return inv


def _gone(api: AwsApi, service: str, op: str, gone_codes: tuple[str, ...],
          **params: Any) -> None:
    """A delete that treats 'not found' as already done."""
    try:
        api.call(service, op, **params)
    except Exception as e:
        if error_code(e) in gone_codes:
            return
        raise explain(e, service, op, api.region) from e


def _retry_dependency(ctx: StepContext, fn: Any, what: str, max_wait: float) -> None:
    """Security groups stay 'in use' for a while after their instance terminated."""
    last: list[ActionFailed] = []

    def probe(attempt: int) -> bool | None:
        try:
            fn()
            return True
        except ActionFailed as e:
            if "DependencyViolation" not in e.message:
                raise
            last[:] = [e]
            return None

    try:
        poll_step(ctx, probe, what=f"{what} to be free", timeout=max_wait, interval=5,
                  on_wait=lambda a: ctx.progress(f"{what} still in use; retrying", None, None))
    except (PollTimeout, PollCancelled) as e:
        if not last:  # cancelled before the first try: nothing was refused yet
            raise
        # The dependency error itself says what still holds the resource.
        raise last[-1] from e


def delete_all(api: AwsApi, ctx: StepContext, inv: Inventory, include_bucket: bool,
               max_wait: float) -> list[str]:
    """Delete the inventory in dependency order; returns what was deleted."""
    done: list[str] = []
    it = inv.items
    done += delete_front(api, ctx, it, inv.extra, include_bucket, max_wait)
    if it["alarm"]:
        _gone(api, "cloudwatch", "delete_alarms", (), AlarmNames=it["alarm"])
        done += [f"alarm {a}" for a in it["alarm"]]
    for arn in it["topic"]:
        _gone(api, "sns", "delete_topic", ("NotFound",), TopicArn=arn)
        done.append(f"topic {arn}")
    for g in it["log_group"]:
        _gone(api, "logs", "delete_log_group", ("ResourceNotFoundException",), logGroupName=g)
        done.append(f"log group {g}")
    for p in it["ssm_parameter"]:
        _gone(api, "ssm", "delete_parameter", ("ParameterNotFound",), Name=p)
        done.append(f"ssm parameter {p}")
    for pid in it["dlm_policy"]:
        # First: a deleted policy takes no snapshot of a volume that is about to go.
        _gone(api, "dlm", "delete_lifecycle_policy", ("ResourceNotFoundException",),
              PolicyId=pid)
        done.append(f"dlm policy {pid}")
    for alloc in it["eip"]:
        assoc = inv.extra.get("eip_assoc", {}).get(alloc)
        if assoc:
            _gone(api, "ec2", "disassociate_address",
                  ("InvalidAssociationID.NotFound",), AssociationId=assoc)
        _gone(api, "ec2", "release_address", ("InvalidAllocationID.NotFound",),
              AllocationId=alloc)
        done.append(f"elastic ip {alloc}")
    if it["instance"]:
        _gone(api, "ec2", "terminate_instances", ("InvalidInstanceID.NotFound",),
              InstanceIds=it["instance"])
        _wait_terminated(api, ctx, it["instance"], max_wait)
        done += [f"instance {i}" for i in it["instance"]]
    doomed = [g for g in it["security_group"]
              if not inv.kept("security_group", g, include_bucket)]
    if len(it["security_group"]) > 1:
        # Our groups name each other (instances from the ALB's group, RDS from the
        # instances'): EC2 refuses to delete a group another group's rule still names.
        revoke_group_references(api, it["security_group"])
    for gid in doomed:
        _retry_dependency(ctx, lambda g=gid: _gone(api, "ec2", "delete_security_group",
                                                   ("InvalidGroup.NotFound",), GroupId=g),
                          f"security group {gid}", max_wait)
        done.append(f"security group {gid}")
    done += delete_back(api, ctx, it, inv.extra, include_bucket, max_wait)
    for name in it["instance_profile"]:
        for role in inv.extra.get("profile_roles", {}).get(name, []):
            _gone(api, "iam", "remove_role_from_instance_profile", ("NoSuchEntity",),
                  InstanceProfileName=name, RoleName=role)
        _gone(api, "iam", "delete_instance_profile", ("NoSuchEntity",),
              InstanceProfileName=name)
        done.append(f"instance profile {name}")
    for role in it["role"]:
        _delete_role(api, role)
        done.append(f"role {role}")
    for k in it["key_pair"]:
        _gone(api, "ec2", "delete_key_pair", (), KeyName=k)
        done.append(f"key pair {k}")
    if include_bucket:
        for snap in it["snapshot"]:
            _gone(api, "ec2", "delete_snapshot", ("InvalidSnapshot.NotFound",),
                  SnapshotId=snap)
            done.append(f"snapshot {snap}")
        for b in it["bucket"]:
            _empty_and_delete_bucket(api, ctx, b)
            done.append(f"bucket {b}")
    return done


def _wait_terminated(api: AwsApi, ctx: StepContext, ids: list[str], max_wait: float) -> None:
    t0 = time.monotonic()
    left: list[str] = list(ids)

    def probe(attempt: int) -> bool | None:
        res = api.checked("ec2", "describe_instances", InstanceIds=ids)["Reservations"]
        states = {i["InstanceId"]: i["State"]["Name"] for r in res for i in r["Instances"]}
        left[:] = [i for i, s in states.items() if s != "terminated"]
        ctx.progress(f"waiting for {len(left)} instance(s) to terminate "
                     f"(attempt {attempt}, {time.monotonic() - t0:.0f}s)", None, None)
        return True if not left else None

    try:
        poll_step(ctx, probe, what="instances to terminate", timeout=max_wait, interval=5)
    except PollTimeout as e:
        raise ActionFailed(f"instances {', '.join(left)} did not terminate in "
                           f"{max_wait:.0f}s", fix="Resume the teardown later.") from e
    except PollCancelled as e:
        raise ActionFailed("teardown interrupted while waiting for termination") from e


def _delete_role(api: AwsApi, role: str) -> None:
    try:
        attached = api.call("iam", "list_attached_role_policies",
                            RoleName=role)["AttachedPolicies"]
        inline = api.call("iam", "list_role_policies", RoleName=role)["PolicyNames"]
    except Exception as e:
        if error_code(e) == "NoSuchEntity":
            return
        raise explain(e, "iam", "list_role_policies", api.region) from e
    for p in attached:
        _gone(api, "iam", "detach_role_policy", ("NoSuchEntity",), RoleName=role,
              PolicyArn=p["PolicyArn"])
    for n in inline:
        _gone(api, "iam", "delete_role_policy", ("NoSuchEntity",), RoleName=role, PolicyName=n)
    for ip in api.checked("iam", "list_instance_profiles_for_role",
                          RoleName=role)["InstanceProfiles"]:
        _gone(api, "iam", "remove_role_from_instance_profile", ("NoSuchEntity",),
              InstanceProfileName=ip["InstanceProfileName"], RoleName=role)
    _gone(api, "iam", "delete_role", ("NoSuchEntity",), RoleName=role)


# At most this many list+delete rounds of 1000 versions (10 million object versions):
# a bucket that is still not empty then is being written to while we delete.
MAX_EMPTY_ROUNDS = 10_000
# How many refused keys the failure message names (all are in the log).
_SHOWN_ERRORS = 10


def _empty_and_delete_bucket(api: AwsApi, ctx: StepContext, bucket: str,
                             max_rounds: int = MAX_EMPTY_ROUNDS) -> None:
    """Delete every object version and delete marker, then the bucket. Bounded: S3's
    per-key refusals (``Errors`` in the DeleteObjects answer: Object Lock retention, a
    legal hold, a policy denying s3:DeleteObjectVersion) fail the step at once with the
    keys and codes, instead of listing and re-deleting the same keys forever."""
    for _round in range(max_rounds):
        if ctx.cancel.is_set():
            raise ActionFailed(f"teardown interrupted while emptying bucket {bucket}")
        try:
            r = api.call("s3", "list_object_versions", Bucket=bucket, MaxKeys=1000)
        except Exception as e:
            if error_code(e) == "NoSuchBucket":
                return
            raise explain(e, "s3", "list_object_versions", api.region) from e
        objs = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in r.get("Versions", []) + r.get("DeleteMarkers", [])]
        if not objs:
            break
        ctx.log(f"deleting {len(objs)} object version(s) from {bucket}")
        resp = api.checked("s3", "delete_objects", Bucket=bucket,
                           Delete={"Objects": objs, "Quiet": True})
        errors = resp.get("Errors") or []
        if errors:
            lines = [f"{e.get('Key')}"
                     + (f" (version {e['VersionId']})" if e.get("VersionId") else "")
                     + f": {e.get('Code')} {e.get('Message', '')}".rstrip()
                     for e in errors]
            for ln in lines:
                ctx.log(f"S3 refused to delete {ln}", "stderr")
            more = (f"; and {len(lines) - _SHOWN_ERRORS} more (see the log)"
                    if len(lines) > _SHOWN_ERRORS else "")
            raise ActionFailed(
                f"bucket {bucket}: S3 refused to delete {len(errors)} of {len(objs)} object "
                f"version(s): " + "; ".join(lines[:_SHOWN_ERRORS]) + more,
                diagnosis="DeleteObjects answered per-key errors. AccessDenied usually means "
                          "S3 Object Lock (retention or a legal hold) protects the version, or "
                          "a bucket/SCP policy denies s3:DeleteObjectVersion.",
                fix="Wait for the retention to end or remove the legal hold (or the deny), "
                    "then resume the teardown; the bucket is kept until then.")
    else:
        raise ActionFailed(
            f"bucket {bucket} still holds object versions after {max_rounds} rounds of "
            "1000 deletions",
            diagnosis="Something keeps writing to the bucket (the instance's backup timer, "
                      "replication) while the teardown empties it.",
            fix="Stop the writer, then resume the teardown.")
    _gone(api, "s3", "delete_bucket", ("NoSuchBucket",), Bucket=bucket)


__all__ = ["ORDER", "TAG_DEPLOYMENT", "Inventory", "delete_all", "discover"]
