"""Teardown of the production runbook's managed services, inside ``aws.teardown``
(``managed_services: true``): the same inventory, order and "gone means done" rule as
``aws_teardown``, for the ALB, its target groups, ACM certificates, the Route 53 records
pointing at them, ElastiCache, RDS (a data store: only with the typed confirmation, like
the bucket) and the VPC.

Discovery is by the deployment tag. Route 53 records carry no tags: a record is ours when
it is one of our certificates' validation records or an alias/CNAME to one of our load
balancers. While RDS is kept, what it stands in (its subnet group, its security groups,
the VPC) is kept too, and the listing says why.
"""

from __future__ import annotations

from typing import Any

from ..engine.action import ActionFailed, StepContext
from ..engine.poll import PollCancelled, PollTimeout, poll_step
from .aws_errors import error_code, explain
from .aws_session import AwsApi
from .aws_tags import deployment_filter, has_deployment_tag

# Deleted before the instances and security groups (they hold network interfaces)...
FRONT = ["load_balancer", "target_group", "certificate", "dns_record", "cache_cluster",
         "cache_subnet_group", "db_instance", "db_subnet_group"]
# ...and after them.
BACK = ["vpc"]
# Kinds that hold data: deleted only with the typed confirmation. An EBS snapshot (the
# root volume's DLM backups, the upgrade runbook's pre-upgrade copy) is the instance's
# disk, database included.
DATA_KINDS = frozenset({"bucket", "db_instance", "snapshot"})


def _norm(name: str) -> str:
    return name.rstrip(".").lower() + "."


# The paging token each listing answers with, and the parameter that takes it back.
_TOKENS = {"elbv2": ("NextMarker", "Marker"), "route53": ("NextMarker", "Marker"),
           "acm": ("NextToken", "NextToken"), "rds": ("Marker", "Marker"),
           "elasticache": ("Marker", "Marker")}


def _paged(api: AwsApi, service: str, op: str, key: str, **params: Any) -> list[Any]:
    out: list[Any] = []
    token_out, token_in = _TOKENS[service]
    more: dict[str, Any] = {}
    for _page in range(1000):
        r = api.checked(service, op, **params, **more)
        out += r.get(key, [])
        token = r.get(token_out)
        if not token:
            break
        more = {token_in: token}
    return out


def discover_managed(api: AwsApi, ctx: StepContext, items: dict[str, list[str]],
                     extra: dict[str, Any]) -> None:
    """Fill ``items`` (and ``extra``) with this deployment's managed-service resources."""
    dep = ctx.deployment
    lbs = _paged(api, "elbv2", "describe_load_balancers", "LoadBalancers")
    dns_names: set[str] = set()
    for i in range(0, len(lbs), 20):
        batch = [lb["LoadBalancerArn"] for lb in lbs[i:i + 20]]
        for d in api.checked("elbv2", "describe_tags", ResourceArns=batch)["TagDescriptions"]:
            if has_deployment_tag(d.get("Tags", []), dep):
                items["load_balancer"].append(d["ResourceArn"])
    for lb in lbs:
        if lb["LoadBalancerArn"] in items["load_balancer"]:
            dns_names.add(_norm(lb["DNSName"]))
    tgs = _paged(api, "elbv2", "describe_target_groups", "TargetGroups")
    for i in range(0, len(tgs), 20):
        batch = [t["TargetGroupArn"] for t in tgs[i:i + 20]]
        for d in api.checked("elbv2", "describe_tags", ResourceArns=batch)["TagDescriptions"]:
            if has_deployment_tag(d.get("Tags", []), dep):
                items["target_group"].append(d["ResourceArn"])
    validation: set[tuple[str, str]] = set()
    for c in _paged(api, "acm", "list_certificates", "CertificateSummaryList"):
        arn = c["CertificateArn"]
        if not has_deployment_tag(api.checked("acm", "list_tags_for_certificate",
                                              CertificateArn=arn).get("Tags", []), dep):
            continue
        items["certificate"].append(arn)
        cert = api.checked("acm", "describe_certificate", CertificateArn=arn)["Certificate"]
        for o in cert.get("DomainValidationOptions") or []:
            rr = o.get("ResourceRecord")
            if rr:
                validation.add((_norm(rr["Name"]), _norm(rr["Value"])))
    if validation or dns_names:
        _discover_records(api, items, extra, validation, dns_names)
    for g in _paged(api, "elasticache", "describe_replication_groups", "ReplicationGroups"):
        arn = g.get("ARN") or api.arn("elasticache", f"replicationgroup:{g['ReplicationGroupId']}")
        tags = api.checked("elasticache", "list_tags_for_resource", ResourceName=arn)["TagList"]
        if has_deployment_tag(tags, dep):
            items["cache_cluster"].append(g["ReplicationGroupId"])
    for g in _paged(api, "elasticache", "describe_cache_subnet_groups", "CacheSubnetGroups"):
        arn = g.get("ARN") or api.arn("elasticache", f"subnetgroup:{g['CacheSubnetGroupName']}")
        tags = api.checked("elasticache", "list_tags_for_resource", ResourceName=arn)["TagList"]
        if has_deployment_tag(tags, dep):
            items["cache_subnet_group"].append(g["CacheSubnetGroupName"])
    holds: dict[str, list[str]] = {"security_group": [], "db_subnet_group": [], "vpc": []}
    for db in _paged(api, "rds", "describe_db_instances", "DBInstances"):
        if has_deployment_tag(db.get("TagList", []), dep):
            items["db_instance"].append(db["DBInstanceIdentifier"])
            holds["security_group"] += [g["VpcSecurityGroupId"]
                                        for g in db.get("VpcSecurityGroups", [])]
            sng = db.get("DBSubnetGroup") or {}
            if sng.get("DBSubnetGroupName"):
                holds["db_subnet_group"].append(sng["DBSubnetGroupName"])
            if sng.get("VpcId"):
                holds["vpc"].append(sng["VpcId"])
    extra["db_holds"] = holds
    for g in _paged(api, "rds", "describe_db_subnet_groups", "DBSubnetGroups"):
        tags = api.checked("rds", "list_tags_for_resource",
                           ResourceName=g["DBSubnetGroupArn"])["TagList"]
        if has_deployment_tag(tags, dep):
            items["db_subnet_group"].append(g["DBSubnetGroupName"])
    for v in api.checked("ec2", "describe_vpcs", Filters=deployment_filter(dep))["Vpcs"]:
        items["vpc"].append(v["VpcId"])


