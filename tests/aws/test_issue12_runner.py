"""Issue 12 through the runner and the moto server: ports from the parameters, the
posture gates that prove hop limit 1, backup expiry and the alarms, and a new ClientToken
per launch attempt.

The harden phase needs moto's missing Session Manager call; the patch is the one of
``test_harden_runner.py`` (its docstring says what it does and does not prove).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest

from .helpers import count_tagged, hook_sessions, inject
from .test_cli import _Endpoint, _EndpointSession, cli_env, infra
from .test_harden_runner import RUNBOOKS, _failures, _runner, moto_with_ssm_online

__all__ = ["cli_env", "moto_with_ssm_online"]  # fixtures, used by name below
CIDR = "203.0.113.5/32"


def test_infra_and_harden_open_http_port_and_ssh_port_and_gates_prove_the_posture(
        moto_with_ssm_online: None, tmp_path: Path) -> None:
    from elematrix_tui.actions import default_registry
    from elematrix_tui.engine.loader import load_runbook

    rb = load_runbook(RUNBOOKS / "poc-ec2.yaml", default_registry())
    rb = rb.model_copy(update={"phases": [p for p in rb.phases if p.id in ("infra", "harden")]})
    # backup_retention_days stays at its default (30).
    # container_logs=local: harden's awslogs re-render needs configure's outputs, and this
    # test is about ports and posture (test_harden_runner covers the re-render).
    params = {"operator_cidr": CIDR, "host_key_wait": 0, "http_port": 8080, "ssh_port": 2222,
              "allocate_eip": False, "container_logs": "local"}
    events: list[Any] = []
    assert _runner(rb, tmp_path, params, ["infra"], events).run() == 0, _failures(events)
    gate = [e for e in events if getattr(e, "step_id", "") == "posture"
            and getattr(e, "status", None) == "ok"]
    assert gate, "the posture gate did not pass"

    ec2 = boto3.client("ec2")
    sg = ec2.describe_security_groups(Filters=[
        {"Name": "tag:elematrix:deployment", "Values": ["hard"]}])["SecurityGroups"][0]
    assert sorted((p["FromPort"], [r["CidrIp"] for r in p["IpRanges"]])
                  for p in sg["IpPermissions"]) == [(2222, [CIDR]), (8080, ["0.0.0.0/0"])]
    inst = ec2.describe_instances(Filters=[
        {"Name": "tag:elematrix:deployment", "Values": ["hard"]}])["Reservations"][0][
        "Instances"][0]
    assert inst["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert inst.get("PublicIpAddress"), "no public IPv4 without the Elastic IP"
    bucket = next(b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]
                  if b["Name"].startswith("elematrix-hard-"))
    rules = {r["ID"]: r for r in boto3.client("s3").get_bucket_lifecycle_configuration(
        Bucket=bucket)["Rules"]}
    assert rules["expire-backups"]["Expiration"] == {"Days": 30}
    assert rules["expire-backups"]["Filter"]["Prefix"] == "hard/"
    attached = {p["PolicyArn"] for p in boto3.client("iam").list_attached_role_policies(
        RoleName="elematrix-hard-instance")["AttachedPolicies"]}
    assert attached == {"arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy",
                        "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"}

    events.clear()
    assert _runner(rb, tmp_path, params, ["harden"], events).run() == 0, _failures(events)
    sg = ec2.describe_security_groups(GroupIds=[sg["GroupId"]])["SecurityGroups"][0]
    assert [p["FromPort"] for p in sg["IpPermissions"]] == [8080]
    alarms = boto3.client("cloudwatch").describe_alarms(
        AlarmNamePrefix="elematrix-hard-")["MetricAlarms"]
    assert {a["AlarmName"]: a["TreatMissingData"] for a in alarms} == {
        "elematrix-hard-disk": "breaching", "elematrix-hard-memory": "breaching",
        "elematrix-hard-cpu": "missing", "elematrix-hard-status": "breaching"}
    assert {a["Dimensions"][0]["Value"] for a in alarms} == {inst["InstanceId"]}


def test_the_posture_gate_fails_on_hop_limit_2_and_on_a_missing_backup_expiry(
        moto_with_ssm_online: None, tmp_path: Path) -> None:
    """The shipped gate's checks, rendered as the runner renders them, against resources
    that drifted behind the runbook's back (a re-run would converge them first)."""
    import yaml

    from elematrix_tui.actions import default_registry
    from elematrix_tui.actions.aws import Assert
    from elematrix_tui.engine.action import ActionFailed
    from elematrix_tui.engine.expressions import render_value
    from elematrix_tui.engine.loader import load_runbook
    from elematrix_tui.engine.standalone import StandaloneContext

    rb = load_runbook(RUNBOOKS / "poc-ec2.yaml", default_registry())
    rb = rb.model_copy(update={"phases": [p for p in rb.phases if p.id == "infra"]})
    params = {"operator_cidr": CIDR, "host_key_wait": 0, "http_port": 80, "ssh_port": 22,
              "backup_retention_days": 30, "backup_encryption": "aws:kms"}
    events: list[Any] = []
    assert _runner(rb, tmp_path, params, ["infra"], events).run() == 0, _failures(events)
    ec2, s3 = boto3.client("ec2"), boto3.client("s3")
    inst = ec2.describe_instances(Filters=[
        {"Name": "tag:elematrix:deployment", "Values": ["hard"]}])["Reservations"][0][
        "Instances"][0]
    bucket = next(b["Name"] for b in s3.list_buckets()["Buckets"]
                  if b["Name"].startswith("elematrix-hard-"))
    raw = yaml.safe_load((RUNBOOKS / "poc-ec2.yaml").read_text())
    infra = next(p for p in raw["phases"] if p["id"] == "infra")
    gate = next(g for g in infra["gates"] if g["id"] == "posture")
    variables = {"params": params, "deployment": "hard", "steps": {
        "security_group": {"group_id": inst["SecurityGroups"][0]["GroupId"]
                           if inst.get("SecurityGroups") else
                           inst["NetworkInterfaces"][0]["Groups"][0]["GroupId"]},
        "instance": {"instance_id": inst["InstanceId"]},
        "backup_bucket": {"bucket": bucket},
        "instance_role": {"role_name": "elematrix-hard-instance"},
        "preflight": {"account_id": boto3.client("sts").get_caller_identity()["Account"]}}}
    checks = render_value(gate["with"]["checks"], variables)
    ctx = StandaloneContext(deployment_dir=tmp_path / "g", deployment="hard", params=params)
    (tmp_path / "g").mkdir()
    try:
        assert ctx.run(Assert(), {"checks": checks}).outputs["failed"] == 0
        ec2.modify_instance_metadata_options(InstanceId=inst["InstanceId"],
                                             HttpPutResponseHopLimit=2, HttpTokens="required")
        rules = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={
            "Rules": [r for r in rules if r["ID"] != "expire-backups"]})
        with pytest.raises(ActionFailed) as e:
            ctx.run(Assert(), {"checks": checks})
        assert "hop limit 1" in e.value.message and "got ['required', 2]" in e.value.message
        assert "backups under hard/ expire after 30 days: got None" in e.value.message
    finally:
        ctx.close()


