"""AWS actions: ``aws.call``, ``aws.ensure``, ``aws.assert``, ``aws.preflight``,
``aws.teardown`` (``aws.wait`` is in ``aws_wait.py``, re-exported here).

All go through :func:`aws_session.aws_for` (one session per run, cached clients with
standard retries, every call logged, the account guard on first use). boto3 is imported
lazily by the helpers, so importing this module is cheap.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from ..engine.action import Action, ActionFailed, Check, Inputs, Result, StepContext
from .aws_data import READ_PREFIXES, clean, jsonable
from .aws_errors import explain
from .aws_kinds.cloudwatch import alarm_count
from .aws_session import AwsApi, aws_for

# aws.wait lives in its own module; re-exported so the registry's "aws:Wait" and the
# imports of this module keep working.
from .aws_wait import META_HOST_KEYS, Wait, WaitInputs, parse_host_keys
from .sshconn.hostkeys import BEGIN_KEYS, END_KEYS

if TYPE_CHECKING:
    from .aws_teardown import Inventory

AL2023_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"


# --------------------------------------------------------------------------- aws.call


# boto3 client methods that are not AWS API operations; the S3 transfer ones read or write
# any local file (upload_file Filename=~/.ssh/id_ed25519), so aws.call refuses them.
_NOT_API = frozenset({"upload_file", "upload_fileobj", "download_file", "download_fileobj",
                      "copy", "generate_presigned_url", "generate_presigned_post",
                      "get_paginator", "get_waiter", "can_paginate", "close"})
_OPERATION_RE = re.compile(r"^[a-z][a-z0-9_]*$")


class CallInputs(Inputs):
    service: str
    # A snake_case AWS API operation of the service's client (describe_instances).
    operation: str
    params: dict[str, Any] = Field(default_factory=dict)
    # AWS error codes that count as success (e.g. "already exists" on a create).
    ok_errors: list[str] = Field(default_factory=list)

    @field_validator("operation")
    @classmethod
    def _operation(cls, v: str) -> str:
        if "{{" in v or "{%" in v:
            return v
        if not _OPERATION_RE.match(v) or v in _NOT_API:
            raise ValueError(f"{v!r} is not an AWS API operation (aws.call never reads or "
                             f"writes local files; upload a file with ssh.upload)")
        return v


class Call(Action[CallInputs]):
    """Any boto3 operation. Prefer ``aws.ensure`` for creates: a call is not idempotent."""

    name = "aws.call"
    Inputs = CallInputs

    def describe(self, inputs: CallInputs) -> str:
        return f"{inputs.service}.{inputs.operation}"

    def check(self, ctx: StepContext, inputs: CallInputs) -> Check:
        if inputs.operation.startswith(READ_PREFIXES):
            return Check(in_sync=None, changes=[])
        return Check(in_sync=None, changes=[f"call {inputs.service}.{inputs.operation}"])

    def apply(self, ctx: StepContext, inputs: CallInputs) -> Result:
        from .aws_errors import error_code

        api = aws_for(ctx)
        # Only the service's API operations: the client's other methods act locally.
        if inputs.operation not in api.shared.client(inputs.service).meta.method_to_api_mapping:
            raise ActionFailed(f"{inputs.service}.{inputs.operation} is not an AWS API "
                               f"operation", fix="name an operation of the service's API, "
                               "in snake_case (describe_instances)")
        try:
            resp = api.call(inputs.service, inputs.operation, **inputs.params)
        except Exception as e:
            code = error_code(e)
            if code is not None and code in inputs.ok_errors:
                return Result("ok", {"error": code}, data={"error": code},
                              message=f"{code} (accepted)")
            raise explain(e, inputs.service, inputs.operation, api.region) from e
        data = jsonable(clean(resp))
        changed = not inputs.operation.startswith(READ_PREFIXES)
        return Result("changed" if changed else "ok", {}, data=data)


# --------------------------------------------------------------------------- aws.ensure


def _has_expression(v: Any) -> bool:
    if isinstance(v, str):
        return "{{" in v or "{%" in v
    if isinstance(v, dict):
        return any(_has_expression(x) for x in v.values())
    if isinstance(v, list):
        return any(_has_expression(x) for x in v)
    return False


class EnsureInputs(Inputs):
    kind: str
    # The resource's name (a Name tag for EC2 resources, the real name elsewhere).
    name: str
    spec: Any = Field(default_factory=dict)

    @model_validator(mode="after")
    def _spec(self) -> EnsureInputs:
        from .aws_kinds import KINDS

        kind = KINDS.get(self.kind)
        if kind is None:
            raise ValueError(f"unknown kind {self.kind!r}; known: {', '.join(sorted(KINDS))}")
        if isinstance(self.spec, kind.Spec):
            return self
        spec = self.spec or {}
        if not isinstance(spec, dict):
            raise ValueError(f"spec must be a mapping, got {type(spec).__name__}")
        unknown = sorted(set(spec) - set(kind.Spec.model_fields))
        if unknown:
            raise ValueError(f"spec of kind {self.kind!r} has no field(s) {', '.join(unknown)}; "
                             f"it takes: {', '.join(kind.Spec.model_fields)}")
        if _has_expression(spec):
            # Validated for real once the runner has rendered the expressions.
            return self
        self.spec = kind.Spec.model_validate(spec)
        return self


class Ensure(Action[EnsureInputs]):
    """Find the resource (by deployment tag or its deployment-derived name); create or
    converge it only when needed. Same outputs whether it was found or created."""

    name = "aws.ensure"
    Inputs = EnsureInputs

    def local_effects(self, with_: dict[str, Any]) -> list[str]:
        spec = with_.get("spec") or {}
        if with_.get("kind") != "key_pair" or not isinstance(spec, dict):
            return []
        from .aws_kinds import KeyPairSpec

        path = spec.get("public_key_path", KeyPairSpec.model_fields["public_key_path"].default)
        return [f"reads {path} on THIS machine (and sends the public key to AWS)"] if path \
            else []

    def describe(self, inputs: EnsureInputs) -> str:
        from .aws_kinds import KINDS

        return f"ensure {KINDS[inputs.kind].title} {inputs.name}"

    def check(self, ctx: StepContext, inputs: EnsureInputs) -> Check:
        from .aws_kinds import KINDS

        api = aws_for(ctx)
        found = KINDS[inputs.kind].find(api, ctx, inputs.name, inputs.spec)
        in_sync = found.obj is not None and not found.changes
        out = jsonable(found.outputs) if in_sync else {}
        return Check(in_sync=in_sync, changes=found.changes, outputs=out,
                     data=out if in_sync else None, creates=found.obj is None)

    def apply(self, ctx: StepContext, inputs: EnsureInputs) -> Result:
        from .aws_kinds import KINDS

        api = aws_for(ctx)
        kind = KINDS[inputs.kind]
        found = kind.find(api, ctx, inputs.name, inputs.spec)
        if found.obj is not None and not found.changes:
            out = jsonable(found.outputs)
            ctx.log(f"{kind.title} {inputs.name} already in place")
            return Result("ok", out, data=out, message=f"{kind.title} {inputs.name} found")
        for c in found.changes:
            ctx.log(f"to do: {c}")
        outputs, changed = kind.apply(api, ctx, inputs.name, inputs.spec, found)
        out = jsonable(outputs)
        return Result("changed" if changed else "ok", out, data=out,
                      message="; ".join(found.changes)[:300])


# --------------------------------------------------------------------------- aws.assert


# The message of a gate whose checks ran and some failed (audit/run.py reads it apart from
# a gate that could not make its calls).
POSTURE_FAILED = "posture check failed:"


class AssertCheck(Inputs):
    title: str
    # The posture control this check proves (FSBP id, listed in the runbook's posture
    # section: engine/posture.py); the audit's native check runs exactly these.
    control: str | None = None
    service: str
    operation: str
    params: dict[str, Any] = Field(default_factory=dict)
    query: str
    equals: Any = None
    contains: Any = None
    not_empty: bool = False


class AssertInputs(Inputs):
    checks: list[AssertCheck] = Field(min_length=1)


class Assert(Action[AssertInputs]):
    """Read-only posture checks: each is a call, a JMESPath and an expected value."""

    name = "aws.assert"
    Inputs = AssertInputs
    read_only = True

    def describe(self, inputs: AssertInputs) -> str:
        return "check " + "; ".join(c.title for c in inputs.checks)

    def apply(self, ctx: StepContext, inputs: AssertInputs) -> Result:
        import jmespath

        api = aws_for(ctx)
        results = []
        failed = []
        for c in inputs.checks:
            if not c.operation.startswith(READ_PREFIXES):
                raise ActionFailed(f"aws.assert only reads: {c.operation} is not a read call")
            try:
                resp = api.call(c.service, c.operation, **c.params)
            except Exception as e:
                raise explain(e, c.service, c.operation, api.region) from e
            got = jmespath.search(c.query, jsonable(clean(resp)))
            ok = True
            want = ""
            if c.equals is not None:
                ok = ok and got == c.equals
                want = f"== {c.equals!r}"
            if c.contains is not None:
                ok = ok and isinstance(got, list | str) and c.contains in got
                want += f" contains {c.contains!r}"
            if c.not_empty:
                ok = ok and bool(got)
                want += " not empty"
            results.append({"title": c.title, "passed": ok, "actual": got,
                            "control": c.control})
            tag = f"[{c.control}] " if c.control else ""
            ctx.log(f"{'PASS' if ok else 'FAIL'} {tag}{c.title}: {got!r}"
                    + ("" if ok else f" (expected {want.strip()})"),
                    "stdout" if ok else "stderr")
            if not ok:
                failed.append(f"{tag}{c.title}: got {got!r}, expected {want.strip()}")
        out = {"passed": len(results) - len(failed), "failed": len(failed),
               "results": jsonable(results)}
        if failed:
            raise ActionFailed(f"{POSTURE_FAILED} " + "; ".join(failed),
                               diagnosis="The resource's configuration drifted from what the "
                                         "runbook created (or something else changed it).",
                               fix="Fix the setting (or re-run the phase to converge it), then "
                                   "resume.")
        return Result("ok", out, data=out, message=f"{len(results)} checks passed")


# --------------------------------------------------------------------------- aws.preflight


class PreflightInputs(Inputs):
    instance_type: str = "t3.medium"
    ami_parameter: str = AL2023_PARAMETER
    volume_gb: int = 30
    eip: bool = True
    s3_gb: float = 10
    # The instance set's (assets/aws/alarms.yaml), as the harden phase makes them.
    alarms: int = Field(default_factory=lambda: alarm_count(["instance"]))
    # Empty: the default VPC and its default subnet.
    vpc_id: str = ""
    subnet_id: str = ""
    # The runbook's key for the root volume; empty: the account's EBS default key.
    kms_key_id: str = ""
    cpu_credits: Literal["standard", "unlimited"] = "standard"


class Preflight(Action[PreflightInputs]):
    """Who and where we are, the AMI, the instance type's zones, a subnet and the cost."""

    name = "aws.preflight"
    Inputs = PreflightInputs
    read_only = True

    def describe(self, inputs: PreflightInputs) -> str:
        return f"preflight: identity, region, {inputs.instance_type} offered, AL2023 AMI, cost"

    def apply(self, ctx: StepContext, inputs: PreflightInputs) -> Result:
        from .aws_network import choose_subnet, volume_key
        from .aws_prices import estimate

        api = aws_for(ctx)  # runs the account guard on first use
        ident = api.checked("sts", "get_caller_identity")
        ami = api.checked("ssm", "get_parameter", Name=inputs.ami_parameter)["Parameter"]["Value"]
        ami_name = ""
        try:
            imgs = api.call("ec2", "describe_images", ImageIds=[ami])["Images"]
            ami_name = imgs[0].get("Name", "") if imgs else ""
        except Exception as e:  # the name is informative only
            ctx.log(f"could not describe {ami}: {e}", "stderr")
        offers = api.checked("ec2", "describe_instance_type_offerings",
                             LocationType="availability-zone",
                             Filters=[{"Name": "instance-type",
                                       "Values": [inputs.instance_type]}]
                             )["InstanceTypeOfferings"]
        azs = sorted(o["Location"] for o in offers)
        if not azs:
            raise ActionFailed(
                f"{inputs.instance_type} is not offered in {api.region}",
                diagnosis="describe_instance_type_offerings lists no availability zone for it.",
                fix="Pick another region (`--set aws_region=...`) or instance type.")
        subnet = choose_subnet(api, inputs.vpc_id, inputs.subnet_id, azs,
                               inputs.instance_type, ctx.log)
        vpc_id = subnet["VpcId"]
        key = volume_key(api, inputs.kms_key_id, ctx.log)
        cost = estimate(inputs.instance_type, api.region, inputs.volume_gb, inputs.eip,
                        inputs.s3_gb, inputs.alarms, cpu_credits=inputs.cpu_credits)
        ctx.log(f"account {ident['Account']} ({ident['Arn']}), region {api.region}")
        ctx.log(f"AMI {ami} {ami_name} (from SSM {inputs.ami_parameter})")
        ctx.log(f"{inputs.instance_type} offered in {', '.join(azs)}; using "
                f"{subnet['SubnetId']} in {subnet['AvailabilityZone']} (VPC {vpc_id})")
        ctx.log(f"root volume encrypted with KMS key {key['key_arn'] or key['key']} "
                f"({key['source']}, {key['manager']}-managed)")
        if key["manager"] == "CUSTOMER":
            ctx.log("customer-managed key: its key policy must let you use it through EC2 "
                    "(kms:CreateGrant, Decrypt, GenerateDataKeyWithoutPlaintext, ReEncrypt*, "
                    "DescribeKey), or the instance terminates right after launch")
        note = f"; {cost['note']}" if cost["note"] else ""
        ctx.log(f"estimated cost ~USD {cost['total_usd']:.2f}/month (price table of "
                f"{cost['price_date']}, {cost['priced_region']}{note})")
        for line, usd in cost["lines"].items():
            ctx.log(f"  {line}: USD {usd:.2f}")
        for line, usd in cost["risks"].items():
            ctx.log(f"  not included: {line}: up to USD {usd:.2f}")
        out = {"account_id": ident["Account"], "arn": ident["Arn"], "region": api.region,
               "ami_id": ami, "ami_name": ami_name, "instance_type": inputs.instance_type,
               "availability_zones": azs, "vpc_id": vpc_id, "subnet_id": subnet["SubnetId"],
               "availability_zone": subnet["AvailabilityZone"],
               "monthly_usd": cost["total_usd"], "cost_lines": cost["lines"],
               "cost_risks": cost["risks"], "price_date": cost["price_date"],
               "partition": api.partition, "volume_kms_key": key["key_arn"] or key["key"],
               "volume_kms_key_source": key["source"],
               "volume_kms_key_manager": key["manager"]}
        return Result("ok", out, data=out,
                      message=f"{ident['Account']}/{api.region}, {ami}, ~USD "
                              f"{cost['total_usd']:.2f}/month (prices of {cost['price_date']})")


