"""Issue 12, the AWS API side: each test fails on the code before its fix (in-process moto).

Where moto lacks an API only that call is patched, and the test's docstring says so.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest

from elematrix_tui.actions.aws import Ensure, Preflight, Teardown
from elematrix_tui.bundled import assets_dir, runbooks_dir
from elematrix_tui.engine.action import ActionFailed

pytestmark = pytest.mark.usefixtures("moto")

PKG = Path(__file__).resolve().parents[2] / "elematrix_tui"
ACCOUNT = "123456789012"
SG_RULES = [{"port": 80, "cidrs": ["0.0.0.0/0", "::/0"]},
            {"port": 22, "cidrs": ["203.0.113.5/32"]}]


def _preflight(ctx: Any, **extra: Any) -> dict[str, Any]:
    return ctx.run(Preflight(), {"instance_type": "t3.medium", **extra}).outputs


def _launch(ctx: Any, pf: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    pf = pf or _preflight(ctx)
    sg = ctx.run(Ensure(), {"kind": "security_group", "name": f"elematrix-{ctx.deployment}",
                            "spec": {"vpc_id": pf["vpc_id"], "ingress": SG_RULES}}).outputs
    spec = {"image_id": pf["ami_id"], "subnet_id": pf["subnet_id"],
            "security_group_ids": [sg["group_id"]], **extra}
    out = ctx.run(Ensure(), {"kind": "instance", "name": f"elematrix-{ctx.deployment}",
                             "spec": spec}).outputs
    return {**out, "group_id": sg["group_id"], "spec": spec}


def _instance(iid: str) -> dict[str, Any]:
    r = boto3.client("ec2").describe_instances(InstanceIds=[iid])
    return dict(r["Reservations"][0]["Instances"][0])


# ------------------------------------------------------------------ IMDS hop limit


def test_imds_hop_limit_is_1_and_an_instance_launched_with_2_is_converged(ctx: Any) -> None:
    inst = _launch(ctx)
    assert _instance(inst["instance_id"])["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    # An instance of an earlier version (hop limit 2: every container got the role).
    boto3.client("ec2").modify_instance_metadata_options(
        InstanceId=inst["instance_id"], HttpPutResponseHopLimit=2, HttpTokens="required")
    name = f"elematrix-{ctx.deployment}"
    plan = ctx.check(Ensure(), {"kind": "instance", "name": name, "spec": inst["spec"]})
    assert plan.in_sync is False
    assert any("HttpPutResponseHopLimit 2 -> 1" in c for c in plan.changes), plan.changes
    r = ctx.run(Ensure(), {"kind": "instance", "name": name, "spec": inst["spec"]})
    assert r.status == "changed" and r.outputs["instance_id"] == inst["instance_id"]
    assert _instance(inst["instance_id"])["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert ctx.run(Ensure(), {"kind": "instance", "name": name,
                              "spec": inst["spec"]}).status == "ok"


# ------------------------------------------------------------------ backup expiry


def test_backups_expire_under_the_deployment_prefix_and_the_rule_converges(ctx: Any) -> None:
    bucket = f"elematrix-{ctx.deployment}-{ACCOUNT}"
    spec = {"expire_prefix": f"{ctx.deployment}/", "expire_current_days": 30}
    assert ctx.run(Ensure(), {"kind": "bucket", "name": bucket, "spec": spec}).status == \
        "changed"
    rules = {r["ID"]: r for r in boto3.client("s3").get_bucket_lifecycle_configuration(
        Bucket=bucket)["Rules"]}
    assert rules["expire-backups"]["Expiration"] == {"Days": 30}
    assert rules["expire-backups"]["Filter"]["Prefix"] == f"{ctx.deployment}/"
    assert rules["expire-old-versions"]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    assert ctx.run(Ensure(), {"kind": "bucket", "name": bucket, "spec": spec}).status == "ok"
    # A changed retention is drift (the old code only looked for the rule's id).
    longer = {**spec, "expire_current_days": 90}
    plan = ctx.check(Ensure(), {"kind": "bucket", "name": bucket, "spec": longer})
    assert plan.in_sync is False and any("after 90 days" in c for c in plan.changes)
    ctx.run(Ensure(), {"kind": "bucket", "name": bucket, "spec": longer})
    rules = {r["ID"]: r for r in boto3.client("s3").get_bucket_lifecycle_configuration(
        Bucket=bucket)["Rules"]}
    assert rules["expire-backups"]["Expiration"] == {"Days": 90}


# ------------------------------------------------------------------ alarms


def _alarm_spec(topic: str, iid: str, **over: Any) -> dict[str, Any]:
    disk = {"id": "disk", "namespace": "CWAgent", "metric": "disk_used_percent",
            "threshold": 80, "dimensions": {"InstanceId": iid},
            "treat_missing_data": "breaching", **over}
    return {"topic_arn": topic, "alarms": [disk]}


def test_alarms_follow_a_replaced_instance_and_every_setting_is_compared(ctx: Any) -> None:
    topic = ctx.run(Ensure(), {"kind": "sns_topic",
                               "name": f"elematrix-{ctx.deployment}-alerts"}).outputs["topic_arn"]
    name = f"elematrix-{ctx.deployment}"
    first = {"kind": "alarms", "name": name, "spec": _alarm_spec(topic, "i-0aaaaaaaaaaaaaaaa")}
    assert ctx.run(Ensure(), first).status == "changed"
    assert ctx.check(Ensure(), first).in_sync is True
    # The instance was replaced: same threshold and actions, other dimensions.
    moved = {**first, "spec": _alarm_spec(topic, "i-0bbbbbbbbbbbbbbbb")}
    plan = ctx.check(Ensure(), moved)
    assert plan.in_sync is False
    assert any("dimensions InstanceId=i-0bbbbbbbbbbbbbbbb" in c for c in plan.changes)
    assert ctx.run(Ensure(), moved).status == "changed"
    a = boto3.client("cloudwatch").describe_alarms(AlarmNames=[f"{name}-disk"])["MetricAlarms"][0]
    assert a["Dimensions"] == [{"Name": "InstanceId", "Value": "i-0bbbbbbbbbbbbbbbb"}]
    assert a["TreatMissingData"] == "breaching"
    # Each of the other settings is drift too.
    for over, word in [({"namespace": "AWS/EC2"}, "Namespace"),
                       ({"statistic": "Maximum"}, "Statistic"),
                       ({"period": 60}, "Period"),
                       ({"evaluation_periods": 5}, "EvaluationPeriods"),
                       ({"comparison": "GreaterThanOrEqualToThreshold"}, "ComparisonOperator"),
                       ({"treat_missing_data": "missing"}, "TreatMissingData")]:
        spec = _alarm_spec(topic, "i-0bbbbbbbbbbbbbbbb", **over)
        p = ctx.check(Ensure(), {**first, "spec": spec})
        assert p.in_sync is False and any(word in c for c in p.changes), (over, p.changes)


def test_the_runbook_alarms_on_a_silent_agent() -> None:
    """Per alarm, as decided in assets/aws/alarms.yaml's instance set, which poc-ec2's
    harden phase makes: the agent's metrics (disk, memory) and the status check treat
    missing data as breaching; CPU (basic monitoring) as missing."""
    import yaml

    from elematrix_tui.actions.aws_kinds.cloudwatch import AlarmsSpec

    rb = yaml.safe_load((runbooks_dir() / "poc-ec2.yaml").read_text())
    harden = next(p for p in rb["phases"] if p["id"] == "harden")
    spec = next(s for s in harden["steps"] if s["id"] == "alarms")["with"]["spec"]
    assert spec["sets"] == ["instance"]
    alarms = AlarmsSpec(topic_arn="t", sets=spec["sets"],
                        dimensions={"InstanceId": "i-1"}).all_alarms()
    assert {a.id: a.treat_missing_data for a in alarms} == {
        "disk": "breaching", "memory": "breaching", "cpu": "missing", "status": "breaching"}


# ------------------------------------------------------------------ KMS


def _allows(policy: dict[str, Any], action: str, resource: str,
            context: dict[str, str]) -> bool:
    """IAM's Allow evaluation for the operators our policy uses (StringEquals, Bool;
    wildcards in Action and Resource), enough to judge this policy."""
    for st in policy["Statement"]:
        if st["Effect"] != "Allow":
            continue
        acts = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        ress = [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]
        if not any(fnmatch.fnmatchcase(action, a) for a in acts):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in ress):
            continue
        ok = True
        for op, conds in st.get("Condition", {}).items():
            for k, v in conds.items():
                want = v if isinstance(v, list) else [v]
                if op in ("StringEquals", "Bool") and context.get(k) not in want:
                    ok = False
        if ok:
            return True
    return False


EBS_KMS_ACTIONS = ["kms:CreateGrant", "kms:Decrypt", "kms:GenerateDataKeyWithoutPlaintext",
                   "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:DescribeKey"]


def test_operator_policy_lets_ebs_use_a_customer_key_only_through_ec2() -> None:
    from elematrix_tui.actions.aws_policy import operator_policy

    for region, partition, suffix in [("eu-west-1", "aws", "amazonaws.com"),
                                      ("cn-north-1", "aws-cn", "amazonaws.com.cn"),
                                      ("us-gov-west-1", "aws-us-gov", "amazonaws.com")]:
        policy = operator_policy(region)
        key = f"arn:{partition}:kms:{region}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
        via_ec2 = {"kms:ViaService": f"ec2.{region}.{suffix}",
                   "kms:GrantIsForAWSResource": "true"}
        for action in EBS_KMS_ACTIONS:
            assert _allows(policy, action, key, via_ec2), (region, action)
        # Not directly, not through another service, not in another region.
        for ctx_ in ({}, {"kms:ViaService": f"s3.{region}.{suffix}"},
                     {"kms:ViaService": f"ec2.xx-east-9.{suffix}"}):
            for action in ("kms:Decrypt", "kms:CreateGrant"):
                assert not _allows(policy, action, key, ctx_), (region, action, ctx_)
        # A grant only for an AWS resource (the volume), never for a principal.
        assert not _allows(policy, "kms:CreateGrant", key,
                           {"kms:ViaService": f"ec2.{region}.{suffix}"})


@pytest.fixture
def ebs_default_key_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto 5.2.5 implements ModifyEbsDefaultKmsKeyId but not GetEbsDefaultKmsKeyId
    (moto/ec2/responses/elastic_block_store.py has only ``modify_ebs_default_kms_key_id``).
    This adds only that call, as AWS documents it (EC2 API reference,
    GetEbsDefaultKmsKeyId; the AWS CLI reference's example answers ``alias/aws/ebs`` for an
    account that never changed its default): the key set by ModifyEbsDefaultKmsKeyId, else
    ``alias/aws/ebs``. moto has no AWS managed keys (its aws/ebs key says KeyManager
    CUSTOMER): the preflight knows ``alias/aws/`` names AWS managed keys by KMS's rule."""
    from moto.core.responses import ActionResult
    from moto.ec2.responses import EC2Response

    def get_ebs_default_kms_key_id(self: Any) -> Any:
        from moto.kms import kms_backends

        kms = kms_backends[self.current_account][self.region]
        current = self.ec2_backend.default_kms_key_id
        # moto makes aws/ebs on the first encrypted volume (as AWS does): still the default.
        if current and kms.alias_exists("alias/aws/ebs") and \
                kms.describe_key("alias/aws/ebs").arn == current:
            current = ""
        return ActionResult({"KmsKeyId": current or "alias/aws/ebs"})

    monkeypatch.setattr(EC2Response, "get_ebs_default_kms_key_id",
                        get_ebs_default_kms_key_id, raising=False)