def test_a_launch_retry_after_the_profile_error_uses_a_new_client_token(
        moto_server: str, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """Against the moto server: in-process moto is itself a before-send handler and would
    still execute the "failed" request (measured), so the injected failure must stop the
    request before it leaves botocore, as an AWS-side refusal does. moto ignores
    ClientToken (FACTS.md), so what is proved is what was sent: attempt 1 and attempt 2
    carry different tokens, each the deterministic one of (run id, attempt)."""
    from elematrix_tui.actions.aws import Ensure, Preflight
    from elematrix_tui.engine.action import ActionFailed
    from elematrix_tui.engine.standalone import StandaloneContext

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("HOME", str(tmp_path))
    tokens: list[str | None] = []

    def setup(session: Any) -> None:
        inject(session, "before-send.ec2.RunInstances", "InvalidParameterValue",
               "Value (elematrix-tok-instance) for parameter iamInstanceProfile.name is "
               "invalid. Invalid IAM Instance Profile name", times=1)
        session.events.register("provide-client-params.ec2.RunInstances",
                                lambda params, **_: tokens.append(params.get("ClientToken")),
                                unique_id="record-token")

    hook_sessions(setup)
    ctx = StandaloneContext(deployment_dir=tmp_path / "dep", deployment="tok", run_id="run-7",
                            params={"operator_cidr": CIDR})
    ctx.deployment_dir.mkdir()
    try:
        pf = ctx.run(Preflight(), {}).outputs
        sg = ctx.run(Ensure(), {"kind": "security_group", "name": "elematrix-tok", "spec": {
            "vpc_id": pf["vpc_id"], "ingress": [{"port": 80, "cidrs": ["0.0.0.0/0"]}]}})
        inputs = {"kind": "instance", "name": "elematrix-tok", "spec": {
            "image_id": pf["ami_id"], "subnet_id": pf["subnet_id"],
            "security_group_ids": [sg.outputs["group_id"]]}}
        with pytest.raises(ActionFailed) as e:
            ctx.run(Ensure(), inputs)
        assert "not visible to EC2 yet" in e.value.message
        ctx.attempt = 2  # the runner's next attempt of the same step
        out = ctx.run(Ensure(), inputs).outputs
        assert len(tokens) == 2 and tokens[0] != tokens[1], tokens
        from elematrix_tui.actions.aws_kinds import launch_token

        second = launch_token(ctx, "elematrix-tok")
        ctx.attempt = 1
        first = launch_token(ctx, "elematrix-tok")
        assert tokens == [first, second]
        ctx.attempt = 2
        # Deterministic: a crash-resume computes the same token, but finds by tag first.
        assert launch_token(ctx, "elematrix-tok") == second
        ctx.attempt = 3
        again = ctx.run(Ensure(), inputs)
        assert again.status == "ok" and again.outputs["instance_id"] == out["instance_id"]
        assert len(tokens) == 2
    finally:
        ctx.close()


def test_the_real_command_refuses_a_private_subnet_and_creates_nothing(
        cli_env: dict[str, str]) -> None:
    """The operator's view (real ``elematrix`` against the moto server): a subnet whose
    route table has no internet gateway stops the preflight, located at the parameter, no
    traceback, and nothing tagged with the deployment exists afterwards; a malformed id is
    refused before anything runs (exit 2)."""
    env = cli_env
    ec2 = _Endpoint(env).client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.77.0.0/16")["Vpc"]["VpcId"]
    azs = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.77.1.0/24",
                               AvailabilityZone=azs[0])["Subnet"]["SubnetId"]
    r = infra(env, "priv", "--set", f"subnet_id={subnet}")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert f"parameter subnet_id: subnet {subnet} (VPC {vpc}) has no route to an internet " \
           "gateway" in out
    assert "Traceback" not in out
    assert sum(count_tagged(_EndpointSession(_Endpoint(env)), "priv").values()) == 0
    r = infra(env, "priv2", "--set", "subnet_id=not-a-subnet")
    assert r.returncode == 2 and "subnet_id" in r.stdout + r.stderr
