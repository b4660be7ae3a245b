"""The production runbook's own AWS actions (docs/production.md):

- ``aws.production_preflight``: the domain, its Route 53 hosted zone (or none: the records
  are then printed and waited for), the region and two availability zones offering the
  instance type, and a dated monthly cost estimate of everything the runbook creates.
- ``dns.await_records``: print the DNS records the operator must create at their DNS
  provider and wait, bounded, until a name server answers them.
"""

from __future__ import annotations

import re
import time
from typing import Any

from pydantic import Field, field_validator

from ..engine.action import Action, ActionFailed, Check, Inputs, Result, StepContext
from ..engine.poll import PollCancelled, PollTimeout, poll_step
from .aws import AL2023_PARAMETER
from .aws_kinds.cloudwatch import alarm_count, alarm_sets
from .aws_session import aws_for

# A fully qualified host name: letters, digits and hyphens per label, at least two labels,
# a top-level label that is not all digits (RFC 1123 section 2.1; RFC 3696 section 2).
DOMAIN_RE = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
                       r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$")


# The Elastic Load Balancing account that writes ALB access logs in Regions opened before
# August 2022 (AWS, "Enable access logs for your Application Load Balancer", step 2: attach
# a policy to your S3 bucket). Newer Regions use the service principal
# logdelivery.elasticloadbalancing.amazonaws.com only; the bucket policy grants both, and
# for a Region not listed here the second statement names the account itself (harmless).
ELB_LOG_ACCOUNTS = {"us-east-1": "127311923021", "us-east-2": "033677994240",
                    "us-west-1": "027434742980", "us-west-2": "797873946194",
                    "eu-west-1": "156460612806", "eu-central-1": "054676820928"}


def check_domain(v: str) -> str:
    """The domain lower-cased without a trailing dot, or ValueError saying why not."""
    d = v.strip().rstrip(".").lower()
    if not DOMAIN_RE.match(d):
        raise ValueError(f"{v!r} is not a domain name (like matrix.example.com)")
    return d


class PreflightInputs(Inputs):
    domain: str
    # "": look the zone up by name; "none": use no Route 53 (records are printed).
    hosted_zone_id: str = ""
    availability_zones: list[str] = Field(default_factory=list)
    instance_type: str = "t3.large"
    instances: int = Field(default=1, ge=1)
    volume_gb: int = Field(default=30, ge=8)
    db_class: str = "db.t4g.medium"
    db_gb: int = Field(default=50, ge=20)
    multi_az: bool = False
    cache_type: str = "cache.t4g.small"
    cache_nodes: int = Field(default=2, ge=1)
    media_gb: float = Field(default=50, ge=0)
    # The monitor phase's alarm sets (assets/aws/alarms.yaml), for their price.
    alarm_sets: list[str] = Field(default_factory=list)
    # The instances' image: the same public SSM parameter as the POC (one home: aws.py).
    ami_parameter: str = AL2023_PARAMETER

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        return check_domain(v)

    @field_validator("alarm_sets")
    @classmethod
    def _sets(cls, v: list[str]) -> list[str]:
        unknown = [n for n in v if n not in alarm_sets()]
        if unknown:
            raise ValueError(f"unknown alarm set(s) {', '.join(unknown)} (known: "
                             f"{', '.join(alarm_sets())})")
        return v


def _name_problem(deployment: str) -> str:
    """RDS and ElastiCache identifiers may not hold two hyphens in a row nor end with one
    (RDS User Guide, "DB instance identifier" constraints; ElastiCache, "Naming
    constraints"); the deployment name's own pattern allows both."""
    if "--" in deployment:
        return "holds '--'"
    if deployment.endswith("-"):
        return "ends with '-'"
    return ""


def _zone_for(api: Any, domain: str, wanted: str) -> dict[str, Any] | None:
    """The public hosted zone whose name is the longest suffix of ``domain``."""
    if wanted == "none":
        return None
    if wanted:
        z = api.checked("route53", "get_hosted_zone", Id=wanted)["HostedZone"]
        name = z["Name"].rstrip(".")
        if not (domain == name or domain.endswith("." + name)):
            raise ActionFailed(f"parameter hosted_zone_id: zone {wanted} is {name}, which "
                               f"does not hold {domain}")
        return dict(z)
    best: dict[str, Any] | None = None
    marker: dict[str, Any] = {}
    for _page in range(100):
        r = api.checked("route53", "list_hosted_zones", **marker)
        for z in r.get("HostedZones", []):
            if (z.get("Config") or {}).get("PrivateZone"):
                continue
            name = z["Name"].rstrip(".")
            if (domain == name or domain.endswith("." + name)) and (
                    best is None or len(name) > len(best["Name"].rstrip("."))):
                best = z
        if not r.get("IsTruncated"):
            break
        marker = {"Marker": r["NextMarker"]}
    return best


