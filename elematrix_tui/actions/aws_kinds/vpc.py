"""The production network: a VPC across two availability zones (public subnets for the ALB
and the instances, private subnets without an internet route for RDS and ElastiCache), or
the operator's own VPC and subnets, checked for two zones."""

from __future__ import annotations

import ipaddress
from typing import Any

from pydantic import Field

from ...engine.action import ActionFailed, StepContext
from ..aws_session import AwsApi
from ..aws_tags import tag_spec
from .base import Found, Kind, Spec, owned_filters

# Subnets per tier: the ALB and RDS/ElastiCache subnet groups each need two zones.
ZONES = 2


class VpcSpec(Spec):
    cidr: str = "10.42.0.0/16"
    availability_zones: list[str] = Field(min_length=ZONES, max_length=ZONES)
    # The operator's own network instead of a new one (all three or none).
    vpc_id: str = ""
    public_subnet_ids: list[str] = Field(default_factory=list)
    private_subnet_ids: list[str] = Field(default_factory=list)


def _subnet_cidrs(cidr: str) -> tuple[list[str], list[str]]:
    """Two /24 public and two /24 private subnets carved from the VPC's range."""
    try:
        net = ipaddress.ip_network(cidr)
    except ValueError as e:
        raise ActionFailed(f"vpc: {cidr!r} is not a CIDR", fix="Use e.g. 10.42.0.0/16.") from e
    if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 20:
        raise ActionFailed(f"vpc: {cidr} is too small", fix="Use an IPv4 /16 to /20.")
    subs = list(net.subnets(new_prefix=24))
    return [str(subs[0]), str(subs[1])], [str(subs[8]), str(subs[9])]


def _names(name: str) -> dict[str, str]:
    return {"igw": f"{name}-igw", "rtb": f"{name}-public",
            **{f"public{i}": f"{name}-public-{i}" for i in range(ZONES)},
            **{f"private{i}": f"{name}-private-{i}" for i in range(ZONES)}}