def test_preflight_names_the_key_that_will_encrypt_the_volume(
        ctx: Any, ebs_default_key_api: None) -> None:
    out = _preflight(ctx)
    assert out["volume_kms_key_source"] == "the account's EBS default key"
    assert out["volume_kms_key_manager"] == "AWS"
    try:  # named by the ARN of aws/ebs once that key exists (after an encrypted volume)
        aws_ebs = boto3.client("kms").describe_key(KeyId="alias/aws/ebs")["KeyMetadata"]["Arn"]
    except Exception:
        aws_ebs = "alias/aws/ebs"
    assert out["volume_kms_key"] == aws_ebs
    # The account's default changed to a customer key: that one is named.
    kms0 = boto3.client("kms").create_key(Description="account default")["KeyMetadata"]
    boto3.client("ec2").modify_ebs_default_kms_key_id(KmsKeyId=kms0["KeyId"])
    out = _preflight(ctx)
    assert (out["volume_kms_key"], out["volume_kms_key_manager"]) == (kms0["Arn"], "CUSTOMER")
    # The runbook's own key wins, and a customer-managed key is called out.
    kms = boto3.client("kms").create_key(Description="ops")["KeyMetadata"]
    ctx.logs.clear()
    out = _preflight(ctx, kms_key_id=kms["KeyId"])
    assert out["volume_kms_key"] == kms["Arn"]
    assert out["volume_kms_key_source"] == "runbook parameter kms_key_id"
    assert out["volume_kms_key_manager"] == "CUSTOMER"
    text = "\n".join(line for _, line in ctx.logs)
    assert f"root volume encrypted with KMS key {kms['Arn']}" in text
    assert "kms:CreateGrant" in text
    # A disabled key would terminate the instance right after launch: refused up front.
    boto3.client("kms").disable_key(KeyId=kms["KeyId"])
    with pytest.raises(ActionFailed) as e:
        _preflight(ctx, kms_key_id=kms["KeyId"])
    assert "Disabled" in e.value.message


