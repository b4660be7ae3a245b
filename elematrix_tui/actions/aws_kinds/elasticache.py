"""ElastiCache for Redis (OSS engine) for Synapse's replication: a cache subnet group over
the private subnets and a replication group with encryption in transit and at rest and an
AUTH token (a secret parameter in the keyring). Found by name (unique per account and
region); the deployment tag decides whether it is ours."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ...engine.action import ActionFailed, StepContext
from ..aws_errors import error_code, explain
from ..aws_session import AwsApi
from ..aws_tags import has_deployment_tag, tag_list
from .base import Found, Kind, Spec, safe_call
from .rds import not_ours


class CacheSubnetGroupSpec(Spec):
    subnet_ids: list[str] = Field(min_length=2)
    description: str = "elematrix-tui Synapse Redis subnets"


class CacheSubnetGroup(Kind[CacheSubnetGroupSpec]):
    Spec = CacheSubnetGroupSpec
    title = "cache subnet group"

    def find(self, api: AwsApi, ctx: StepContext, name: str,
             spec: CacheSubnetGroupSpec) -> Found:
        r = safe_call(api, "elasticache", "describe_cache_subnet_groups",
                      ("CacheSubnetGroupNotFoundFault",), CacheSubnetGroupName=name)
        if r is None or not r["CacheSubnetGroups"]:
            return Found(None, changes=[f"create cache subnet group {name} over "
                                        f"{', '.join(spec.subnet_ids)}"])
        g = r["CacheSubnetGroups"][0]
        have = sorted(s["SubnetIdentifier"] for s in g.get("Subnets", []))
        changes = [] if have == sorted(spec.subnet_ids) else [
            f"set subnets {', '.join(spec.subnet_ids)} (now {', '.join(have)})"]
        return Found(g, {"name": name, "vpc_id": g.get("VpcId")}, changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: CacheSubnetGroupSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        if found.obj is None:
            g = api.checked("elasticache", "create_cache_subnet_group",
                            CacheSubnetGroupName=name,
                            CacheSubnetGroupDescription=spec.description,
                            SubnetIds=spec.subnet_ids,
                            Tags=tag_list(ctx, name))["CacheSubnetGroup"]
        else:
            g = api.checked("elasticache", "modify_cache_subnet_group",
                            CacheSubnetGroupName=name,
                            SubnetIds=spec.subnet_ids)["CacheSubnetGroup"]
        return {"name": name, "vpc_id": g.get("VpcId")}, True


class RedisSpec(Spec):
    subnet_group: str
    security_group_ids: list[str] = Field(min_length=1)
    node_type: str = "cache.t4g.small"
    # 2: a primary and a replica in the other zone, with automatic failover.
    nodes: int = Field(default=2, ge=1, le=6)
    engine_version: str = "7.1"
    # ElastiCache: 16-128 printable characters, not / " @ (the generated secret is
    # letters and digits).
    auth_token: str = Field(min_length=16, max_length=128, pattern=r'^[^/"@\s]+$')
    snapshot_retention_days: int = Field(default=1, ge=0, le=35)


# Chosen at creation (the runbook's posture); not converged in place.
_FIXED = {"TransitEncryptionEnabled": True, "AtRestEncryptionEnabled": True,
          "AuthTokenEnabled": True}


class Redis(Kind[RedisSpec]):
    Spec = RedisSpec
    title = "ElastiCache Redis replication group"

    @staticmethod
    def _outputs(g: dict[str, Any]) -> dict[str, Any]:
        ep: dict[str, Any] = {}
        for ng in g.get("NodeGroups") or []:
            ep = ng.get("PrimaryEndpoint") or {}
            break
        return {"replication_group_id": g["ReplicationGroupId"], "arn": g.get("ARN"),
                "primary_endpoint": ep.get("Address", ""), "port": ep.get("Port", 6379),
                "status": g.get("Status"), "tls": bool(g.get("TransitEncryptionEnabled"))}

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: RedisSpec) -> Found:
        r = safe_call(api, "elasticache", "describe_replication_groups",
                      ("ReplicationGroupNotFoundFault",), ReplicationGroupId=name)
        if r is None or not r["ReplicationGroups"]:
            return Found(None, changes=[
                f"create Redis {name} ({spec.nodes} x {spec.node_type}, TLS in transit, "
                "encrypted at rest, AUTH token from the keyring"
                + (", Multi-AZ with automatic failover" if spec.nodes > 1 else "") + ")"])
        g = r["ReplicationGroups"][0]
        arn = g.get("ARN") or api.arn("elasticache", f"replicationgroup:{name}")
        tags = api.checked("elasticache", "list_tags_for_resource", ResourceName=arn)["TagList"]
        if not has_deployment_tag(tags, ctx.deployment):
            raise not_ours("ElastiCache replication group", name, ctx.deployment)
        changes = [f"cannot change {k} in place (it is {g.get(k)!r}): create a new group"
                   for k, v in _FIXED.items() if bool(g.get(k)) != v]
        return Found(g, self._outputs(g), changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: RedisSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        if found.obj is not None:
            raise ActionFailed(f"ElastiCache {name}: " + "; ".join(found.changes),
                               diagnosis="Encryption and AUTH are chosen at creation here.",
                               fix="Delete the replication group and resume (Redis holds "
                                   "only replication state Synapse rebuilds).", retry=False)
        params: dict[str, Any] = {
            "ReplicationGroupId": name,
            "ReplicationGroupDescription": f"Synapse replication for {ctx.deployment}",
            "Engine": "redis", "EngineVersion": spec.engine_version,
            "CacheNodeType": spec.node_type, "NumCacheClusters": spec.nodes,
            "AutomaticFailoverEnabled": spec.nodes > 1, "MultiAZEnabled": spec.nodes > 1,
            "CacheSubnetGroupName": spec.subnet_group,
            "SecurityGroupIds": spec.security_group_ids,
            "TransitEncryptionEnabled": True, "AtRestEncryptionEnabled": True,
            "AuthToken": spec.auth_token,
            "SnapshotRetentionLimit": spec.snapshot_retention_days,
            "Tags": tag_list(ctx, name)}
        try:
            g = api.call("elasticache", "create_replication_group",
                         **params)["ReplicationGroup"]
        except Exception as e:
            if error_code(e) != "ReplicationGroupAlreadyExistsFault":
                raise explain(e, "elasticache", "create_replication_group", api.region) from e
            g = api.checked("elasticache", "describe_replication_groups",
                            ReplicationGroupId=name)["ReplicationGroups"][0]
        return self._outputs(g), True
