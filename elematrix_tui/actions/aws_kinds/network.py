"""EC2 networking kinds: security groups and their rules, Elastic IPs and their
association with an instance."""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import Field

from ...engine.action import ActionFailed, StepContext
from ..aws_errors import error_code, explain
from ..aws_session import AwsApi
from ..aws_tags import tag_spec
from .base import Found, Kind, Spec, owned_filters

# --------------------------------------------------------------------------- security group


class Rule(Spec):
    port: int = Field(ge=0, le=65535)
    protocol: str = "tcp"
    cidrs: list[str]
    description: str = ""


class SecurityGroupSpec(Spec):
    description: str = "elematrix-tui managed security group"
    vpc_id: str | None = None
    ingress: list[Rule] = Field(default_factory=list)
    # Revoke ingress rules that are not in the list (the posture says "nothing else").
    exact: bool = True


def _perm_set(perms: list[dict[str, Any]]) -> set[tuple[str, int, str]]:
    out: set[tuple[str, int, str]] = set()
    for p in perms:
        port = int(p.get("FromPort", -1)) if p.get("FromPort") is not None else -1
        proto = str(p.get("IpProtocol"))
        for r in p.get("IpRanges", []):
            out.add((proto, port, r["CidrIp"]))
        for r in p.get("Ipv6Ranges", []):
            out.add((proto, port, r["CidrIpv6"]))
        for g in p.get("UserIdGroupPairs", []):
            out.add((proto, port, f"group:{g.get('GroupId')}"))
        for pl in p.get("PrefixListIds", []):
            out.add((proto, port, f"prefix:{pl.get('PrefixListId')}"))
    return out


def _perm_of(proto: str, port: int, cidr: str, description: str = "") -> dict[str, Any]:
    p: dict[str, Any] = {"IpProtocol": proto}
    desc = {"Description": description} if description else {}
    if port >= 0:
        p["FromPort"] = port
        p["ToPort"] = port
    if cidr.startswith(("group:", "prefix:")):
        kind, _, ident = cidr.partition(":")
        if kind == "group":
            p["UserIdGroupPairs"] = [{"GroupId": ident}]
        else:
            p["PrefixListIds"] = [{"PrefixListId": ident}]
    elif ":" in cidr:
        p["Ipv6Ranges"] = [{"CidrIpv6": cidr, **desc}]
    else:
        p["IpRanges"] = [{"CidrIp": cidr, **desc}]
    return p


def _source(c: str) -> str:
    """A rule's source: a CIDR (normalised) or ``group:sg-...`` (another security group,
    e.g. "only from the load balancer's group")."""
    if c.startswith("group:sg-"):
        return c
    try:
        return str(ipaddress.ip_network(c, strict=False))
    except ValueError as e:
        raise ActionFailed(f"security group rule: {c!r} is not a CIDR or group:sg-...",
                           fix="Use a CIDR such as 203.0.113.5/32, or group:<security group "
                               "id>.") from e


def _descriptions(spec: SecurityGroupSpec) -> dict[tuple[str, int, str], str]:
    """Rule -> its description (shown in the AWS console next to the rule)."""
    return {(r.protocol, r.port, _source(c)): r.description
            for r in spec.ingress for c in r.cidrs}


def _want_rules(spec: SecurityGroupSpec) -> set[tuple[str, int, str]]:
    return {(r.protocol, r.port, _source(c)) for r in spec.ingress for c in r.cidrs}


