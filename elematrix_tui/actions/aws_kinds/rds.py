"""RDS PostgreSQL for Synapse: a DB subnet group over the private subnets and the instance
(encrypted, never public, automated backups, deletion protection, Multi-AZ as asked).

The instance is created without ``DBName``: RDS would create that database with the
engine's default collation (``en_US.UTF-8``), which Synapse refuses; the runbook's
``postgres.create_database`` step creates it ``UTF8``/``C``/``C`` from ``template0``.
Names are unique per account and region, so both are found by name, and the deployment
tag decides whether an existing one is ours.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ...engine.action import ActionFailed, StepContext
from ..aws_errors import error_code, explain
from ..aws_session import AwsApi
from ..aws_tags import has_deployment_tag, tag_list
from .base import Found, Kind, Spec, safe_call


def not_ours(what: str, name: str, deployment: str) -> ActionFailed:
    """A resource with our name that another deployment (or a person) owns."""
    return ActionFailed(f"{what} {name} exists but is not tagged for deployment {deployment!r}",
                        diagnosis="Names are unique per account and region; someone else "
                                  "created one with this name.",
                        fix="Pick another deployment name, or delete/retag that resource.")


class DbSubnetGroupSpec(Spec):
    subnet_ids: list[str] = Field(min_length=2)
    description: str = "elematrix-tui Synapse database subnets"


class DbSubnetGroup(Kind[DbSubnetGroupSpec]):
    Spec = DbSubnetGroupSpec
    title = "DB subnet group"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: DbSubnetGroupSpec) -> Found:
        r = safe_call(api, "rds", "describe_db_subnet_groups", ("DBSubnetGroupNotFoundFault",),
                      DBSubnetGroupName=name)
        if r is None or not r["DBSubnetGroups"]:
            return Found(None, changes=[f"create DB subnet group {name} over "
                                        f"{', '.join(spec.subnet_ids)}"])
        g = r["DBSubnetGroups"][0]
        tags = api.checked("rds", "list_tags_for_resource",
                           ResourceName=g["DBSubnetGroupArn"])["TagList"]
        if not has_deployment_tag(tags, ctx.deployment):
            raise not_ours("DB subnet group", name, ctx.deployment)
        have = sorted(s["SubnetIdentifier"] for s in g.get("Subnets", []))
        changes = [] if have == sorted(spec.subnet_ids) else [
            f"set subnets {', '.join(spec.subnet_ids)} (now {', '.join(have)})"]
        return Found(g, {"name": name, "vpc_id": g.get("VpcId")}, changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: DbSubnetGroupSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        if found.obj is None:
            g = api.checked("rds", "create_db_subnet_group", DBSubnetGroupName=name,
                            DBSubnetGroupDescription=spec.description,
                            SubnetIds=spec.subnet_ids, Tags=tag_list(ctx, name))["DBSubnetGroup"]
        else:
            g = api.checked("rds", "modify_db_subnet_group", DBSubnetGroupName=name,
                            SubnetIds=spec.subnet_ids)["DBSubnetGroup"]
        return {"name": name, "vpc_id": g.get("VpcId")}, True


class RdsPostgresSpec(Spec):
    subnet_group: str
    security_group_ids: list[str] = Field(min_length=1)
    instance_class: str = "db.t4g.medium"
    # Empty: RDS's default PostgreSQL version for new instances.
    engine_version: str = ""
    allocated_gb: int = Field(default=50, ge=20, le=65536)
    multi_az: bool = False
    backup_retention_days: int = Field(default=7, ge=1, le=35)
    deletion_protection: bool = True
    master_username: str = "elematrix"
    # A secret parameter (the keyring); masked in every log line and the plan.
    master_password: str = Field(min_length=16)
    kms_key_id: str = ""


# What the runbook promises about the instance and cannot be changed in place.
_FIXED = {"StorageEncrypted": True}


class RdsPostgres(Kind[RdsPostgresSpec]):
    Spec = RdsPostgresSpec
    title = "RDS PostgreSQL instance"

    @staticmethod
    def _outputs(db: dict[str, Any]) -> dict[str, Any]:
        ep = db.get("Endpoint") or {}
        return {"db_instance_id": db["DBInstanceIdentifier"], "arn": db.get("DBInstanceArn"),
                "endpoint": ep.get("Address", ""), "port": ep.get("Port", 5432),
                "status": db.get("DBInstanceStatus"), "master_username": db.get(
                    "MasterUsername")}

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: RdsPostgresSpec) -> Found:
        r = safe_call(api, "rds", "describe_db_instances", ("DBInstanceNotFound",
                                                            "DBInstanceNotFoundFault"),
                      DBInstanceIdentifier=name)
        if r is None or not r["DBInstances"]:
            return Found(None, changes=[
                f"create RDS PostgreSQL {name} ({spec.instance_class}, {spec.allocated_gb} GB "
                f"gp3, encrypted, not public, {spec.backup_retention_days}-day backups, "
                f"deletion protection {'on' if spec.deletion_protection else 'off'}, "
                f"Multi-AZ {'on' if spec.multi_az else 'off'})"])
        db = r["DBInstances"][0]
        if not has_deployment_tag(db.get("TagList", []), ctx.deployment):
            raise not_ours("RDS instance", name, ctx.deployment)
        changes = [f"cannot change {k} in place (it is {db.get(k)!r}): create a new instance"
                   for k, v in _FIXED.items() if db.get(k) != v]
        want = self._modifiable(spec)
        changes += [f"set {k} {db.get(k)!r} -> {v!r}" for k, v in want.items() if db.get(k) != v]
        return Found(db, self._outputs(db), changes)

    @staticmethod
    def _modifiable(spec: RdsPostgresSpec) -> dict[str, Any]:
        return {"PubliclyAccessible": False, "MultiAZ": spec.multi_az,
                "BackupRetentionPeriod": spec.backup_retention_days,
                "DeletionProtection": spec.deletion_protection,
                "DBInstanceClass": spec.instance_class}

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: RdsPostgresSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        if found.obj is not None:
            if any(c.startswith("cannot change") for c in found.changes):
                raise ActionFailed(f"RDS instance {name}: " + "; ".join(
                    c for c in found.changes if c.startswith("cannot")),
                    diagnosis="Encryption at rest is chosen when an instance is created.",
                    fix="Restore a snapshot into an encrypted instance, or delete it (after a "
                        "backup) and resume.", retry=False)
            todo = {k: v for k, v in self._modifiable(spec).items()
                    if found.obj.get(k) != v}
            db = api.checked("rds", "modify_db_instance", DBInstanceIdentifier=name,
                             ApplyImmediately=True, **todo)["DBInstance"]
            return self._outputs(db), True
        params: dict[str, Any] = {
            "DBInstanceIdentifier": name, "Engine": "postgres",
            "DBInstanceClass": spec.instance_class, "AllocatedStorage": spec.allocated_gb,
            "StorageType": "gp3", "StorageEncrypted": True, "PubliclyAccessible": False,
            "MultiAZ": spec.multi_az, "BackupRetentionPeriod": spec.backup_retention_days,
            "DeletionProtection": spec.deletion_protection,
            "MasterUsername": spec.master_username, "MasterUserPassword": spec.master_password,
            "DBSubnetGroupName": spec.subnet_group,
            "VpcSecurityGroupIds": spec.security_group_ids, "CopyTagsToSnapshot": True,
            "AutoMinorVersionUpgrade": True, "Tags": tag_list(ctx, name)}
        if spec.engine_version:
            params["EngineVersion"] = spec.engine_version
        if spec.kms_key_id:
            params["KmsKeyId"] = spec.kms_key_id
        try:
            db = api.call("rds", "create_db_instance", **params)["DBInstance"]
        except Exception as e:
            if error_code(e) != "DBInstanceAlreadyExists":
                raise explain(e, "rds", "create_db_instance", api.region) from e
            db = api.checked("rds", "describe_db_instances",
                             DBInstanceIdentifier=name)["DBInstances"][0]
        return self._outputs(db), True