class ProductionPreflight(Action[PreflightInputs]):
    """Who and where we are, the domain's hosted zone, two zones, and the monthly cost."""

    name = "aws.production_preflight"
    Inputs = PreflightInputs
    read_only = True

    def describe(self, inputs: PreflightInputs) -> str:
        return f"preflight: {inputs.domain}, hosted zone, zones, sizes, monthly cost"

    def apply(self, ctx: StepContext, inputs: PreflightInputs) -> Result:
        from .aws_prices import estimate_production

        problem = _name_problem(ctx.deployment)
        if problem:
            raise ActionFailed(
                f"deployment name {ctx.deployment!r} {problem}: RDS and ElastiCache refuse it in "
                "the names this runbook derives from it (elematrix-<deployment>, "
                "em-<deployment>-redis)",
                fix="Use a deployment name without '--' that does not end with '-'.",
                retry=False)
        api = aws_for(ctx)
        ident = api.checked("sts", "get_caller_identity")
        offered = {o["Location"] for o in api.checked(
            "ec2", "describe_instance_type_offerings", LocationType="availability-zone",
            Filters=[{"Name": "instance-type", "Values": [inputs.instance_type]}]
        )["InstanceTypeOfferings"]}
        zones = sorted(z["ZoneName"] for z in api.checked(
            "ec2", "describe_availability_zones",
            Filters=[{"Name": "state", "Values": ["available"]}])["AvailabilityZones"]
            if z["ZoneName"] in offered)
        if inputs.availability_zones:
            bad = [z for z in inputs.availability_zones if z not in zones]
            if bad or len(inputs.availability_zones) != 2:
                raise ActionFailed(
                    f"parameter availability_zones: {', '.join(inputs.availability_zones)} "
                    f"must be two zones of {api.region} offering {inputs.instance_type} "
                    f"(offered: {', '.join(zones)})")
            chosen = list(inputs.availability_zones)
        elif len(zones) < 2:
            raise ActionFailed(f"{inputs.instance_type} is offered in {len(zones)} zone(s) "
                               f"of {api.region}; production needs two",
                               fix="Pick another region or instance type.")
        else:
            chosen = zones[:2]
        zone = _zone_for(api, inputs.domain, inputs.hosted_zone_id)
        ami = api.checked("ssm", "get_parameter", Name=inputs.ami_parameter)["Parameter"]["Value"]
        try:
            cost = estimate_production(
                api.region, instance_type=inputs.instance_type, instances=inputs.instances,
                volume_gb=inputs.volume_gb, db_class=inputs.db_class, db_gb=inputs.db_gb,
                multi_az=inputs.multi_az, cache_type=inputs.cache_type,
                cache_nodes=inputs.cache_nodes, media_gb=inputs.media_gb,
                alarms=alarm_count(inputs.alarm_sets))
        except KeyError as e:
            raise ActionFailed(str(e).strip("'\""), fix="Pick a priced size, or add its "
                               "price to assets/prices.yaml with its date.") from e
        ctx.log(f"account {ident['Account']}, region {api.region}, zones {', '.join(chosen)}")
        ctx.log(f"AMI {ami} (from SSM {inputs.ami_parameter})")
        if zone is not None:
            ctx.log(f"hosted zone {zone['Name']} ({zone['Id']}): the certificate's validation "
                    f"records and {inputs.domain} are written there")
        else:
            ctx.log(f"no Route 53 hosted zone holds {inputs.domain}: the records to create at "
                    "your DNS provider are printed in the edge phase, which waits for them")
        note = f"; {cost['note']}" if cost["note"] else ""
        ctx.log(f"estimated cost ~USD {cost['total_usd']:.2f}/month: list prices for "
                f"{cost['priced_region']} on {cost['price_date']}{note} (data transfer, "
                "logs and backups beyond the free allowance not included)")
        for line, usd in cost["lines"].items():
            ctx.log(f"  {line}: USD {usd:.2f}")
        out = {"account_id": ident["Account"], "region": api.region, "domain": inputs.domain,
               "availability_zones": chosen,
               "zone_id": zone["Id"].rsplit("/", 1)[-1] if zone else "",
               "zone_name": zone["Name"] if zone else "",
               "dns_mode": "route53" if zone else "manual",
               "partition": api.partition, "ami_id": ami,
               "elb_log_principal": f"arn:{api.partition}:iam::"
                                    f"{ELB_LOG_ACCOUNTS.get(api.region, ident['Account'])}:root",
               "monthly_usd": cost["total_usd"],
               "cost_lines": cost["lines"], "price_date": cost["price_date"],
               "price_region": cost["priced_region"]}
        return Result("ok", out, data=out, message=(
            f"{inputs.domain}: {out['dns_mode']} DNS, {', '.join(chosen)}, ~USD "
            f"{cost['total_usd']:.2f}/month (list prices {cost['priced_region']} "
            f"{cost['price_date']})"))