# ------------------------------------------------------------------ VPC / subnet


def test_a_subnet_without_a_route_to_an_internet_gateway_is_refused(ctx: Any) -> None:
    ec2 = boto3.client("ec2")
    azs = _preflight(ctx)["availability_zones"]
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.42.1.0/24",
                               AvailabilityZone=azs[0])["Subnet"]["SubnetId"]
    main = ec2.describe_route_tables(Filters=[
        {"Name": "vpc-id", "Values": [vpc]},
        {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]["RouteTableId"]
    with pytest.raises(ActionFailed) as e:
        _preflight(ctx, subnet_id=subnet)
    assert e.value.message.startswith(f"parameter subnet_id: subnet {subnet} (VPC {vpc})")
    assert main in e.value.message and "main table" in e.value.message
    with pytest.raises(ActionFailed) as e:
        _preflight(ctx, vpc_id=vpc)
    assert e.value.message.startswith(f"parameter vpc_id: VPC {vpc} has no subnet")
    # An internet gateway and the default route in the main table: accepted.
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    ec2.create_route(RouteTableId=main, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    assert _preflight(ctx, vpc_id=vpc)["subnet_id"] == subnet
    pf = _preflight(ctx, subnet_id=subnet)
    assert (pf["vpc_id"], pf["subnet_id"]) == (vpc, subnet)
    # The subnet's own route table wins over the main one.
    own = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.associate_route_table(RouteTableId=own, SubnetId=subnet)
    with pytest.raises(ActionFailed) as e:
        _preflight(ctx, subnet_id=subnet)
    assert own in e.value.message and "explicitly associated" in e.value.message
    ec2.create_route(RouteTableId=own, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    # Launched there with an explicit public IPv4 (the subnet does not auto-assign one),
    # its security group in that VPC.
    inst = _launch(ctx, pf)
    i = _instance(inst["instance_id"])
    assert i["SubnetId"] == subnet and i["VpcId"] == vpc
    assert i.get("PublicIpAddress"), "no public IPv4 on the interface"
    g = ec2.describe_security_groups(GroupIds=[inst["group_id"]])["SecurityGroups"][0]
    assert g["VpcId"] == vpc
    # (moto leaves the instance's own SecurityGroups empty for an interface spec; the
    # interface carries the groups, as on AWS.)
    assert [x["GroupId"] for x in i["NetworkInterfaces"][0]["Groups"]] == [inst["group_id"]]


def test_the_default_vpc_is_used_as_aws_makes_it_and_refused_without_its_gateway(
        ctx: Any) -> None:
    """The emulator's default VPC has AWS's internet gateway and route
    (practice.default_vpc_like_aws, installed for every test in tests/conftest.py); a
    default VPC whose route someone removed is refused like any private subnet (it only
    warned before, because moto's default VPC lacked the gateway)."""
    ec2 = boto3.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
    main = ec2.describe_route_tables(Filters=[
        {"Name": "vpc-id", "Values": [vpc["VpcId"]]},
        {"Name": "association.main", "Values": ["true"]}])["RouteTables"][0]
    assert any(r.get("DestinationCidrBlock") == "0.0.0.0/0"
               and r.get("GatewayId", "").startswith("igw-") for r in main["Routes"])
    pf = _preflight(ctx)
    assert pf["vpc_id"] == vpc["VpcId"]
    igw = next(r["GatewayId"] for r in main["Routes"]
               if r.get("DestinationCidrBlock") == "0.0.0.0/0")
    ec2.delete_route(RouteTableId=main["RouteTableId"], DestinationCidrBlock="0.0.0.0/0")
    try:
        with pytest.raises(ActionFailed) as e:
            _preflight(ctx)
        assert e.value.message.startswith(
            "parameter subnet_id (not set: the default VPC's default subnet): subnet ")
        assert main["RouteTableId"] in e.value.message
    finally:  # the module's later tests share this emulator's default VPC
        ec2.create_route(RouteTableId=main["RouteTableId"], DestinationCidrBlock="0.0.0.0/0",
                         GatewayId=igw)


def test_vpc_and_subnet_ids_of_another_vpc_or_nowhere_are_located(ctx: Any) -> None:
    pf = _preflight(ctx)
    with pytest.raises(ActionFailed) as e:
        _preflight(ctx, subnet_id="subnet-0123456789abcdef0")
    assert e.value.message.startswith("parameter subnet_id: no subnet subnet-0123456789abcdef0")
    with pytest.raises(ActionFailed) as e:
        _preflight(ctx, vpc_id="vpc-0123456789abcdef0", subnet_id=pf["subnet_id"])
    assert "not in vpc_id vpc-0123456789abcdef0" in e.value.message


# ------------------------------------------------------------------ teardown


def test_teardown_stops_and_names_the_keys_s3_refuses_to_delete(ctx: Any) -> None:
    """S3 Object Lock makes DeleteObjects answer per-key ``Errors`` (moto implements it:
    moto/s3/models.py delete_objects catches AccessDeniedByLock). The old loop re-listed
    and re-deleted the same version forever; the step must fail at once, naming the key."""
    bucket = f"elematrix-{ctx.deployment}-{ACCOUNT}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": [
        {"Key": "elematrix:deployment", "Value": ctx.deployment}]})
    s3.put_object(Bucket=bucket, Key=f"{ctx.deployment}/locked.sql.gz", Body=b"x",
                  ObjectLockMode="COMPLIANCE",
                  ObjectLockRetainUntilDate=datetime.datetime(2099, 1, 1))
    s3.put_object(Bucket=bucket, Key=f"{ctx.deployment}/free.sql.gz", Body=b"y")
    inputs = {"name_prefix": f"elematrix-{ctx.deployment}",
              "log_group_prefix": f"/elematrix/{ctx.deployment}",
              "ssm_prefix": f"AmazonCloudWatch-elematrix-{ctx.deployment}",
              "include_bucket": True, "max_wait": 5}
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = ctx.run(Teardown(), inputs)
        except BaseException as e:  # the outcome is judged below
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)
    stuck = t.is_alive()
    ctx.cancel.set()  # lets a looping old implementation stop if it ever looks
    assert not stuck, "teardown still emptying the bucket after 30 s"
    err = box.get("error")
    assert isinstance(err, ActionFailed), box
    assert f"{ctx.deployment}/locked.sql.gz" in err.message and "AccessDenied" in err.message
    assert "1 of 2" in err.message and "Object Lock" in err.diagnosis
    assert [b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"] == bucket] == [bucket]


# ------------------------------------------------------------------ cost and credits


def test_cost_counts_the_auto_assigned_ipv4_and_the_unlimited_credit_risk() -> None:
    from elematrix_tui.actions.aws_prices import estimate

    no_eip = estimate("t3.medium", "us-east-1", 30, False, 10)
    assert no_eip["lines"]["public IPv4 (auto-assigned)"] == pytest.approx(3.65)
    with_eip = estimate("t3.medium", "us-east-1", 30, True, 10)
    assert with_eip["total_usd"] == no_eip["total_usd"]
    assert no_eip["risks"] == {}
    # unlimited: (1 - 20 % baseline) x 2 vCPU x 730 h x USD 0.05 = USD 58.40 at full load.
    unl = estimate("t3.medium", "us-east-1", 30, False, 10, cpu_credits="unlimited")
    assert list(unl["risks"].values()) == [pytest.approx(58.40)]
    assert unl["total_usd"] == no_eip["total_usd"]
    large = estimate("t3.large", "eu-west-1", 30, False, 10, cpu_credits="unlimited")
    assert list(large["risks"].values()) == [pytest.approx(0.7 * 2 * 730 * 0.05)]


def test_launch_sets_the_cpu_credit_mode_explicitly(ctx: Any) -> None:
    """moto's DescribeInstanceCreditSpecifications answers "standard" for every instance
    whatever was asked (moto/ec2/responses/instances.py), so the request itself is checked:
    a ``provide-client-params`` handler records what RunInstances was sent."""
    sent: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        sent.append(dict(params))

    # Clients copy the session's handlers when made: register on the cached client.
    events = ctx._resources["aws.session"][0].client("ec2").meta.events
    events.register("provide-client-params.ec2.RunInstances", record,
                    unique_id="record-run-instances")
    try:
        _launch(ctx)
        _launch(ctx.__class__(deployment_dir=ctx.deployment_dir, deployment=ctx.deployment + "u",
                              run_id="run-1", params=ctx.params,
                              _resources=dict(ctx._resources)), cpu_credits="unlimited")
    finally:
        events.unregister("provide-client-params.ec2.RunInstances",
                          unique_id="record-run-instances")
    assert [p.get("CreditSpecification") for p in sent] == [
        {"CpuCredits": "standard"}, {"CpuCredits": "unlimited"}]
    nic = sent[0]["NetworkInterfaces"][0]
    assert nic["AssociatePublicIpAddress"] is True and "SecurityGroupIds" not in sent[0]


# ------------------------------------------------------------------ partition


def test_partition_comes_from_the_caller_identity_and_reaches_every_arn(
        tmp_path: Path) -> None:
    from elematrix_tui.engine.standalone import StandaloneContext

    c = StandaloneContext(deployment_dir=tmp_path, deployment="cn0", run_id="run-1",
                          params={"aws_region": "cn-north-1"})
    try:
        out = c.run(Ensure(), {"kind": "bucket", "name": f"elematrix-cn0-{ACCOUNT}",
                               "spec": {}}).outputs
        assert out["bucket_arn"] == f"arn:aws-cn:s3:::elematrix-cn0-{ACCOUNT}"
        pol = json.loads(boto3.client("s3", region_name="cn-north-1").get_bucket_policy(
            Bucket=f"elematrix-cn0-{ACCOUNT}")["Policy"])
        assert all(r.startswith("arn:aws-cn:s3:::")
                   for st in pol["Statement"] for r in st["Resource"])
    finally:
        c.close()
    from elematrix_tui.actions.aws_session import partition_of

    assert partition_of("arn:aws-cn:sts::1:assumed-role/x/y") == "aws-cn"
    assert partition_of("arn:aws-us-gov:iam::1:user/x") == "aws-us-gov"
    assert partition_of("", "cn-northwest-1") == "aws-cn"
    assert partition_of("", "us-gov-east-1") == "aws-us-gov"
    assert partition_of("", "eu-west-1") == "aws"


def test_no_arn_in_the_runbooks_or_assets_hard_codes_the_aws_partition() -> None:
    hits = []
    for p in sorted(runbooks_dir().glob("*.yaml")) + sorted(
            (assets_dir() / "aws").glob("*.json")) + sorted(
            (PKG / "actions").glob("aws*.py")):
        for n, line in enumerate(p.read_text().splitlines(), 1):
            if "arn:aws:" in line:
                hits.append(f"{p.name}:{n}: {line.strip()}")
    assert hits == []