class SecurityGroup(Kind[SecurityGroupSpec]):
    Spec = SecurityGroupSpec
    title = "security group"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: SecurityGroupSpec) -> Found:
        filters = owned_filters(ctx, "group-name", name)
        if spec.vpc_id:
            filters.append({"Name": "vpc-id", "Values": [spec.vpc_id]})
        groups = api.checked("ec2", "describe_security_groups", Filters=filters)["SecurityGroups"]
        want = _want_rules(spec)
        if not groups:
            return Found(None, changes=[f"create security group {name}"]
                         + [f"allow {p}/{port} from {c}" for p, port, c in sorted(want)])
        g = groups[0]
        have = _perm_set(g.get("IpPermissions", []))
        changes = [f"allow {p}/{port} from {c}" for p, port, c in sorted(want - have)]
        if spec.exact:
            changes += [f"revoke {p}/{port} from {c}" for p, port, c in sorted(have - want)]
        return Found(g, {"group_id": g["GroupId"], "vpc_id": g.get("VpcId"),
                         "group_name": name}, changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: SecurityGroupSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        changed = False
        want = _want_rules(spec)
        if found.obj is None:
            params: dict[str, Any] = {"GroupName": name, "Description": spec.description,
                                      "TagSpecifications": tag_spec(ctx, "security-group", name)}
            if spec.vpc_id:
                params["VpcId"] = spec.vpc_id
            try:
                gid = api.call("ec2", "create_security_group", **params)["GroupId"]
                have: set[tuple[str, int, str]] = set()
                vpc_id = spec.vpc_id
            except Exception as e:
                # A retried create whose first attempt reached AWS (read timeout): adopt it.
                if error_code(e) != "InvalidGroup.Duplicate":
                    raise explain(e, "ec2", "create_security_group", api.region) from e
                again = self.find(api, ctx, name, spec)
                if again.obj is None:
                    raise explain(e, "ec2", "create_security_group", api.region) from e
                gid, vpc_id = again.obj["GroupId"], again.obj.get("VpcId")
                have = _perm_set(again.obj.get("IpPermissions", []))
            changed = True
        else:
            gid = found.obj["GroupId"]
            vpc_id = found.obj.get("VpcId")
            have = _perm_set(found.obj.get("IpPermissions", []))
        add = sorted(want - have)
        if add:
            desc = _descriptions(spec)
            perms = [_perm_of(p, port, c, desc.get((p, port, c), "")) for p, port, c in add]
            try:
                api.call("ec2", "authorize_security_group_ingress", GroupId=gid,
                         IpPermissions=perms)
            except Exception as e:
                # A concurrent or half-finished earlier attempt may have added some already.
                if error_code(e) != "InvalidPermission.Duplicate":
                    raise explain(e, "ec2", "authorize_security_group_ingress",
                                  api.region) from e
            changed = True
        remove = sorted(have - want) if spec.exact else []
        if remove:
            api.checked("ec2", "revoke_security_group_ingress", GroupId=gid,
                        IpPermissions=[_perm_of(p, port, c) for p, port, c in remove])
            changed = True
        return {"group_id": gid, "vpc_id": vpc_id, "group_name": name}, changed


class IngressAbsentSpec(Spec):
    group_id: str
    port: int = Field(ge=0, le=65535)
    protocol: str = "tcp"


class IngressAbsent(Kind[IngressAbsentSpec]):
    """No ingress rule for ``port`` remains (used to close SSH after Session Manager)."""

    Spec = IngressAbsentSpec
    title = "ingress rule removal"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: IngressAbsentSpec) -> Found:
        g = api.checked("ec2", "describe_security_groups",
                        GroupIds=[spec.group_id])["SecurityGroups"][0]
        rules = sorted(r for r in _perm_set(g.get("IpPermissions", []))
                       if r[0] == spec.protocol and r[1] == spec.port)
        # obj is the list of rules to revoke; [] (not None) means "in the desired state".
        return Found(rules, {"group_id": spec.group_id, "port": spec.port,
                                     "removed": [r[2] for r in rules]},
                     [f"revoke {p}/{port} from {c} on {spec.group_id}" for p, port, c in rules])

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: IngressAbsentSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        if not found.obj:
            return {"group_id": spec.group_id, "port": spec.port, "removed": []}, False
        api.checked("ec2", "revoke_security_group_ingress", GroupId=spec.group_id,
                    IpPermissions=[_perm_of(p, port, c) for p, port, c in found.obj])
        return found.outputs, True


# --------------------------------------------------------------------------- EC2


class EipSpec(Spec):
    pass


class ElasticIp(Kind[EipSpec]):
    Spec = EipSpec
    title = "Elastic IP"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: EipSpec) -> Found:
        addrs = api.checked("ec2", "describe_addresses", Filters=[
            *owned_filters(ctx, "tag:Name", name)])["Addresses"]
        if not addrs:
            return Found(None, changes=[f"allocate Elastic IP {name}"])
        a = addrs[0]
        return Found(a, {"allocation_id": a["AllocationId"], "public_ip": a["PublicIp"]})

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: EipSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        if found.obj is not None:
            return found.outputs, False
        a = api.checked("ec2", "allocate_address", Domain="vpc",
                        TagSpecifications=tag_spec(ctx, "elastic-ip", name))
        return {"allocation_id": a["AllocationId"], "public_ip": a["PublicIp"]}, True


class EipAssociationSpec(Spec):
    allocation_id: str
    instance_id: str


class EipAssociation(Kind[EipAssociationSpec]):
    Spec = EipAssociationSpec
    title = "Elastic IP association"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: EipAssociationSpec) -> Found:
        a = api.checked("ec2", "describe_addresses",
                        AllocationIds=[spec.allocation_id])["Addresses"][0]
        out = {"public_ip": a["PublicIp"], "association_id": a.get("AssociationId"),
               "instance_id": spec.instance_id}
        if a.get("InstanceId") == spec.instance_id:
            return Found(a, out)
        return Found(None, out, [f"associate {a['PublicIp']} with {spec.instance_id}"
                                 + (f" (moving it from {a['InstanceId']})"
                                    if a.get("InstanceId") else "")])

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: EipAssociationSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        if found.obj is not None:
            return found.outputs, False
        r = api.checked("ec2", "associate_address", AllocationId=spec.allocation_id,
                        InstanceId=spec.instance_id, AllowReassociation=True)
        return {**found.outputs, "association_id": r.get("AssociationId")}, True
