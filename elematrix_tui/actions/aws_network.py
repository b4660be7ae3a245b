"""The preflight's placement and encryption answers: which subnet (and VPC) the instance
goes into, whether that subnet can reach the internet, and which KMS key will encrypt
the root volume.

A subnet reaches the internet when its route table — the one explicitly associated with
it, else the VPC's main table (the rule EC2 applies, VPC user guide "Route tables":
"a subnet that is not explicitly associated with a route table is implicitly associated
with the main route table") — sends 0.0.0.0/0 to an internet gateway (``igw-``). Without
that, the instance boots but nobody can reach it and it cannot reach dnf or Docker's
repositories: the deployment would fail half an hour later, far from the cause.
"""

from __future__ import annotations

from typing import Any

from ..engine.action import ActionFailed
from .aws_errors import error_code, explain
from .aws_session import AwsApi

EBS_DEFAULT_ALIAS = "alias/aws/ebs"
AWS_ALIAS_PREFIX = "alias/aws/"


def route_table_of(api: AwsApi, subnet: dict[str, Any]) -> dict[str, Any] | None:
    """The route table EC2 uses for ``subnet``: its explicit association, else the main."""
    tables = api.checked("ec2", "describe_route_tables", Filters=[
        {"Name": "association.subnet-id", "Values": [subnet["SubnetId"]]}])["RouteTables"]
    if not tables:
        tables = api.checked("ec2", "describe_route_tables", Filters=[
            {"Name": "vpc-id", "Values": [subnet["VpcId"]]},
            {"Name": "association.main", "Values": ["true"]}])["RouteTables"]
    return tables[0] if tables else None


def internet_gateway_route(table: dict[str, Any] | None) -> str | None:
    """The igw- id that 0.0.0.0/0 goes to in ``table`` (None: no route to the internet)."""
    for r in (table or {}).get("Routes", []):
        if (r.get("DestinationCidrBlock") == "0.0.0.0/0"
                and str(r.get("GatewayId", "")).startswith("igw-")
                and r.get("State", "active") == "active"):
            return str(r["GatewayId"])
    return None


# What each operator-given id names: (describe operation, id list parameter, result key,
# the error code AWS gives for an id that does not exist).
_BY_ID = {"subnet": ("describe_subnets", "SubnetIds", "Subnets", "InvalidSubnetID.NotFound"),
          "VPC": ("describe_vpcs", "VpcIds", "Vpcs", "InvalidVpcID.NotFound")}


def _one_by_id(api: Any, param: str, what: str, ident: str) -> dict[str, Any]:
    """The resource parameter ``param`` names, or a located error when there is none."""
    op, ids, key, not_found = _BY_ID[what]
    try:
        found = api.call("ec2", op, **{ids: [ident]})[key]
    except Exception as e:
        if error_code(e) != not_found:
            raise explain(e, "ec2", op, api.region) from e
        found = []
    if not found:
        cli = op.replace("_", "-")
        raise ActionFailed(f"parameter {param}: no {what} {ident} in {api.region}",
                           fix=f"Check the id (`aws ec2 {cli}`) and the region.")
    return dict(found[0])


def _no_route(subnet: dict[str, Any], table: dict[str, Any] | None, param: str) -> ActionFailed:
    tid = table["RouteTableId"] if table else "none"
    how = "explicitly associated" if table and any(
        a.get("SubnetId") == subnet["SubnetId"] for a in table.get("Associations", [])
    ) else "the VPC's main table"
    return ActionFailed(
        f"parameter {param}: subnet {subnet['SubnetId']} (VPC {subnet['VpcId']}) has no "
        f"route to an internet gateway (route table {tid}, {how}: no 0.0.0.0/0 -> igw-)",
        diagnosis="The instance needs a public IPv4 address and a default route to an "
                  "internet gateway: HTTP from anywhere, SSH from you, and its own downloads "
                  "(dnf, Docker images) all go that way. A private subnet (NAT or no egress) "
                  "cannot serve this POC.",
        fix=f"Pick a public subnet (`--set subnet_id=subnet-...`), or add the route: "
            f"`aws ec2 create-route --route-table-id {tid} --destination-cidr-block "
            "0.0.0.0/0 --gateway-id igw-...`, then resume.")


