"""The AWS actions one by one, against in-process moto (``mock_aws``)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from elematrix_tui.actions.aws import (
    Assert,
    Call,
    Ensure,
    Preflight,
    Teardown,
    Wait,
    parse_host_keys,
)
from elematrix_tui.actions.aws_session import mask_params
from elematrix_tui.engine.action import ActionFailed

from .helpers import count_tagged, hook_sessions, inject

pytestmark = pytest.mark.usefixtures("moto")

SG_RULES = [{"port": 80, "cidrs": ["0.0.0.0/0", "::/0"]},
            {"port": 22, "cidrs": ["203.0.113.5/32"]}]


def _calls(ctx: Any, op: str | None = None) -> list[dict[str, Any]]:
    return [d for k, d in ctx.notes if k == "aws.call" and (op is None or d["operation"] == op)]


def _preflight(ctx: Any) -> dict[str, Any]:
    return ctx.run(Preflight(), {"instance_type": "t3.medium"}).outputs


def test_preflight_resolves_ami_offering_subnet_and_cost(ctx: Any) -> None:
    out = _preflight(ctx)
    ami = boto3.client("ssm").get_parameter(
        Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
    )["Parameter"]["Value"]
    assert out["ami_id"] == ami and ami.startswith("ami-")
    assert out["account_id"] == "123456789012" and out["region"] == "us-east-1"
    assert out["availability_zone"] in out["availability_zones"]
    assert out["subnet_id"].startswith("subnet-") and out["vpc_id"].startswith("vpc-")
    assert out["price_date"] == "2026-11-27"
    # 730 h * 0.0416 + 30 GB * 0.08 + 730 h * 0.005 + 10 GB * 0.023 + 4 alarms * 0.10
    assert out["monthly_usd"] == pytest.approx(30.37 + 2.40 + 3.65 + 0.23 + 0.40, abs=0.02)
    text = "\n".join(line for _, line in ctx.logs)
    assert ami in text and "price table of 2026-11-27" in text
    # The account guard recorded the target on first use.
    assert ctx.meta == {"aws.account_id": "123456789012", "aws.region": "us-east-1"}


def test_preflight_refuses_an_instance_type_not_offered(ctx: Any) -> None:
    with pytest.raises(ActionFailed) as e:
        ctx.run(Preflight(), {"instance_type": "t3.nonexistent"})
    assert "not offered" in e.value.message and e.value.fix


def test_every_call_is_noted_with_request_id_and_masked_params(ctx: Any) -> None:
    ctx.run(Call(), {"service": "ec2", "operation": "describe_vpcs"})
    note = _calls(ctx, "describe_vpcs")[0]
    assert note["service"] == "ec2" and note["request_id"] and note["duration"] >= 0
    assert "Vpcs" in note["summary"]
    masked = mask_params({"UserData": "#!/bin/bash\n" * 50, "Password": "hunter2",
                          "Nested": [{"SecretAccessKey": "abc"}], "Name": "x"})
    assert masked["Password"] == "***" and masked["Nested"][0]["SecretAccessKey"] == "***"
    assert masked["UserData"].startswith("<") and masked["Name"] == "x"


def test_security_group_is_found_not_duplicated_and_drift_is_converged(ctx: Any) -> None:
    vpc = _preflight(ctx)["vpc_id"]
    inputs = {"kind": "security_group", "name": f"elematrix-{ctx.deployment}",
              "spec": {"vpc_id": vpc, "ingress": SG_RULES}}
    first = ctx.run(Ensure(), inputs)
    assert first.status == "changed"
    check = ctx.check(Ensure(), inputs)
    assert check.in_sync is True and check.outputs == first.outputs
    second = ctx.run(Ensure(), inputs)
    assert second.status == "ok" and second.outputs == first.outputs
    ec2 = boto3.client("ec2")
    gid = first.outputs["group_id"]
    # Someone opens PostgreSQL to the world: check sees it, apply closes it.
    ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    drift = ctx.check(Ensure(), inputs)
    assert drift.in_sync is False and drift.changes == ["revoke tcp/5432 from 0.0.0.0/0"]
    assert ctx.run(Ensure(), inputs).status == "changed"
    perms = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]["IpPermissions"]
    assert sorted(p["FromPort"] for p in perms) == [22, 80]
    tags = {t["Key"]: t["Value"] for t in
            ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]["Tags"]}
    assert tags == {"elematrix:deployment": ctx.deployment, "elematrix:run": "run-1",
                    "Name": f"elematrix-{ctx.deployment}"}
    assert len(ec2.describe_security_groups(Filters=[
        {"Name": "tag:elematrix:deployment", "Values": [ctx.deployment]}])["SecurityGroups"]) == 1


def test_key_pair_generated_locally_0600_and_replaced_if_the_private_key_is_lost(
        ctx: Any, tmp_path: Path) -> None:
    inputs = {"kind": "key_pair", "name": f"elematrix-{ctx.deployment}",
              "spec": {"public_key_path": str(tmp_path / "absent.pub")}}
    out = ctx.run(Ensure(), inputs).outputs
    key = ctx.deployment_dir / "keys" / "id_ed25519"
    assert out["private_key_path"] == str(key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    # The private key never reaches a log line or a note.
    secret_line = key.read_text().splitlines()[1]
    assert not any(secret_line in line for _, line in ctx.logs)
    assert secret_line not in json.dumps([d for _, d in ctx.notes], default=str)
    assert ctx.run(Ensure(), inputs).status == "ok"
    key.unlink()
    key.with_suffix(".pub").unlink()
    check = ctx.check(Ensure(), inputs)
    assert check.in_sync is False and "gone" in check.changes[0]
    assert ctx.run(Ensure(), inputs).status == "changed"
    assert key.exists()
    kps = boto3.client("ec2").describe_key_pairs(Filters=[
        {"Name": "tag:elematrix:deployment", "Values": [ctx.deployment]}])["KeyPairs"]
    assert [k["KeyName"] for k in kps] == [f"elematrix-{ctx.deployment}"]


def test_key_pair_imports_the_operators_public_key(ctx: Any, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pub = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    path = tmp_path / "id_ed25519.pub"
    path.write_text(pub + " operator@laptop\n")
    out = ctx.run(Ensure(), {"kind": "key_pair", "name": f"elematrix-{ctx.deployment}",
                             "spec": {"public_key_path": str(path)}}).outputs
    assert out["private_key_path"] == "" and out["source"] == str(path)
    assert not (ctx.deployment_dir / "keys").exists()


def test_bucket_gets_every_protection_and_converges(ctx: Any) -> None:
    name = f"elematrix-{ctx.deployment}-123456789012"
    inputs = {"kind": "bucket", "name": name, "spec": {}}
    assert ctx.run(Ensure(), inputs).status == "changed"
    s3 = boto3.client("s3")
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
               .values())
    rule = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"][0]
    # SSE-KMS with the AWS-managed key (no KMSMasterKeyID), the Bucket Key on (FSBP S3.17).
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms"}
    assert rule["BucketKeyEnabled"] is True
    # ACLs disabled (FSBP S3.12).
    assert s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"] == {
        "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    policy = json.loads(s3.get_bucket_policy(Bucket=name)["Policy"])
    st = policy["Statement"][0]
    assert st["Effect"] == "Deny" and st["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    lc = s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"][0]
    assert lc["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    assert ctx.run(Ensure(), inputs).status == "ok"
    s3.delete_bucket_policy(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Suspended"})
    # A bucket of an older run: SSE-S3 and ACLs owned by the writer; both converge.
    s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls={
        "Rules": [{"ObjectOwnership": "ObjectWriter"}]})
    check = ctx.check(Ensure(), inputs)
    assert set(check.changes) == {
        "enable versioning", "bucket policy denying non-TLS access",
        "default encryption SSE-KMS with the AWS-managed key aws/s3",
        "disable ACLs (bucket owner enforced)"}
    ctx.run(Ensure(), inputs)
    assert ctx.check(Ensure(), inputs).in_sync is True
    # A customer-managed key is compared too: naming one is a change.
    keyed = {**inputs, "spec": {"kms_key_id": "alias/backups"}}
    assert ctx.check(Ensure(), keyed).changes == [
        "default encryption SSE-KMS with alias/backups"]


def test_role_and_profile_with_managed_and_scoped_inline_policies(ctx: Any) -> None:
    managed = ["arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy",
               "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]
    role_in = {"kind": "iam_role", "name": f"elematrix-{ctx.deployment}-instance", "spec": {
        "managed_policies": managed,
        "inline_policies": {"backup-bucket": "aws/backup-role-policy.json"},
        "variables": {"bucket_arn": f"arn:aws:s3:::elematrix-{ctx.deployment}-123456789012",
                      "account_id": "123456789012"}}}
    role = ctx.run(Ensure(), role_in).outputs
    prof = ctx.run(Ensure(), {"kind": "instance_profile", "name": f"elematrix-{ctx.deployment}-instance",
                              "spec": {"role_name": role["role_name"]}}).outputs
    iam = boto3.client("iam")
    attached = {p["PolicyArn"] for p in iam.list_attached_role_policies(
        RoleName=role["role_name"])["AttachedPolicies"]}
    assert attached == set(managed)
    doc = iam.get_role_policy(RoleName=role["role_name"], PolicyName="backup-bucket")
    resources = {r for s in doc["PolicyDocument"]["Statement"] for r in
                 ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])}
    assert resources == {f"arn:aws:s3:::elematrix-{ctx.deployment}-123456789012",
                         f"arn:aws:s3:::elematrix-{ctx.deployment}-123456789012/*"}
    trust = iam.get_role(RoleName=role["role_name"])["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    # No aws:SourceAccount condition: EC2 is not documented to send it when an instance
    # assumes its profile's role, and a service that does not is refused by it (docs/posture.md;
    # moto evaluates no trust policy, so only the document can be checked here).
    assert "Condition" not in trust["Statement"][0]
    assert iam.get_instance_profile(InstanceProfileName=prof["profile_name"])[
        "InstanceProfile"]["Roles"][0]["RoleName"] == role["role_name"]
    assert ctx.run(Ensure(), role_in).status == "ok"
    # A role of the release that added the condition: the trust policy converges back.
    iam.update_assume_role_policy(RoleName=role["role_name"], PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Action": "sts:AssumeRole",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Condition": {"StringEquals": {"aws:SourceAccount": "123456789012"}}}]}))
    assert ctx.check(Ensure(), role_in).changes == ["update the trust policy"]
    assert ctx.run(Ensure(), role_in).status == "changed"
    assert ctx.check(Ensure(), role_in).in_sync is True


def test_role_of_someone_else_is_not_adopted(ctx: Any) -> None:
    boto3.client("iam").create_role(RoleName=f"elematrix-{ctx.deployment}-instance",
                                    AssumeRolePolicyDocument="{}")
    with pytest.raises(ActionFailed) as e:
        ctx.run(Ensure(), {"kind": "iam_role", "name": f"elematrix-{ctx.deployment}-instance", "spec": {}})
    assert "not tagged for deployment" in e.value.message


def _launch(ctx: Any, **extra: Any) -> dict[str, Any]:
    pf = _preflight(ctx)
    sg = ctx.run(Ensure(), {"kind": "security_group", "name": f"elematrix-{ctx.deployment}",
                            "spec": {"vpc_id": pf["vpc_id"], "ingress": SG_RULES}}).outputs
    spec = {"image_id": pf["ami_id"], "subnet_id": pf["subnet_id"],
            "security_group_ids": [sg["group_id"]], **extra}
    out = ctx.run(Ensure(), {"kind": "instance", "name": f"elematrix-{ctx.deployment}", "spec": spec}).outputs
    return {**out, "group_id": sg["group_id"], "spec": spec}


def test_instance_properties_and_no_second_launch(ctx: Any) -> None:
    kms = boto3.client("kms").create_key()["KeyMetadata"]["Arn"]
    inst = _launch(ctx, kms_key_id=kms)
    ec2 = boto3.client("ec2")
    i = ec2.describe_instances(InstanceIds=[inst["instance_id"]])["Reservations"][0][
        "Instances"][0]
    assert i["InstanceType"] == "t3.medium"
    assert i["MetadataOptions"]["HttpTokens"] == "required"
    # 1: containers (one hop further, behind the docker bridge) get no instance role.
    assert i["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    vol = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id",
                                         "Values": [inst["instance_id"]]}])["Volumes"][0]
    assert (vol["VolumeType"], vol["Size"], vol["Encrypted"]) == ("gp3", 30, True)
    assert vol["KmsKeyId"] == kms
    ud = ec2.describe_instance_attribute(InstanceId=inst["instance_id"], Attribute="userData")
    import base64

    text = base64.b64decode(ud["UserData"]["Value"]).decode()
    assert text.startswith("#cloud-config") and "docker compose version" in text
    again = ctx.run(Ensure(), {"kind": "instance", "name": f"elematrix-{ctx.deployment}",
                               "spec": inst["spec"]})
    assert again.status == "ok" and again.outputs["instance_id"] == inst["instance_id"]
    assert count_tagged(boto3.Session(), ctx.deployment)["instance"] == 1


def test_eip_allocated_once_and_associated(ctx: Any) -> None:
    inst = _launch(ctx)
    eip = ctx.run(Ensure(), {"kind": "eip", "name": f"elematrix-{ctx.deployment}"}).outputs
    assert ctx.run(Ensure(), {"kind": "eip", "name": f"elematrix-{ctx.deployment}"}).status == "ok"
    assoc_in = {"kind": "eip_association", "name": "x", "spec": {
        "allocation_id": eip["allocation_id"], "instance_id": inst["instance_id"]}}
    assert ctx.run(Ensure(), assoc_in).status == "changed"
    assert ctx.check(Ensure(), assoc_in).in_sync is True
    i = boto3.client("ec2").describe_instances(InstanceIds=[inst["instance_id"]])[
        "Reservations"][0]["Instances"][0]
    assert i["PublicIpAddress"] == eip["public_ip"]


def test_waiters_and_polled_conditions_report_attempts(ctx: Any) -> None:
    inst = _launch(ctx)
    r = ctx.run(Wait(), {"waiter": "instance_running",
                         "params": {"InstanceIds": [inst["instance_id"]]}})
    assert r.outputs["attempts"] == 1
    r = ctx.run(Wait(), {"operation": "describe_instances",
                         "params": {"InstanceIds": [inst["instance_id"]]},
                         "query": "Reservations[0].Instances[0].State.Name",
                         "equals": "running"})
    assert r.outputs["value"] == "running"
    with pytest.raises(ActionFailed) as e:
        ctx.run(Wait(), {"operation": "describe_instances",
                         "params": {"InstanceIds": [inst["instance_id"]]},
                         "query": "Reservations[0].Instances[0].State.Name",
                         "equals": "stopped", "delay": 0.05, "max_wait": 0.2})
    assert "gave up" in e.value.message
    assert ctx.progress_reports and "attempts" in ctx.progress_reports[-1]


HOST_KEYS_CONSOLE = """[   12.3] cloud-init[1234]: Cloud-init v. 22.2.2 running 'modules:final'
ec2: #############################################################
ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----
ec2: 256 SHA256:Hl0TbAq9bQyR3SZJ7mH1XfXYk9T1K8mS1n6lYtXc0aE no comment (ECDSA)
ec2: 256 SHA256:6rJk2QeW+9mO5n1H0b8iQm7uK3VvHqZ1uRr2YVvQJxk no comment (ED25519)
ec2: -----END SSH HOST KEY FINGERPRINTS-----
ec2: #############################################################
"""


# The console text of an AL2023 instance as EC2 returns it: cloud-init's
# write-ssh-key-fingerprints pipes `ssh-keygen -l` through `logger --stderr -t ec2`, and
# util-linux logger puts a syslog header ("<14>" priority, "Mmm dd hh:mm:ss", the day
# space-padded) before every line it copies to the console.
HOST_KEYS_CONSOLE_DATED = """[   24.512031] cloud-init[1712]: Cloud-init v. 22.2.2 running 'modules:final' at Tue, 01 Dec 2026 08:00:00 +0000. Up 24.41 seconds.
<14>Dec  1 08:00:00 ec2:
<14>Dec  1 08:00:00 ec2: #############################################################
<14>Dec  1 08:00:00 ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----
<14>Dec  1 08:00:00 ec2: 256 SHA256:Hl0TbAq9bQyR3SZJ7mH1XfXYk9T1K8mS1n6lYtXc0aE root@ip-172-31-20-7.ec2.internal (ECDSA)
<14>Dec  1 08:00:00 ec2: 256 SHA256:6rJk2QeW+9mO5n1H0b8iQm7uK3VvHqZ1uRr2YVvQJxk root@ip-172-31-20-7.ec2.internal (ED25519)
<14>Dec  1 08:00:00 ec2: -----END SSH HOST KEY FINGERPRINTS-----
<14>Dec  1 08:00:00 ec2: #############################################################
[   24.601277] cloud-init[1712]: Cloud-init v. 22.2.2 finished at Tue, 01 Dec 2026 08:00:00 +0000. Datasource DataSourceEc2.  Up 24.59 seconds
"""


def test_host_key_bits_are_the_key_size_not_the_day_of_the_month() -> None:
    keys = parse_host_keys(HOST_KEYS_CONSOLE_DATED)
    assert keys == [
        {"fingerprint": "SHA256:Hl0TbAq9bQyR3SZJ7mH1XfXYk9T1K8mS1n6lYtXc0aE",
         "type": "ECDSA", "bits": 256},
        {"fingerprint": "SHA256:6rJk2QeW+9mO5n1H0b8iQm7uK3VvHqZ1uRr2YVvQJxk",
         "type": "ED25519", "bits": 256}]
    # Two-digit days too, and the undated "ec2: " form keeps working.
    assert {k["bits"] for k in parse_host_keys(
        HOST_KEYS_CONSOLE_DATED.replace("Dec  1", "Dec 12"))} == {256}
    assert {k["bits"] for k in parse_host_keys(HOST_KEYS_CONSOLE)} == {256}


def test_host_keys_are_parsed_and_pinned_from_the_console(
        ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert [k["type"] for k in parse_host_keys(HOST_KEYS_CONSOLE)] == ["ECDSA", "ED25519"]
    inst = _launch(ctx)
    # moto prints no fingerprints: the step reports an empty list and says so.
    r = ctx.run(Wait(), {"host_keys_of": inst["instance_id"], "max_wait": 0})
    assert r.outputs["fingerprints"] == []
    assert any("no SSH host key fingerprints" in line for _, line in ctx.logs)
    # Patch moto's console output the way EC2 prints it.
    import moto.ec2.responses.general as general

    monkeypatch.setattr(general, "SAMPLE_CONSOLE_OUTPUT", HOST_KEYS_CONSOLE)
    r = ctx.run(Wait(), {"host_keys_of": inst["instance_id"], "max_wait": 0})
    assert r.outputs["fingerprints"] == [
        "SHA256:Hl0TbAq9bQyR3SZJ7mH1XfXYk9T1K8mS1n6lYtXc0aE",
        "SHA256:6rJk2QeW+9mO5n1H0b8iQm7uK3VvHqZ1uRr2YVvQJxk"]
    assert ctx.meta["ssh.host_key_fingerprints"] == r.outputs["fingerprints"]


def test_assert_passes_and_fails_with_the_actual_value(ctx: Any) -> None:
    inst = _launch(ctx)
    check = {"title": "IMDSv2", "service": "ec2", "operation": "describe_instances",
             "params": {"InstanceIds": [inst["instance_id"]]},
             "query": "Reservations[0].Instances[0].MetadataOptions.HttpTokens"}
    assert ctx.run(Assert(), {"checks": [{**check, "equals": "required"}]}).status == "ok"
    with pytest.raises(ActionFailed) as e:
        ctx.run(Assert(), {"checks": [{**check, "equals": "optional"}]})
    assert "got 'required'" in e.value.message
    with pytest.raises(ActionFailed):
        ctx.run(Assert(), {"checks": [{**check, "operation": "terminate_instances",
                                       "equals": 1}]})


# -- errors explained --------------------------------------------------------------------


def test_throttling_is_retried_by_botocore_and_succeeds(ctx: Any, fast_backoff: None) -> None:
    counters: list[list[int]] = []
    ctx.drop_resource("aws.session")
    hook_sessions(lambda s: counters.append(inject(
        s, "before-send.ec2.DescribeVpcs", "RequestLimitExceeded", "Request limit exceeded.",
        status=503, times=2)))
    r = ctx.run(Call(), {"service": "ec2", "operation": "describe_vpcs"})
    assert r.status == "ok" and r.data["Vpcs"]
    assert counters[0] == [2]
    note = _calls(ctx, "describe_vpcs")[0]
    assert note["retries"] == 2
    assert any("retried 2x" in line for _, line in ctx.logs)


def test_throttling_that_never_stops_is_explained(
        ctx: Any, monkeypatch: pytest.MonkeyPatch, fast_backoff: None) -> None:
    monkeypatch.setenv("ELEMATRIX_AWS_MAX_ATTEMPTS", "3")
    ctx.drop_resource("aws.session")
    hook_sessions(lambda s: inject(s, "before-send.ec2.DescribeVpcs", "RequestLimitExceeded",
                                   "Request limit exceeded.", status=503))
    with pytest.raises(ActionFailed) as e:
        ctx.run(Call(), {"service": "ec2", "operation": "describe_vpcs"})
    assert "RequestLimitExceeded" in e.value.message
    assert "retried 2 times" in str(e.value.diagnosis)


@pytest.mark.parametrize("code,status,expect_diag,expect_fix", [
    ("UnauthorizedOperation", 403, "`ec2:RunInstances`", "Grant `ec2:RunInstances`"),
    ("RequestExpired", 400, "expired", "Refresh the credentials"),
    ("AuthFailure", 401, "rejected the credentials", "Refresh the credentials"),
    ("InsufficientInstanceCapacity", 500, "no capacity", "another availability zone"),
    ("VcpuLimitExceeded", 400, "vCPU quota", "Service Quotas"),
])
def test_run_instances_errors_are_explained(ctx: Any, code: str, status: int, expect_diag: str,
                                            expect_fix: str, fast_backoff: None) -> None:
    pf = _preflight(ctx)
    hook_sessions(lambda s: inject(s, "before-send.ec2.RunInstances", code,
                                   "Encoded authorization failure message: abc" if
                                   code == "UnauthorizedOperation" else "injected", status=status))
    ctx.drop_resource("aws.session")
    with pytest.raises(ActionFailed) as e:
        ctx.run(Ensure(), {"kind": "instance", "name": f"elematrix-{ctx.deployment}", "spec": {
            "image_id": pf["ami_id"], "security_group_ids": []}})
    assert code in e.value.message
    assert expect_diag in str(e.value.diagnosis), e.value.diagnosis
    assert expect_fix in str(e.value.fix), e.value.fix


def test_missing_credentials_are_explained(ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
              "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    ctx.drop_resource("aws.session")
    with pytest.raises(ActionFailed) as e:
        ctx.run(Preflight(), {})
    assert "no AWS credentials" in e.value.message and "aws configure" in str(e.value.fix)


# -- account guard -------------------------------------------------------------------------


def _other_account_env(monkeypatch: pytest.MonkeyPatch, account: str) -> None:
    creds = boto3.client("sts").assume_role(RoleArn=f"arn:aws:iam::{account}:role/x",
                                            RoleSessionName="test")["Credentials"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", creds["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", creds["SecretAccessKey"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", creds["SessionToken"])


def test_account_guard_refuses_another_account_unless_retargeted(
        ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _preflight(ctx)
    ctx.close()
    _other_account_env(monkeypatch, "222222222222")
    with pytest.raises(ActionFailed) as e:
        _preflight(ctx)
    assert "account guard" in e.value.message and "222222222222" in e.value.message
    assert "retarget_account=true" in str(e.value.fix)
    ctx.params["retarget_account"] = True
    assert _preflight(ctx)["account_id"] == "222222222222"
    assert ctx.meta["aws.account_id"] == "222222222222"


def test_account_guard_refuses_another_region(ctx: Any) -> None:
    _preflight(ctx)
    ctx.close()
    ctx.params["aws_region"] = "eu-west-1"
    with pytest.raises(ActionFailed) as e:
        _preflight(ctx)
    assert "us-east-1" in e.value.message and "eu-west-1" in e.value.message


def test_expected_account_refuses_outright(ctx: Any) -> None:
    ctx.close()
    ctx.meta.clear()
    ctx.params["expected_account"] = "999999999999"
    with pytest.raises(ActionFailed) as e:
        _preflight(ctx)
    assert "expects 999999999999" in e.value.message
    assert "aws.account_id" not in ctx.meta


# -- harden ----------------------------------------------------------------------------------


def test_session_manager_readiness_is_real_aws_code_moto_cannot_run(ctx: Any) -> None:
    """moto 5.2 does not implement ssm.describe_instance_information: this test can only
    prove that the step makes that exact call and reports the emulator's gap to the
    operator. Whether PingStatus becomes 'Online' is NOT exercised here."""
    inst = _launch(ctx)
    with pytest.raises(ActionFailed) as e:
        ctx.run(Wait(), {"service": "ssm", "operation": "describe_instance_information",
                         "params": {"Filters": [{"Key": "InstanceIds",
                                                 "Values": [inst["instance_id"]]}]},
                         "query": "InstanceInformationList[0].PingStatus",
                         "equals": "Online", "max_wait": 0})
    assert "not implemented by this AWS endpoint" in e.value.message
    assert _calls(ctx, "describe_instance_information")


def test_monitoring_topic_alarms_log_groups_and_agent_config(ctx: Any) -> None:
    inst = _launch(ctx)
    topic = ctx.run(Ensure(), {"kind": "sns_topic", "name": f"elematrix-{ctx.deployment}-alerts",
                               "spec": {"email": "ops@example.org"}}).outputs
    subs = boto3.client("sns").list_subscriptions_by_topic(TopicArn=topic["topic_arn"])
    assert [s["Endpoint"] for s in subs["Subscriptions"]] == ["ops@example.org"]
    alarms_in = {"kind": "alarms", "name": f"elematrix-{ctx.deployment}", "spec": {
        "topic_arn": topic["topic_arn"], "alarms": [
            {"id": "disk", "namespace": "CWAgent", "metric": "disk_used_percent",
             "threshold": 80, "dimensions": {"InstanceId": inst["instance_id"]}},
            {"id": "memory", "namespace": "CWAgent", "metric": "mem_used_percent",
             "threshold": 90, "dimensions": {"InstanceId": inst["instance_id"]}},
            {"id": "status", "metric": "StatusCheckFailed", "threshold": 1,
             "statistic": "Maximum", "comparison": "GreaterThanOrEqualToThreshold"}]}}
    assert ctx.run(Ensure(), alarms_in).status == "changed"
    assert ctx.run(Ensure(), alarms_in).status == "ok"
    got = boto3.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"elematrix-{ctx.deployment}")
    by = {a["AlarmName"]: a for a in got["MetricAlarms"]}
    assert by[f"elematrix-{ctx.deployment}-disk"]["Threshold"] == 80
    assert by[f"elematrix-{ctx.deployment}-memory"]["AlarmActions"] == [topic["topic_arn"]]
    lg = ctx.run(Ensure(), {"kind": "log_groups", "name": f"/elematrix/{ctx.deployment}",
                            "spec": {"names": ["synapse", "nginx"], "retention_days": 14}})
    assert lg.outputs["awslogs"]["synapse"]["options"]["awslogs-group"] == \
        f"/elematrix/{ctx.deployment}/synapse"
    groups = boto3.client("logs").describe_log_groups(logGroupNamePrefix=f"/elematrix/{ctx.deployment}/")
    assert [g["retentionInDays"] for g in groups["logGroups"]] == [14, 14]
    p_in = {"kind": "ssm_parameter", "name": f"AmazonCloudWatch-elematrix-{ctx.deployment}",
            "spec": {"asset": "aws/cloudwatch-agent.json"}}
    ctx.run(Ensure(), p_in)
    value = boto3.client("ssm").get_parameter(Name=f"AmazonCloudWatch-elematrix-{ctx.deployment}")
    cfg = json.loads(value["Parameter"]["Value"])
    assert set(cfg["metrics"]["metrics_collected"]) >= {"mem", "disk"}
    assert ctx.run(Ensure(), p_in).status == "ok"


def test_close_ssh_removes_only_port_22(ctx: Any) -> None:
    inst = _launch(ctx)
    inputs = {"kind": "ingress_absent", "name": "x",
              "spec": {"group_id": inst["group_id"], "port": 22}}
    check = ctx.check(Ensure(), inputs)
    assert check.in_sync is False and check.changes == [
        f"revoke tcp/22 from 203.0.113.5/32 on {inst['group_id']}"]
    assert ctx.run(Ensure(), inputs).status == "changed"
    perms = boto3.client("ec2").describe_security_groups(GroupIds=[inst["group_id"]])[
        "SecurityGroups"][0]["IpPermissions"]
    assert [p["FromPort"] for p in perms] == [80]
    assert ctx.check(Ensure(), inputs).in_sync is True


# -- teardown --------------------------------------------------------------------------------

def _td(ctx: Any) -> dict[str, Any]:
    d = ctx.deployment
    return {"name_prefix": f"elematrix-{d}", "log_group_prefix": f"/elematrix/{d}",
            "ssm_prefix": f"AmazonCloudWatch-elematrix-{d}"}


def test_teardown_lists_then_deletes_everything_and_is_safe_twice(ctx: Any) -> None:
    TD = _td(ctx)
    inst = _launch(ctx)
    ctx.run(Ensure(), {"kind": "eip", "name": f"elematrix-{ctx.deployment}"})
    ctx.run(Ensure(), {"kind": "bucket", "name": f"elematrix-{ctx.deployment}-123456789012", "spec": {}})
    # moto enforces the deny-non-TLS policy on its plain-HTTP mock: lift it to write.
    boto3.client("s3").delete_bucket_policy(Bucket=f"elematrix-{ctx.deployment}-123456789012")
    boto3.client("s3").put_object(Bucket=f"elematrix-{ctx.deployment}-123456789012", Key="b", Body=b"1")
    boto3.client("s3").put_object(Bucket=f"elematrix-{ctx.deployment}-123456789012", Key="b", Body=b"2")
    ctx.run(Ensure(), {"kind": "iam_role", "name": f"elematrix-{ctx.deployment}-instance", "spec": {
        "managed_policies": ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"],
        "variables": {"account_id": "123456789012"}}})
    ctx.run(Ensure(), {"kind": "instance_profile", "name": f"elematrix-{ctx.deployment}-instance",
                       "spec": {"role_name": f"elematrix-{ctx.deployment}-instance"}})
    topic = ctx.run(Ensure(), {"kind": "sns_topic", "name": f"elematrix-{ctx.deployment}-alerts"}).outputs
    ctx.run(Ensure(), {"kind": "alarms", "name": f"elematrix-{ctx.deployment}", "spec": {
        "topic_arn": topic["topic_arn"], "alarms": [{"id": "cpu", "metric": "CPUUtilization",
                                                      "threshold": 85}]}})
    ctx.run(Ensure(), {"kind": "log_groups", "name": f"/elematrix/{ctx.deployment}", "spec": {"names": ["a"]}})
    ctx.run(Ensure(), {"kind": "ssm_parameter", "name": f"AmazonCloudWatch-elematrix-{ctx.deployment}",
                       "spec": {"value": "{}"}})
    # The root volume's snapshot schedule, and a snapshot as DLM leaves it (the volume's
    # tags copied onto it): the policy goes with everything else, the snapshot is a backup.
    dlm_role = ctx.run(Ensure(), {"kind": "iam_role", "name": f"elematrix-{ctx.deployment}-dlm",
                                  "spec": {"trust_policy": "aws/dlm-trust-policy.json"}})
    ctx.run(Ensure(), {"kind": "snapshot_policy", "name": f"elematrix-{ctx.deployment}-root",
                       "spec": {"role_arn": dlm_role.outputs["role_arn"]}})
    vol = boto3.client("ec2").describe_volumes(Filters=[
        {"Name": "attachment.instance-id", "Values": [inst["instance_id"]]}])["Volumes"][0]
    snap = boto3.client("ec2").create_snapshot(VolumeId=vol["VolumeId"], TagSpecifications=[{
        "ResourceType": "snapshot",
        "Tags": [{"Key": "elematrix:deployment", "Value": ctx.deployment}]}])["SnapshotId"]
    # Another deployment's resources must survive.
    other = boto3.client("ec2").create_security_group(
        GroupName=f"elematrix-{ctx.deployment}x", Description="x", TagSpecifications=[{
            "ResourceType": "security-group",
            "Tags": [{"Key": "elematrix:deployment", "Value": f"{ctx.deployment}x"}]}])["GroupId"]
    # The upgrade runbook's pre-upgrade snapshot (its tags, runbooks/upgrade.yaml), and one
    # of another deployment that must survive.
    ec2 = boto3.client("ec2")
    vol = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id",
                                        "Values": [inst["instance_id"]]}])["Volumes"][0]
    snaps = [ec2.create_snapshot(VolumeId=vol["VolumeId"], TagSpecifications=[{
        "ResourceType": "snapshot", "Tags": [{"Key": "elematrix:deployment", "Value": d}]}]
    )["SnapshotId"] for d in (ctx.deployment, f"{ctx.deployment}x")]
    before = count_tagged(boto3.Session(), ctx.deployment)
    assert before["instance"] == before["bucket"] == before["alarm"] == 1
    # Two snapshots of this deployment: DLM's and the upgrade runbook's.
    assert before["dlm_policy"] == 1 and before["snapshot"] == 2 and before["role"] == 2
    listing = ctx.check(Teardown(), {**TD, "dry_run": True})
    assert any(r.startswith(f"keep snapshot {snaps[0]}") for r in listing.outputs["resources"])
    assert f"delete instance {inst['instance_id']}" in listing.outputs["resources"]
    assert any(r.startswith("keep bucket") for r in listing.outputs["resources"])
    assert any(r.startswith(f"keep snapshot {snap}") for r in listing.outputs["resources"])
    assert any(r.startswith("delete dlm policy policy-") for r in listing.outputs["resources"])
    plan = ctx.check(Teardown(), TD)
    assert plan.in_sync is False and not any("bucket" in c for c in plan.changes)
    r = ctx.run(Teardown(), TD)
    assert r.outputs["remaining"] == 0 and r.outputs["kept"]
    left = count_tagged(boto3.Session(), ctx.deployment)
    # The data (the bucket, the disk's snapshots) stays without the typed confirmation.
    assert left["bucket"] == 1 and left["snapshot"] == 2 and sum(left.values()) == 3, left
    r = ctx.run(Teardown(), {**TD, "include_bucket": True})
    assert sorted(r.outputs["deleted"][:2]) == sorted([f"snapshot {snap}",
                                                        f"snapshot {snaps[0]}"])
    assert r.outputs["deleted"][2:] == [f"bucket elematrix-{ctx.deployment}-123456789012"]
    assert sum(count_tagged(boto3.Session(), ctx.deployment).values()) == 0
    assert ctx.check(Teardown(), {**TD, "include_bucket": True}).in_sync is True
    again = ctx.run(Teardown(), {**TD, "include_bucket": True})
    assert again.status == "ok" and again.outputs["deleted"] == []
    assert boto3.client("ec2").describe_security_groups(GroupIds=[other])["SecurityGroups"]
    assert ec2.describe_snapshots(SnapshotIds=[snaps[1]])["Snapshots"]


def test_actions_module_imports_no_sdk() -> None:
    import subprocess
    import sys

    code = ("import sys, elematrix_tui.actions.aws, elematrix_tui.actions.aws_kinds, "
            "elematrix_tui.actions.aws_session, elematrix_tui.actions.aws_teardown; "
            "print([m for m in ('boto3', 'botocore', 'moto') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ})
    assert out.stdout.strip() == "[]"


def test_a_bucket_name_owned_by_another_account_is_explained(ctx: Any) -> None:
    # moto does not enforce cross-account bucket access: AWS answers HeadBucket with 403.
    ctx.drop_resource("aws.session")
    hook_sessions(lambda s: inject(s, "before-send.s3.HeadBucket", "403", "", status=403,
                                   protocol="head"))
    with pytest.raises(ActionFailed) as e:
        ctx.run(Ensure(), {"kind": "bucket", "name": f"elematrix-{ctx.deployment}-x",
                           "spec": {}})
    assert "taken, and not by this account" in e.value.message


def test_generic_kind_finds_by_a_describe_call_and_creates_once(ctx: Any) -> None:
    name = f"elematrix-{ctx.deployment}-lt"
    inputs = {"kind": "generic", "name": name, "spec": {
        "service": "ec2",
        "find": {"operation": "describe_launch_templates",
                 "params": {"Filters": [{"Name": "tag:elematrix:deployment",
                                         "Values": [ctx.deployment]}]},
                 "query": "LaunchTemplates[0]"},
        "create": {"operation": "create_launch_template",
                   "params": {"LaunchTemplateName": name,
                              "LaunchTemplateData": {"InstanceType": "t3.medium"}},
                   "query": "LaunchTemplate"},
        "tag_resource_type": "launch-template"}}
    assert ctx.check(Ensure(), inputs).in_sync is False
    first = ctx.run(Ensure(), inputs)
    assert first.status == "changed"
    again = ctx.run(Ensure(), inputs)
    assert again.status == "ok"
    assert again.outputs["resource"]["LaunchTemplateId"] == \
        first.outputs["resource"]["LaunchTemplateId"]
    lts = boto3.client("ec2").describe_launch_templates(
        LaunchTemplateNames=[name])["LaunchTemplates"]
    assert len(lts) == 1


def test_a_waiter_that_is_not_satisfied_yet_is_polled_then_gives_up(ctx: Any) -> None:
    inst = _launch(ctx)
    # 2 s for attempts 50 ms apart: under a full suite's load one describe call once took
    # longer than the 0.3 s this allowed, and the waiter gave up after one attempt.
    with pytest.raises(ActionFailed) as e:
        ctx.run(Wait(), {"waiter": "instance_stopped",
                         "params": {"InstanceIds": [inst["instance_id"]]},
                         "delay": 0.05, "max_wait": 2.0})
    assert "gave up" in e.value.message
    assert len(ctx.progress_reports) >= 2


def test_a_waiter_in_a_terminal_failure_state_fails_at_once(ctx: Any) -> None:
    inst = _launch(ctx)
    boto3.client("ec2").terminate_instances(InstanceIds=[inst["instance_id"]])
    with pytest.raises(ActionFailed) as e:
        ctx.run(Wait(), {"waiter": "instance_running",
                         "params": {"InstanceIds": [inst["instance_id"]]},
                         "delay": 0.05, "max_wait": 30})
    assert "cannot succeed" in str(e.value.diagnosis)


def test_polling_tolerates_not_yet_errors_and_stops_on_final_values(ctx: Any) -> None:
    inst = _launch(ctx)
    with pytest.raises(ActionFailed) as e:
        ctx.run(Wait(), {"service": "ssm", "operation": "get_command_invocation",
                         "params": {"CommandId": "00000000-0000-0000-0000-000000000000",
                                    "InstanceId": inst["instance_id"]},
                         "query": "Status", "equals": "Success",
                         # AWS says InvocationDoesNotExist for a moment after send_command;
                         # moto says InvalidCommandId for an unknown id: same mechanism.
                         "retry_errors": ["InvalidCommandId"],
                         "delay": 0.05, "max_wait": 0.3})
    assert "gave up" in e.value.message and "InvalidCommandId" in e.value.message
    with pytest.raises(ActionFailed) as e:
        ctx.run(Wait(), {"operation": "describe_instances",
                         "params": {"InstanceIds": [inst["instance_id"]]},
                         "query": "Reservations[0].Instances[0].State.Name",
                         "equals": "stopped", "fail_values": ["running"], "max_wait": 60})
    assert "is final" in str(e.value.diagnosis)


def test_logs_flowing_needs_a_stream_with_events_in_every_group(ctx: Any) -> None:
    """Issue 12: the hardened gate checked only retention, so groups nothing wrote to
    passed. aws.logs_flowing passes only when every group has a stream with events."""
    from elematrix_tui.actions.aws_logs import LogsFlowing
    from elematrix_tui.stack.values import LOGGED_SERVICES, log_group_name

    prefix = f"/elematrix/{ctx.deployment}"
    ctx.run(Ensure(), {"kind": "log_groups", "name": prefix, "spec": {"retention_days": 7}})
    groups = [log_group_name(prefix, s) for s in LOGGED_SERVICES]
    logs = boto3.client("logs")
    assert sorted(g["logGroupName"] for g in logs.describe_log_groups(
        logGroupNamePrefix=prefix + "/")["logGroups"]) == sorted(groups)
    inputs = {"log_groups": groups, "max_wait": 0, "delay": 0.1}
    with pytest.raises(ActionFailed) as e:
        ctx.run(LogsFlowing(), inputs)
    assert "4 of 4" in e.value.message and "no log stream" in e.value.message
    # What the awslogs driver does for each container: a stream, then PutLogEvents.
    for g in groups[:3]:
        logs.create_log_stream(logGroupName=g, logStreamName="elematrix-x-1")
        logs.put_log_events(logGroupName=g, logStreamName="elematrix-x-1", logEvents=[
            {"timestamp": int(time.time() * 1000), "message": "started"}])
    logs.create_log_stream(logGroupName=groups[3], logStreamName="elematrix-nginx-1")
    with pytest.raises(ActionFailed) as e:
        ctx.run(LogsFlowing(), inputs)
    assert e.value.message.count("/elematrix/") == 1 and groups[3] in e.value.message
    assert "streams elematrix-nginx-1 but no events" in e.value.message
    logs.put_log_events(logGroupName=groups[3], logStreamName="elematrix-nginx-1", logEvents=[
        {"timestamp": int(time.time() * 1000), "message": "GET /"}])
    r = ctx.run(LogsFlowing(), inputs)
    assert r.status == "ok" and r.outputs["events"] == {g: 1 for g in groups}
    # A group that does not exist is named, with the step that creates it.
    with pytest.raises(ActionFailed) as e:
        ctx.run(LogsFlowing(), {**inputs, "log_groups": [f"{prefix}/containers"]})
    assert "does not exist" in e.value.message


# -- the restore drill's server-side copy ----------------------------------------------------

def test_copy_backup_copies_the_latest_complete_backup_under_this_deployments_prefix(
        ctx: Any) -> None:
    """The drill's backup reaches the drill's bucket bucket-to-bucket, with its stamp (the
    RPO) kept; an incomplete backup is never chosen, a named one not complete is refused."""
    from elematrix_tui.actions.backup_copy import BACKUP_PARTS, CopyBackup

    s3 = boto3.client("s3")
    src, dst = f"src-{ctx.deployment}", f"dst-{ctx.deployment}"
    for b in (src, dst):
        s3.create_bucket(Bucket=b)
    for stamp, parts in (("20261201T010000Z", BACKUP_PARTS),
                         ("20261201T020000Z", BACKUP_PARTS),
                         ("20261201T030000Z", BACKUP_PARTS[:3])):  # media never arrived
        for part in parts:
            s3.put_object(Bucket=src, Key=f"prod/{stamp}/{part}", Body=f"{stamp}{part}".encode())
    s3.put_object(Bucket=src, Key="other/20261201T040000Z/signing.key", Body=b"x")
    inputs = {"source_bucket": src, "source_deployment": "prod", "bucket": dst,
              "deployment": "prod-drill"}
    assert ctx.check(CopyBackup(), inputs).in_sync is False
    r = ctx.run(CopyBackup(), inputs)
    assert r.status == "changed", r
    assert r.outputs["source_prefix"] == "prod/20261201T020000Z"
    assert r.outputs["prefix"] == "prod-drill/20261201T020000Z"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=dst)["Contents"])
    assert keys == sorted(f"prod-drill/20261201T020000Z/{p}" for p in BACKUP_PARTS)
    body = s3.get_object(Bucket=dst, Key="prod-drill/20261201T020000Z/signing.key")["Body"]
    assert body.read() == b"20261201T020000Zsigning.key"
    again = ctx.check(CopyBackup(), inputs)
    assert again.in_sync is True and again.outputs["prefix"] == "prod-drill/20261201T020000Z"
    older = ctx.run(CopyBackup(), {**inputs, "backup": "20261201T010000Z"})
    assert older.outputs["prefix"] == "prod-drill/20261201T010000Z"
    with pytest.raises(ActionFailed, match="not a complete backup of prod") as e:
        ctx.run(CopyBackup(), {**inputs, "backup": "prod/20261201T030000Z"})
    assert "prod/20261201T010000Z" in (e.value.diagnosis or "")
    with pytest.raises(ActionFailed, match="same bucket"):
        ctx.run(CopyBackup(), {**inputs, "bucket": src})