def _discover_records(api: AwsApi, items: dict[str, list[str]], extra: dict[str, Any],
                      validation: set[tuple[str, str]], dns_names: set[str]) -> None:
    records: dict[str, tuple[str, dict[str, Any]]] = {}
    for z in _paged(api, "route53", "list_hosted_zones", "HostedZones"):
        zid = z["Id"].rsplit("/", 1)[-1]
        start: dict[str, Any] = {}
        for _page in range(1000):
            r = api.checked("route53", "list_resource_record_sets", HostedZoneId=zid, **start)
            for rs in r["ResourceRecordSets"]:
                name = _norm(rs["Name"])
                values = [_norm(v["Value"]) for v in rs.get("ResourceRecords", [])]
                alias = _norm((rs.get("AliasTarget") or {}).get("DNSName", "") or "-")
                ours = (rs["Type"] == "CNAME" and any((name, v) in validation for v in values)
                        ) or alias in dns_names or alias.removeprefix("dualstack.") in dns_names \
                    or (rs["Type"] == "CNAME" and any(v in dns_names for v in values))
                if ours:
                    key = f"{zid}:{rs['Type']}:{name}"
                    records[key] = (zid, rs)
            if not r.get("IsTruncated"):
                break
            start = {"StartRecordName": r["NextRecordName"],
                     "StartRecordType": r["NextRecordType"]}
    items["dns_record"] += sorted(records)
    extra["dns_records"] = records


def held(extra: dict[str, Any], items: dict[str, list[str]], kind: str, ident: str) -> bool:
    """Kept because the RDS instance that stands in it is kept."""
    return bool(items.get("db_instance")) and ident in extra.get("db_holds", {}).get(kind, [])


def _gone(api: AwsApi, service: str, op: str, gone: tuple[str, ...], **params: Any) -> bool:
    """A delete that treats 'not found' as done; True once it is done."""
    try:
        api.call(service, op, **params)
    except Exception as e:
        if error_code(e) in gone:
            return True
        raise explain(e, service, op, api.region) from e
    return True


def _until(ctx: StepContext, what: str, max_wait: float, probe: Any,
           busy: tuple[str, ...] = ()) -> None:
    """Poll ``probe`` (True: done) with "still in use" codes counted as not yet."""
    last: list[Exception] = []

    def attempt(n: int) -> bool | None:
        try:
            return True if probe() else None
        except ActionFailed as e:
            if not any(b in e.message for b in busy):
                raise
            last[:] = [e]
            return None

    try:
        poll_step(ctx, attempt, what=what, timeout=max_wait, interval=10)
    except (PollTimeout, PollCancelled) as e:
        if last:
            raise last[-1] from e
        raise ActionFailed(f"timed out waiting for {what}",
                           fix="Resume the teardown later: it goes on where it stopped.") from e