def choose_subnet(api: AwsApi, vpc_id: str, subnet_id: str, azs: list[str],
                  instance_type: str, log: Any) -> dict[str, Any]:
    """The subnet to launch into: the operator's ``subnet_id`` (checked), else a public
    subnet of ``vpc_id``, else the default VPC's default subnet in the first zone that
    offers ``instance_type``. Refuses a subnet without an internet route."""
    if subnet_id:
        s = _one_by_id(api, "subnet_id", "subnet", subnet_id)
        if vpc_id and s["VpcId"] != vpc_id:
            raise ActionFailed(f"parameter subnet_id: subnet {subnet_id} is in VPC "
                               f"{s['VpcId']}, not in vpc_id {vpc_id}",
                               fix="Give a subnet of that VPC, or leave vpc_id empty.")
        if s["AvailabilityZone"] not in azs:
            raise ActionFailed(f"parameter subnet_id: subnet {subnet_id} is in "
                               f"{s['AvailabilityZone']}, where {instance_type} is not offered",
                               fix=f"Pick a subnet in one of: {', '.join(azs)}.")
        table = route_table_of(api, s)
        if internet_gateway_route(table) is None:
            raise _no_route(s, table, "subnet_id")
        return dict(s)
    if vpc_id:
        _one_by_id(api, "vpc_id", "VPC", vpc_id)
        subnets = api.checked("ec2", "describe_subnets", Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
        candidates = sorted((s for s in subnets if s["AvailabilityZone"] in azs),
                            key=lambda s: (s["AvailabilityZone"], s["SubnetId"]))
        for s in candidates:
            if internet_gateway_route(route_table_of(api, s)):
                return dict(s)
        raise ActionFailed(
            f"parameter vpc_id: VPC {vpc_id} has no subnet with a route to an internet "
            f"gateway in a zone offering {instance_type} ({', '.join(azs)})",
            diagnosis="Subnets looked at: "
                      f"{', '.join(s['SubnetId'] for s in candidates) or 'none'}.",
            fix="Name a public subnet with `--set subnet_id=...`, or add a 0.0.0.0/0 route "
                "to an internet gateway, then resume.")
    vpcs = api.checked("ec2", "describe_vpcs",
                       Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise ActionFailed(
            f"no default VPC in {api.region}",
            diagnosis="Without vpc_id/subnet_id the runbook uses the default VPC.",
            fix="Name a public subnet (`--set subnet_id=subnet-...`) or create a default VPC "
                f"(`aws ec2 create-default-vpc --region {api.region}`), then resume.")
    default_vpc = vpcs[0]["VpcId"]
    subnets = api.checked("ec2", "describe_subnets", Filters=[
        {"Name": "vpc-id", "Values": [default_vpc]},
        {"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    usable = sorted((s for s in subnets if s["AvailabilityZone"] in azs),
                    key=lambda s: s["AvailabilityZone"])
    if not usable:
        raise ActionFailed(f"no default subnet in a zone offering {instance_type}",
                           fix="Create a default subnet (`aws ec2 create-default-subnet "
                               f"--availability-zone {azs[0]}`), then resume.")
    s = usable[0]
    table = route_table_of(api, s)
    if internet_gateway_route(table) is None:
        # AWS creates every default VPC with an internet gateway and a 0.0.0.0/0 route in
        # its main table (VPC user guide, "Default VPCs": components): one without them had
        # its gateway removed, and an instance there is as unreachable as in any private
        # subnet. (The emulator's default VPC is AWS's too: practice.default_vpc_like_aws.)
        raise _no_route(s, table, "subnet_id (not set: the default VPC's default subnet)")
    return dict(s)


def _short(e: Exception) -> str:
    """An error code, or the first line of the message (an emulator's HTML 500 page...)."""
    return error_code(e) or (str(e).splitlines() or [type(e).__name__])[0][:120]


def volume_key(api: AwsApi, kms_key_id: str, log: Any) -> dict[str, str]:
    """Which KMS key will encrypt the root volume: the runbook's ``kms_key_id``, else the
    account's EBS default key (``ec2.get_ebs_default_kms_key_id``). ``manager`` is
    ``AWS`` (aws/ebs: nothing to grant) or ``CUSTOMER`` (its key policy must let EC2 use it
    for the operator: kms:CreateGrant, Decrypt, GenerateDataKeyWithoutPlaintext,
    ReEncrypt*, DescribeKey; without them the instance terminates right after launch)."""
    source = "runbook parameter kms_key_id"
    key = kms_key_id
    if not key:
        source = "the account's EBS default key"
        try:
            # Two tries, not eight: informative, and emulators (moto) answer it with a 500.
            key = str(api.call("ec2", "get_ebs_default_kms_key_id", max_attempts=2)["KmsKeyId"])
        except Exception as e:
            log(f"could not read the account's EBS default KMS key ({_short(e)}); "
                f"assuming {EBS_DEFAULT_ALIAS}", "stderr")
            key = EBS_DEFAULT_ALIAS
    out = {"key": key, "source": source, "key_arn": "", "manager": "unknown"}
    # KMS reserves alias names beginning with alias/aws/ for AWS managed keys.
    aws_managed = key.split(":")[-1].startswith(AWS_ALIAS_PREFIX)
    try:
        meta = api.call("kms", "describe_key", KeyId=key)["KeyMetadata"]
        out["key_arn"] = str(meta.get("Arn", ""))
        out["manager"] = "AWS" if aws_managed else str(meta.get("KeyManager", "unknown"))
        if meta.get("KeyState") not in (None, "Enabled"):
            raise ActionFailed(
                f"the KMS key for the root volume ({key}, {source}) is {meta.get('KeyState')}",
                diagnosis="EC2 cannot encrypt a volume with a key that is not Enabled: the "
                          "instance would terminate right after launch.",
                fix="Enable the key, or name another with `--set kms_key_id=...`.")
    except ActionFailed:
        raise
    except Exception as e:
        # An AWS-managed alias that was never used does not exist yet (EC2 creates
        # aws/ebs on first use), and DescribeKey may be denied: informative only.
        log(f"could not describe KMS key {key} ({_short(e)})", "stderr")
        if aws_managed:
            out["manager"] = "AWS"
    return out