# --------------------------------------------------------------------------- dns.await_records


class Record(Inputs):
    name: str
    type: str = "CNAME"
    value: str


class AwaitInputs(Inputs):
    records: list[Record] = Field(min_length=1)
    # host:port of the name server to ask; empty: the system's (/etc/resolv.conf).
    nameserver: str = ""
    max_wait: float = Field(default=3600, ge=0)
    delay: float = Field(default=30, ge=0)


def _norm(v: str) -> str:
    return v.rstrip(".").lower() + "."


class AwaitRecords(Action[AwaitInputs]):
    """Print the records to create at the DNS provider; wait until each resolves."""

    name = "dns.await_records"
    Inputs = AwaitInputs
    read_only = True

    def describe(self, inputs: AwaitInputs) -> str:
        return f"wait for {len(inputs.records)} DNS record(s) at your DNS provider"

    def _missing(self, inputs: AwaitInputs) -> list[Record]:
        from .dns_probe import DnsError, resolve

        out = []
        for r in inputs.records:
            try:
                got = resolve(r.name, r.type, inputs.nameserver)
            except DnsError:
                out.append(r)
                continue
            if (_norm(r.name), r.type, _norm(r.value) if r.type == "CNAME"
                    else r.value.lower()) not in [
                    (n, t, _norm(v) if t == "CNAME" else v) for n, t, v in got]:
                out.append(r)
        return out

    def check(self, ctx: StepContext, inputs: AwaitInputs) -> Check:
        missing = self._missing(inputs)
        return Check(in_sync=not missing, changes=[
            f"create {r.type} {_norm(r.name)} -> {r.value} at your DNS provider"
            for r in missing])

    def apply(self, ctx: StepContext, inputs: AwaitInputs) -> Result:
        missing = self._missing(inputs)
        if missing:
            ctx.log("create these records at your DNS provider (then this step goes on by "
                    "itself):", "info")
            for r in missing:
                ctx.log(f"  {_norm(r.name)}  {r.type}  {r.value}", "info")
        t0 = time.monotonic()

        def probe(attempt: int) -> bool | None:
            missing[:] = self._missing(inputs)
            ctx.progress(f"{len(missing)} record(s) not resolving yet (attempt {attempt}, "
                         f"{time.monotonic() - t0:.0f}s)", None, None)
            return True if not missing else None

        try:
            if missing:
                poll_step(ctx, probe, what="the DNS records to resolve",
                          timeout=inputs.max_wait, interval=inputs.delay)
        except (PollTimeout, PollCancelled) as e:
            raise ActionFailed(
                f"{len(missing)} DNS record(s) did not resolve within {inputs.max_wait:.0f}s: "
                + "; ".join(f"{r.type} {_norm(r.name)} -> {r.value}" for r in missing),
                diagnosis="The name server asked "
                          f"({inputs.nameserver or 'the system resolver'}) does not answer "
                          "them yet: not created, a typo, or not propagated.",
                fix="Create them exactly as shown, then resume.") from e
        names = [_norm(r.name) for r in inputs.records]
        return Result("ok", {"records": names}, data={"records": names},
                      message=f"{len(names)} record(s) resolve")