# --------------------------------------------------------------------------- aws.teardown


class TeardownInputs(Inputs):
    # Name prefix of the runbook's resources (IAM/alarms/topics are listed by it, then the
    # deployment tag decides).
    name_prefix: str
    log_group_prefix: str
    # SSM parameters (the CloudWatch agent config must be named AmazonCloudWatch-*).
    ssm_prefix: str
    # The bucket holds backups: deleted only when the operator typed the deployment name.
    include_bucket: bool = False
    # Only list (a gate proving nothing is left).
    dry_run: bool = False
    max_wait: float = Field(default=900, ge=0)
    # The production runbook's ALB, ACM, Route 53 records, ElastiCache, RDS and VPC too
    # (docs/production.md); RDS, like the bucket, only with the typed confirmation.
    managed_services: bool = False


class Teardown(Action[TeardownInputs]):
    """Delete everything tagged with this deployment, in dependency order (resumable)."""

    name = "aws.teardown"
    Inputs = TeardownInputs

    def describe(self, inputs: TeardownInputs) -> str:
        return ("list" if inputs.dry_run else "delete") + " every resource of this deployment"

    def _discover(self, ctx: StepContext, inputs: TeardownInputs) -> tuple[AwsApi, Inventory]:
        from .aws_teardown import discover

        api = aws_for(ctx)
        return api, discover(api, ctx, inputs.name_prefix, inputs.log_group_prefix,
                             inputs.ssm_prefix, managed=inputs.managed_services)

    def check(self, ctx: StepContext, inputs: TeardownInputs) -> Check:
        _api, inv = self._discover(ctx, inputs)
        lines = inv.lines(inputs.include_bucket)
        n = inv.count(inputs.include_bucket)
        out = {"remaining": n, "resources": lines}
        if inputs.dry_run:
            return Check(in_sync=None, changes=[], outputs=out, data=out)
        return Check(in_sync=n == 0, changes=[ln for ln in lines if ln.startswith("delete")],
                     outputs={"deleted": [], "remaining": 0, "kept": _kept(lines)} if n == 0
                     else {}, data=None)

    def apply(self, ctx: StepContext, inputs: TeardownInputs) -> Result:
        from .aws_teardown import delete_all

        api, inv = self._discover(ctx, inputs)
        lines = inv.lines(inputs.include_bucket)
        for ln in lines:
            ctx.log(ln)
        if inputs.dry_run:
            n = inv.count(inputs.include_bucket)
            out = {"remaining": n, "resources": lines}
            return Result("ok", out, data=out, message=f"{n} resource(s) left")
        if not lines:
            ctx.log(f"nothing tagged elematrix:deployment={ctx.deployment} is left")
        done = delete_all(api, ctx, inv, inputs.include_bucket, inputs.max_wait)
        _api, after = self._discover(ctx, inputs)
        left = after.count(inputs.include_bucket)
        out = {"deleted": done, "remaining": left, "kept": _kept(lines)}
        if left:
            raise ActionFailed(f"{left} resource(s) still present after teardown: "
                               + "; ".join(after.lines(inputs.include_bucket)),
                               fix="Resume the teardown: it deletes what is left.")
        return Result("changed" if done else "ok", out, data=out,
                      message=f"deleted {len(done)} resource(s)")


def _kept(lines: list[str]) -> list[str]:
    return [ln for ln in lines if ln.startswith("keep")]


__all__ = ["BEGIN_KEYS", "END_KEYS", "META_HOST_KEYS", "Assert", "Call", "Ensure", "Preflight",
           "Teardown", "Wait", "WaitInputs", "parse_host_keys"]


