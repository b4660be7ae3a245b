"""The resource kinds ``aws.ensure`` knows: find (read-only), then create or converge.

Every kind follows one rule: ``find`` never changes anything and identifies the resource
by its deployment tag (EC2, IAM) or by a name derived from the deployment (S3, SNS, logs,
alarms, SSM parameters: names unique per account), never by ClientToken. ``plan`` lists
what ``apply`` would change (empty = in sync). ``apply`` creates what is missing, tags it
in the create call where the API allows (so a kill between create and tag cannot leave
an untagged orphan) and converges the settings that can drift. Both return the same
outputs, so a resumed run sees the same ``steps.<id>.<output>`` values.

One module per AWS service (``network``: security groups and Elastic IPs, ``ec2``: key
pair and instance, ``iam``, ``s3``, ``sns``, ``logs``, ``cloudwatch``, ``ssm``,
``dlm`` (the root volume's snapshot schedule), ``generic``; for the production runbook
``vpc``, ``rds``, ``elasticache``, ``acm`` (with Route 53 records) and ``elbv2``) over
the framework in ``base`` (``Kind[Spec]``); this module is the registry of kinds by name
and re-exports every public name, so ``from .aws_kinds import X`` works as it did when
this was one file.
"""

from __future__ import annotations

from typing import Any

from .acm import Certificate, CertificateSpec, DnsRecords, DnsRecordsSpec
from .base import Found, Kind, Spec, SpecT, asset_json, asset_text, canon_json, safe_call
from .cloudwatch import AlarmDef, Alarms, AlarmsSpec, alarm_drift
from .dlm import SnapshotPolicy, SnapshotPolicySpec
from .ec2 import Instance, InstanceSpec, KeyPair, KeyPairSpec, launch_token
from .elasticache import CacheSubnetGroup, CacheSubnetGroupSpec, Redis, RedisSpec
from .elbv2 import (
    TLS_POLICY,
    Listeners,
    ListenersSpec,
    LoadBalancer,
    LoadBalancerSpec,
    TargetGroup,
    TargetGroupSpec,
    Targets,
    TargetsSpec,
)
from .generic import Generic, GenericSpec, OpSpec
from .iam import InstanceProfile, InstanceProfileSpec, Role, RoleSpec
from .logs import LogGroups, LogGroupsSpec
from .network import (
    EipAssociation,
    EipAssociationSpec,
    EipSpec,
    ElasticIp,
    IngressAbsent,
    IngressAbsentSpec,
    Rule,
    SecurityGroup,
    SecurityGroupSpec,
)
from .rds import DbSubnetGroup, DbSubnetGroupSpec, RdsPostgres, RdsPostgresSpec
from .s3 import LC_CURRENT, LC_NONCURRENT, Bucket, BucketSpec
from .sns import Topic, TopicSpec
from .ssm import SsmParameter, SsmParameterSpec
from .vpc import Vpc, VpcSpec

KINDS: dict[str, Kind[Any]] = {
    "security_group": SecurityGroup(),
    "ingress_absent": IngressAbsent(),
    "key_pair": KeyPair(),
    "iam_role": Role(),
    "instance_profile": InstanceProfile(),
    "bucket": Bucket(),
    "eip": ElasticIp(),
    "eip_association": EipAssociation(),
    "instance": Instance(),
    "sns_topic": Topic(),
    "log_groups": LogGroups(),
    "alarms": Alarms(),
    "ssm_parameter": SsmParameter(),
    "snapshot_policy": SnapshotPolicy(),
    "generic": Generic(),
    # The production runbook's managed services (docs/production.md).
    "vpc": Vpc(),
    "db_subnet_group": DbSubnetGroup(),
    "rds_postgres": RdsPostgres(),
    "cache_subnet_group": CacheSubnetGroup(),
    "redis": Redis(),
    "certificate": Certificate(),
    "dns_records": DnsRecords(),
    "target_group": TargetGroup(),
    "targets": Targets(),
    "load_balancer": LoadBalancer(),
    "listeners": Listeners(),
}


__all__ = [
    "KINDS",
    "LC_CURRENT",
    "LC_NONCURRENT",
    "TLS_POLICY",
    "AlarmDef",
    "Alarms",
    "AlarmsSpec",
    "Bucket",
    "BucketSpec",
    "CacheSubnetGroup",
    "CacheSubnetGroupSpec",
    "Certificate",
    "CertificateSpec",
    "DbSubnetGroup",
    "DbSubnetGroupSpec",
    "DnsRecords",
    "DnsRecordsSpec",
    "EipAssociation",
    "EipAssociationSpec",
    "EipSpec",
    "ElasticIp",
    "Found",
    "Generic",
    "GenericSpec",
    "IngressAbsent",
    "IngressAbsentSpec",
    "Instance",
    "InstanceProfile",
    "InstanceProfileSpec",
    "InstanceSpec",
    "KeyPair",
    "KeyPairSpec",
    "Kind",
    "Listeners",
    "ListenersSpec",
    "LoadBalancer",
    "LoadBalancerSpec",
    "LogGroups",
    "LogGroupsSpec",
    "OpSpec",
    "RdsPostgres",
    "RdsPostgresSpec",
    "Redis",
    "RedisSpec",
    "Role",
    "RoleSpec",
    "Rule",
    "SecurityGroup",
    "SecurityGroupSpec",
    "SnapshotPolicy",
    "SnapshotPolicySpec",
    "Spec",
    "SpecT",
    "SsmParameter",
    "SsmParameterSpec",
    "TargetGroup",
    "TargetGroupSpec",
    "Targets",
    "TargetsSpec",
    "Topic",
    "TopicSpec",
    "Vpc",
    "VpcSpec",
    "alarm_drift",
    "asset_json",
    "asset_text",
    "canon_json",
    "launch_token",
    "safe_call",
]