class Vpc(Kind[VpcSpec]):
    """Found by its deployment tag and Name; each part (gateway, route table, four subnets)
    by its own Name tag, so a half-built network is completed, never duplicated."""

    Spec = VpcSpec
    title = "VPC"

    def _parts(self, api: AwsApi, ctx: StepContext, name: str) -> dict[str, Any]:
        parts: dict[str, Any] = {}
        vpcs = api.checked("ec2", "describe_vpcs", Filters=owned_filters(ctx, "tag:Name", name)
                           )["Vpcs"]
        parts["vpc"] = vpcs[0] if vpcs else None
        if parts["vpc"] is None:
            return parts
        vid = parts["vpc"]["VpcId"]
        igws = api.checked("ec2", "describe_internet_gateways", Filters=[
            {"Name": "attachment.vpc-id", "Values": [vid]}])["InternetGateways"]
        parts["igw"] = igws[0] if igws else None
        for key, nm in _names(name).items():
            if key == "igw":
                continue
            op, field = (("describe_route_tables", "RouteTables") if key == "rtb"
                         else ("describe_subnets", "Subnets"))
            got = api.checked("ec2", op, Filters=[*owned_filters(ctx, "tag:Name", nm),
                                                  {"Name": "vpc-id", "Values": [vid]}])[field]
            parts[key] = got[0] if got else None
        return parts

    def _chosen(self, api: AwsApi, spec: VpcSpec) -> Found:
        if not (spec.public_subnet_ids and spec.private_subnet_ids):
            raise ActionFailed("vpc: with vpc_id give public_subnet_ids and "
                               "private_subnet_ids too (two of each, in two zones)")
        out: dict[str, Any] = {"vpc_id": spec.vpc_id, "created": False}
        for tier in ("public", "private"):
            ids = getattr(spec, f"{tier}_subnet_ids")
            subs = api.checked("ec2", "describe_subnets", SubnetIds=ids)["Subnets"]
            wrong = [s["SubnetId"] for s in subs if s["VpcId"] != spec.vpc_id]
            zones = sorted({s["AvailabilityZone"] for s in subs})
            if wrong or len(zones) < ZONES:
                raise ActionFailed(
                    f"vpc: the {tier} subnets {', '.join(ids)} must be in {spec.vpc_id} and "
                    f"span {ZONES} availability zones (they are in {', '.join(zones)}"
                    + (f"; {', '.join(wrong)} in another VPC" if wrong else "") + ")",
                    fix="The ALB and the RDS/ElastiCache subnet groups need two zones.")
            out[f"{tier}_subnet_ids"] = ids
            out["availability_zones"] = zones
        return Found(True, out)

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: VpcSpec) -> Found:
        if spec.vpc_id:
            return self._chosen(api, spec)
        parts = self._parts(api, ctx, name)
        pub, priv = _subnet_cidrs(spec.cidr)
        if parts["vpc"] is None:
            return Found(None, changes=[
                f"create VPC {name} {spec.cidr}", "create and attach an internet gateway",
                "create a public route table (0.0.0.0/0 -> the gateway)",
                *[f"create public subnet {c} in {z}" for c, z in
                  zip(pub, spec.availability_zones, strict=True)],
                *[f"create private subnet {c} in {z} (no internet route)" for c, z in
                  zip(priv, spec.availability_zones, strict=True)]])
        changes = [f"create {k}" for k in _names(name) if parts.get(k) is None]
        rtb = parts.get("rtb")
        if rtb is not None and not any(r.get("DestinationCidrBlock") == "0.0.0.0/0"
                                       and str(r.get("GatewayId", "")).startswith("igw-")
                                       for r in rtb.get("Routes", [])):
            changes.append("route 0.0.0.0/0 to the internet gateway")
        return Found(parts, self._outputs(parts), changes)

    @staticmethod
    def _outputs(parts: dict[str, Any]) -> dict[str, Any]:
        def ids(tier: str) -> list[str]:
            return [parts[f"{tier}{i}"]["SubnetId"] for i in range(ZONES)
                    if parts.get(f"{tier}{i}")]

        zones = [parts[f"public{i}"]["AvailabilityZone"] for i in range(ZONES)
                 if parts.get(f"public{i}")]
        return {"vpc_id": parts["vpc"]["VpcId"], "public_subnet_ids": ids("public"),
                "private_subnet_ids": ids("private"), "availability_zones": zones,
                "created": True}

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: VpcSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        if spec.vpc_id:
            return found.outputs, False
        parts: dict[str, Any] = found.obj if found.obj is not None else {"vpc": None}
        names = _names(name)
        pub, priv = _subnet_cidrs(spec.cidr)
        if parts.get("vpc") is None:
            parts["vpc"] = api.checked("ec2", "create_vpc", CidrBlock=spec.cidr,
                                       TagSpecifications=tag_spec(ctx, "vpc", name))["Vpc"]
        vid = parts["vpc"]["VpcId"]
        # RDS and ElastiCache endpoints are DNS names: the VPC must resolve them.
        for attr in ("EnableDnsSupport", "EnableDnsHostnames"):
            api.checked("ec2", "modify_vpc_attribute", VpcId=vid, **{attr: {"Value": True}})
        if parts.get("igw") is None:
            igw = api.checked("ec2", "create_internet_gateway", TagSpecifications=tag_spec(
                ctx, "internet-gateway", names["igw"]))["InternetGateway"]
            api.checked("ec2", "attach_internet_gateway", InternetGatewayId=igw[
                "InternetGatewayId"], VpcId=vid)
            parts["igw"] = igw
        igw_id = parts["igw"]["InternetGatewayId"]
        if parts.get("rtb") is None:
            parts["rtb"] = api.checked("ec2", "create_route_table", VpcId=vid,
                                       TagSpecifications=tag_spec(ctx, "route-table",
                                                                  names["rtb"]))["RouteTable"]
        rtb_id = parts["rtb"]["RouteTableId"]
        if not any(r.get("DestinationCidrBlock") == "0.0.0.0/0"
                   for r in parts["rtb"].get("Routes", [])):
            api.checked("ec2", "create_route", RouteTableId=rtb_id,
                        DestinationCidrBlock="0.0.0.0/0", GatewayId=igw_id)
        for tier, cidrs in (("public", pub), ("private", priv)):
            for i, (cidr, zone) in enumerate(zip(cidrs, spec.availability_zones, strict=True)):
                key = f"{tier}{i}"
                if parts.get(key) is not None:
                    continue
                sub = api.checked("ec2", "create_subnet", VpcId=vid, CidrBlock=cidr,
                                  AvailabilityZone=zone, TagSpecifications=tag_spec(
                                      ctx, "subnet", names[key]))["Subnet"]
                if tier == "public":
                    api.checked("ec2", "associate_route_table", RouteTableId=rtb_id,
                                SubnetId=sub["SubnetId"])
                parts[key] = sub
        return self._outputs(parts), True