def delete_front(api: AwsApi, ctx: StepContext, items: dict[str, list[str]],
                 extra: dict[str, Any], include_data: bool, max_wait: float) -> list[str]:
    """The managed services that hold network interfaces, before instances and groups."""
    done: list[str] = []
    for arn in items["load_balancer"]:
        _gone(api, "elbv2", "delete_load_balancer", ("LoadBalancerNotFound",),
              LoadBalancerArn=arn)
        _until(ctx, f"load balancer {arn} to be deleted", max_wait, lambda a=arn: not _exists(
            api, "elbv2", "describe_load_balancers", ("LoadBalancerNotFound",),
            LoadBalancerArns=[a]))
        done.append(f"load balancer {arn}")
    for arn in items["target_group"]:
        deregister_targets(api, ctx, arn)
        _until(ctx, f"target group {arn} to be free", max_wait, lambda a=arn: _gone(
            api, "elbv2", "delete_target_group", ("TargetGroupNotFound",),
            TargetGroupArn=a), busy=("ResourceInUse",))
        done.append(f"target group {arn}")
    for key in items["dns_record"]:
        zid, rs = extra["dns_records"][key]
        _gone(api, "route53", "change_resource_record_sets", ("InvalidChangeBatch",),
              HostedZoneId=zid, ChangeBatch={"Changes": [{"Action": "DELETE",
                                                          "ResourceRecordSet": rs}]})
        done.append(f"dns record {key}")
    for arn in items["certificate"]:
        # In use until the listener is gone (a few seconds after the load balancer).
        _until(ctx, f"certificate {arn} to be free", max_wait, lambda a=arn: _gone(
            api, "acm", "delete_certificate", ("ResourceNotFoundException",),
            CertificateArn=a), busy=("ResourceInUse",))
        done.append(f"certificate {arn}")
    for rg in items["cache_cluster"]:
        _gone(api, "elasticache", "delete_replication_group", ("ReplicationGroupNotFoundFault",),
              ReplicationGroupId=rg)
        _until(ctx, f"Redis {rg} to be deleted", max_wait, lambda r=rg: not _exists(
            api, "elasticache", "describe_replication_groups",
            ("ReplicationGroupNotFoundFault",), ReplicationGroupId=r))
        done.append(f"redis {rg}")
    for name in items["cache_subnet_group"]:
        _until(ctx, f"cache subnet group {name} to be free", max_wait, lambda n=name: _gone(
            api, "elasticache", "delete_cache_subnet_group", ("CacheSubnetGroupNotFoundFault",),
            CacheSubnetGroupName=n), busy=("CacheSubnetGroupInUse",))
        done.append(f"cache subnet group {name}")
    if include_data:
        for db in items["db_instance"]:
            # Deletion protection is the runbook's own guard; the typed confirmation lifts it.
            _gone(api, "rds", "modify_db_instance", ("DBInstanceNotFound",
                                                     "DBInstanceNotFoundFault"),
                  DBInstanceIdentifier=db, DeletionProtection=False, ApplyImmediately=True)
            _gone(api, "rds", "delete_db_instance", ("DBInstanceNotFound",
                                                     "DBInstanceNotFoundFault"),
                  DBInstanceIdentifier=db, SkipFinalSnapshot=True, DeleteAutomatedBackups=True)
            _until(ctx, f"RDS {db} to be deleted", max_wait, lambda d=db: not _exists(
                api, "rds", "describe_db_instances", ("DBInstanceNotFound",
                                                      "DBInstanceNotFoundFault"),
                DBInstanceIdentifier=d))
            done.append(f"db instance {db}")
    for name in items["db_subnet_group"]:
        if not include_data and held(extra, items, "db_subnet_group", name):
            continue
        _until(ctx, f"DB subnet group {name} to be free", max_wait, lambda n=name: _gone(
            api, "rds", "delete_db_subnet_group", ("DBSubnetGroupNotFoundFault",),
            DBSubnetGroupName=n), busy=("InvalidDBSubnetGroupStateFault",))
        done.append(f"db subnet group {name}")
    return done


def deregister_targets(api: AwsApi, ctx: StepContext, arn: str) -> list[str]:
    """Take every registered target out of the group ``arn`` (the instances phase put ours
    there) before the group and the instances go: said and done explicitly, not left to the
    group's deletion, so a kept or failed group never sends traffic to a dying instance."""
    r = safe_describe_health(api, arn)
    ids = [d["Target"] for d in r
           if d.get("TargetHealth", {}).get("Reason") not in ("Target.NotRegistered",
                                                              "Target.DeregistrationInProgress")]
    if not ids:
        return []
    _gone(api, "elbv2", "deregister_targets", ("TargetGroupNotFound", "InvalidTarget"),
          TargetGroupArn=arn, Targets=[{k: t[k] for k in ("Id", "Port") if k in t}
                                       for t in ids])
    ctx.log(f"deregistered {', '.join(t['Id'] for t in ids)} from {arn}")
    return [t["Id"] for t in ids]


def safe_describe_health(api: AwsApi, arn: str) -> list[dict[str, Any]]:
    """The group's target health descriptions; [] when the group is already gone."""
    try:
        r = api.call("elbv2", "describe_target_health", TargetGroupArn=arn)
    except Exception as e:
        if error_code(e) == "TargetGroupNotFound":
            return []
        raise explain(e, "elbv2", "describe_target_health", api.region) from e
    return list(r.get("TargetHealthDescriptions", []))


def revoke_group_references(api: AwsApi, group_ids: list[str]) -> None:
    """EC2 refuses to delete a group another group's rule names: drop those rules first."""
    if not group_ids:
        return
    groups = api.checked("ec2", "describe_security_groups", GroupIds=group_ids)["SecurityGroups"]
    for g in groups:
        refs = [p for p in g.get("IpPermissions", []) if p.get("UserIdGroupPairs")]
        if refs:
            _gone(api, "ec2", "revoke_security_group_ingress", ("InvalidPermission.NotFound",),
                  GroupId=g["GroupId"], IpPermissions=[
                      {k: v for k, v in p.items() if k in ("IpProtocol", "FromPort", "ToPort",
                                                          "UserIdGroupPairs")} for p in refs])


def delete_back(api: AwsApi, ctx: StepContext, items: dict[str, list[str]],
                extra: dict[str, Any], include_data: bool, max_wait: float) -> list[str]:
    """The VPC and its parts, after everything inside it."""
    done: list[str] = []
    for vid in items["vpc"]:
        if not include_data and held(extra, items, "vpc", vid):
            continue
        flt = [{"Name": "vpc-id", "Values": [vid]}]
        for s in api.checked("ec2", "describe_subnets", Filters=flt)["Subnets"]:
            _until(ctx, f"subnet {s['SubnetId']} to be free", max_wait, lambda i=s[
                "SubnetId"]: _gone(api, "ec2", "delete_subnet", ("InvalidSubnetID.NotFound",),
                                   SubnetId=i), busy=("DependencyViolation",))
        for rt in api.checked("ec2", "describe_route_tables", Filters=flt)["RouteTables"]:
            if any(a.get("Main") for a in rt.get("Associations", [])):
                continue  # the main table goes with the VPC
            for a in rt.get("Associations", []):
                # AWS drops a deleted subnet's association itself; moto keeps it.
                _gone(api, "ec2", "disassociate_route_table",
                      ("InvalidAssociationID.NotFound",),
                      AssociationId=a["RouteTableAssociationId"])
            _gone(api, "ec2", "delete_route_table", ("InvalidRouteTableID.NotFound",),
                  RouteTableId=rt["RouteTableId"])
        for igw in api.checked("ec2", "describe_internet_gateways", Filters=[
                {"Name": "attachment.vpc-id", "Values": [vid]}])["InternetGateways"]:
            _gone(api, "ec2", "detach_internet_gateway", ("Gateway.NotAttached",),
                  InternetGatewayId=igw["InternetGatewayId"], VpcId=vid)
            _gone(api, "ec2", "delete_internet_gateway", ("InvalidInternetGatewayID.NotFound",),
                  InternetGatewayId=igw["InternetGatewayId"])
        _until(ctx, f"VPC {vid} to be free", max_wait, lambda v=vid: _gone(
            api, "ec2", "delete_vpc", ("InvalidVpcID.NotFound",), VpcId=v),
            busy=("DependencyViolation",))
        done.append(f"vpc {vid}")
    return done


def _exists(api: AwsApi, service: str, op: str, gone: tuple[str, ...], **params: Any) -> bool:
    try:
        r = api.call(service, op, quiet=True, **params)
    except Exception as e:
        if error_code(e) in gone:
            return False
        raise explain(e, service, op, api.region) from e
    return any(isinstance(v, list) and v for k, v in r.items() if k != "ResponseMetadata")
