"""The infra phase and the teardown runbook through the real ``elematrix`` command, against a
moto server on 127.0.0.1 (``AWS_ENDPOINT_URL``), plus throttling through the real runner."""

from __future__ import annotations

import base64
import json
import os
import random
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.practice_dlm import ENV_ENDPOINT as DLM_ENDPOINT
from tests.support.moto_session import endpoint_for

from .conftest import FAKE_ENV
from .helpers import INFRA_SET, count_all, count_tagged

ELEMATRIX = str(Path(sys.executable).parent / "elematrix")
RUNBOOKS = runbooks_dir()
CIDR = "203.0.113.5/32"
# The log line every AWS call prints (actions/aws_session.py): "aws ec2.run_instances -> ...".
AWS_CALL_LINE = re.compile(r"\baws [a-z0-9-]+\.[a-z_]+ -> ")


@pytest.fixture
def cli_env(moto_server: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") or k == DLM_ENDPOINT}
    env.update(FAKE_ENV)
    env.update({
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "ELEMATRIX_STATE_DIR": str(tmp_path / "state"),
        # No ~/.ssh/id_ed25519.pub: the runbook generates the key pair.
        "HOME": str(tmp_path / "home"),
        "PYTHONUNBUFFERED": "1",
    })
    (tmp_path / "home").mkdir()
    return env


def _session(env: dict[str, str]) -> Any:
    return boto3.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                         aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                         aws_session_token=env.get("AWS_SESSION_TOKEN"),
                         region_name="us-east-1")


class _Endpoint:
    """boto3 clients of the test itself, pointed at the same moto server."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.session = _session(env)

    def client(self, service: str) -> Any:
        # DLM is the stand-in beside moto (tests/conftest.py), as for the CLI.
        return self.session.client(service, endpoint_url=endpoint_for(
            service, self.env["AWS_ENDPOINT_URL"], self.env))


def elematrix(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ELEMATRIX, *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def infra(env: dict[str, str], dep: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return elematrix(env, "run", str(RUNBOOKS / "poc-ec2.yaml"), "--phase", "infra", "--yes",
                     "--deployment", dep, "--set", f"operator_cidr={CIDR}",
                     "--set", "host_key_wait=0", *extra)


def step_results(stdout: str) -> dict[str, str]:
    """The summary table: step id -> result."""
    out = {}
    for line in stdout.splitlines():
        m = re.match(r"^(infra|teardown)\s+(\w+)\s+(ok|changed|failed|skipped|interrupted)\s",
                     line)
        if m:
            out[m.group(2)] = m.group(3)
    return out


def test_infra_creates_exactly_the_resources_and_a_second_run_creates_nothing(
        cli_env: dict[str, str]) -> None:
    dep = "cli-infra"
    aws = _Endpoint(cli_env)
    before = count_all(_EndpointSession(aws))
    r = infra(cli_env, dep)
    assert r.returncode == 0, r.stdout + r.stderr
    counts = count_tagged(_EndpointSession(aws), dep)
    assert counts == INFRA_SET, counts
    # Exactly these, tagged or not: nothing untagged was created on the side.
    after = count_all(_EndpointSession(aws))
    assert {k: after[k] - before[k] for k in after} == {k: INFRA_SET[k] for k in after}
    ec2, s3, iam = aws.client("ec2"), aws.client("s3"), aws.client("iam")
    flt = [{"Name": "tag:elematrix:deployment", "Values": [dep]}]

    sg = ec2.describe_security_groups(Filters=flt)["SecurityGroups"][0]
    rules = sorted((p["FromPort"], tuple(x["CidrIp"] for x in p["IpRanges"]),
                    tuple(x["CidrIpv6"] for x in p["Ipv6Ranges"])) for p in sg["IpPermissions"])
    assert rules == [(22, (CIDR,), ()), (80, ("0.0.0.0/0",), ("::/0",))]

    inst = ec2.describe_instances(Filters=[*flt, {"Name": "instance-state-name",
                                                  "Values": ["running"]}])[
        "Reservations"][0]["Instances"][0]
    ami = aws.client("ssm").get_parameter(
        Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
    )["Parameter"]["Value"]
    assert inst["ImageId"] == ami and inst["InstanceType"] == "t3.medium"
    assert inst["MetadataOptions"]["HttpTokens"] == "required"
    assert inst["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert inst["KeyName"] == f"elematrix-{dep}"
    assert inst["IamInstanceProfile"]["Arn"].endswith(f"instance-profile/elematrix-{dep}-instance")
    # The groups sit on the interface the launch specifies (public IPv4 explicit); moto
    # leaves the instance's own SecurityGroups empty for such a launch, AWS mirrors them.
    assert [g["GroupId"] for g in inst["NetworkInterfaces"][0]["Groups"]] == [sg["GroupId"]]
    assert inst.get("PublicIpAddress")
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags["elematrix:deployment"] == dep and tags["elematrix:run"].startswith("20")
    vol = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id",
                                         "Values": [inst["InstanceId"]]}])["Volumes"][0]
    assert (vol["VolumeType"], vol["Size"], vol["Encrypted"]) == ("gp3", 30, True)
    ud = ec2.describe_instance_attribute(InstanceId=inst["InstanceId"], Attribute="userData")
    assert base64.b64decode(ud["UserData"]["Value"]).startswith(b"#cloud-config")

    eip = ec2.describe_addresses(Filters=flt)["Addresses"][0]
    assert eip["InstanceId"] == inst["InstanceId"]
    assert "public_ip" not in r.stderr
    bucket = f"elematrix-{dep}-123456789012"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=bucket)[
        "PublicAccessBlockConfiguration"].values())
    assert s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert "aws:SecureTransport" in s3.get_bucket_policy(Bucket=bucket)["Policy"]
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    role = f"elematrix-{dep}-instance"
    assert {p["PolicyArn"].rsplit("/", 1)[1] for p in iam.list_attached_role_policies(
        RoleName=role)["AttachedPolicies"]} == {"CloudWatchAgentServerPolicy",
                                                "AmazonSSMManagedInstanceCore"}
    inline = iam.get_role_policy(RoleName=role, PolicyName="backup-bucket")["PolicyDocument"]
    assert f"arn:aws:s3:::{bucket}" in json.dumps(inline)
    # The root volume's snapshot schedule: DLM's role, and one policy on the deployment tag.
    dlm_role = iam.get_role(RoleName=f"elematrix-{dep}-dlm")["Role"]
    assert dlm_role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {
        "Service": "dlm.amazonaws.com"}
    assert [p["PolicyArn"] for p in iam.list_attached_role_policies(
        RoleName=f"elematrix-{dep}-dlm")["AttachedPolicies"]] == [
        "arn:aws:iam::aws:policy/service-role/AWSDataLifecycleManagerServiceRole"]
    assert {t["Key"] for t in vol.get("Tags", [])} >= {"elematrix:deployment"}
    dlm = aws.client("dlm")
    [summary] = [p for p in dlm.get_lifecycle_policies()["Policies"]
                 if p["Tags"].get("elematrix:deployment") == dep]
    policy = dlm.get_lifecycle_policy(PolicyId=summary["PolicyId"])["Policy"]
    assert (policy["State"], policy["ExecutionRoleArn"]) == ("ENABLED", dlm_role["Arn"])
    details = policy["PolicyDetails"]
    assert details["TargetTags"] == [{"Key": "elematrix:deployment", "Value": dep}]
    assert details["ResourceTypes"] == ["VOLUME"]
    assert (details["Schedules"][0]["CreateRule"], details["Schedules"][0]["RetainRule"]) == (
        {"Interval": 24, "IntervalUnit": "HOURS", "Times": ["03:00"]}, {"Count": 7})
    key = Path(cli_env["ELEMATRIX_STATE_DIR"]) / "deployments" / dep / "keys" / "id_ed25519"
    assert key.stat().st_mode & 0o777 == 0o600
    assert "estimated cost ~USD" in r.stdout and "price table of 2026-11-27" in r.stdout
    assert ami in r.stdout

    again = infra(cli_env, dep)
    assert again.returncode == 0, again.stdout + again.stderr
    results = step_results(again.stdout)
    assert results and "changed" not in results.values(), results
    assert count_tagged(_EndpointSession(aws), dep) == INFRA_SET
    assert count_all(_EndpointSession(aws)) == after


class _EndpointSession:
    """Adapter so count_tagged's ``session.client(name)`` hits the moto server."""

    def __init__(self, aws: _Endpoint) -> None:
        self.aws = aws

    def client(self, service: str) -> Any:
        return self.aws.client(service)


def killed_after(env: dict[str, str], args: list[str], point: int) -> bool:
    """Run ``elematrix <args>``; SIGKILL it right after its ``point``-th AWS call. False:
    it ended first."""
    proc = subprocess.Popen([ELEMATRIX, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:
        if AWS_CALL_LINE.search(line):
            seen += 1
            if seen >= point:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait(timeout=300)
    proc.stdout.close()
    return proc.returncode == -signal.SIGKILL


def _kill_then_resume(env: dict[str, str], dep: str, point: int) -> tuple[bool, Any]:
    """Run infra, SIGKILL it right after its ``point``-th AWS call, then resume it."""
    killed = killed_after(env, ["run", str(RUNBOOKS / "poc-ec2.yaml"), "--phase", "infra",
                                "--yes", "--deployment", dep, "--set", f"operator_cidr={CIDR}",
                                "--set", "host_key_wait=0"], point)
    return killed, elematrix(env, "resume", "--deployment", dep, "--yes")


def test_snapshot_schedule_off_creates_no_dlm_role_or_policy_and_the_plan_accepts_it(
        cli_env: dict[str, str]) -> None:
    dep = "cli-nosnap"
    aws = _Endpoint(cli_env)
    r = infra(cli_env, dep, "--set", "snapshot_schedule=false", "--set", "snapshot_retain=3")
    assert r.returncode == 0, r.stdout + r.stderr
    results = step_results(r.stdout)
    assert (results["snapshot_role"], results["snapshots"]) == ("skipped", "skipped"), results
    assert results["snapshot_schedule"] == "skipped"
    counts = count_tagged(_EndpointSession(aws), dep)
    assert counts == {**INFRA_SET, "role": 1, "dlm_policy": 0}, counts
    plan = elematrix(cli_env, "plan", str(RUNBOOKS / "poc-ec2.yaml"), "--deployment", dep,
                     "--phase", "infra", "--json")
    infra_plan = json.loads(plan.stdout)["phases"][0]
    snap = "PROWLER.dlm_ebs_snapshot_lifecycle_policy_exists"
    assert not any(x.startswith(snap) for x in infra_plan["satisfies"]), infra_plan
    assert any(x.startswith(snap) and "snapshot_schedule is off" in x
               for x in infra_plan["accepts"]), infra_plan["accepts"]
    # A DLM rule in the parameter: refused before anything is written (exit 2).
    bad = infra(cli_env, "cli-badsnap", "--set", "snapshot_time=3:00")
    assert bad.returncode == 2 and "snapshot_time" in bad.stderr, bad.stderr


def test_kill_9_at_ten_random_points_then_resume_leaves_one_set(
        cli_env: dict[str, str]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = random.Random(20261127)
    aws = _Endpoint(cli_env)
    # The infra phase makes ~45 logged AWS calls; kill after a random one of the first 40.
    points = sorted(rng.sample(range(1, 41), 10))
    before = count_all(_EndpointSession(aws))
    # Three deployments at a time (separate deployments never share state); the kill
    # points are counted in AWS calls, so the parallelism does not move them.
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda a: _kill_then_resume(cli_env, *a),
                                [(f"kill-{n}", point) for n, point in enumerate(points)]))
    for n, (point, (killed, r)) in enumerate(zip(points, results, strict=True)):
        dep = f"kill-{n}"
        assert killed, f"the run of {dep} ended before call {point}"
        assert r.returncode == 0, f"kill after call {point}:\n{r.stdout}\n{r.stderr}"
        counts = count_tagged(_EndpointSession(aws), dep)
        assert counts == INFRA_SET, f"kill after call {point}: {counts}"
        key = Path(cli_env["ELEMATRIX_STATE_DIR"]) / "deployments" / dep / "keys" / "id_ed25519"
        assert key.exists(), f"kill after call {point}: the private key is missing"
    # No orphans, tagged or not: exactly ten sets more than before.
    after = count_all(_EndpointSession(aws))
    assert {k: after[k] - before[k] for k in after} == {
        k: INFRA_SET[k] * len(points) for k in after}


def test_auth_failure_stops_with_an_operator_message_and_exit_1(
        cli_env: dict[str, str], tmp_path: Path) -> None:
    # A moto server that authenticates every request (unknown keys are refused).
    code = ("import sys, time\n"
            "from moto.server import ThreadedMotoServer\n"
            "s = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)\n"
            "s.start()\n"
            "print('PORT', s.get_host_and_port()[1], flush=True)\n"
            "sys.stdin.read()\n")
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    server = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = ""
        while not line.startswith("PORT"):
            line = server.stdout.readline()
            assert line, "the auth-checking moto server did not start"
        port = int(line.split()[1])
        bad = {**cli_env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
               "AWS_ACCESS_KEY_ID": "AKIAREVOKEDKEY000001", "AWS_SECRET_ACCESS_KEY": "nope"}
        bad.pop("AWS_SESSION_TOKEN", None)
        bad.pop("AWS_SECURITY_TOKEN", None)
        r = infra(bad, "auth-fail")
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout + r.stderr
    assert "InvalidClientTokenId" in out
    assert "AWS rejected the credentials" in out
    assert "Refresh the credentials" in out
    assert "Traceback" not in out


def test_account_guard_refuses_a_second_account(cli_env: dict[str, str]) -> None:
    dep = "guard"
    r = elematrix(cli_env, "run", str(RUNBOOKS / "poc-ec2.yaml"), "--phase", "infra", "--yes",
                  "--deployment", dep, "--set", f"operator_cidr={CIDR}",
                  "--set", "host_key_wait=0")
    assert r.returncode == 0, r.stdout + r.stderr
    creds = _Endpoint(cli_env).client("sts").assume_role(
        RoleArn="arn:aws:iam::222222222222:role/other", RoleSessionName="guard")["Credentials"]
    other = {**cli_env, "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
             "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
             "AWS_SESSION_TOKEN": creds["SessionToken"]}
    r = infra(other, dep)
    assert r.returncode == 1
    assert "account guard" in r.stdout + r.stderr
    assert "123456789012" in r.stdout and "222222222222" in r.stdout
    # Nothing was created in the other account.
    assert count_tagged(_EndpointSession(_Endpoint(other)), dep)["instance"] == 0
    # expected_account refuses outright, even on the deployment's own account.
    r = infra(cli_env, dep, "--set", "expected_account=999999999999")
    assert r.returncode == 1 and "expects 999999999999" in r.stdout


def test_teardown_leaves_zero_tagged_resources_and_is_safe_twice(
        cli_env: dict[str, str]) -> None:
    dep = "down"
    assert infra(cli_env, dep).returncode == 0
    aws = _EndpointSession(_Endpoint(cli_env))
    assert count_tagged(aws, dep) == INFRA_SET
    # Without the typed confirmation the bucket (backups) stays.
    r = elematrix(cli_env, "run", "teardown", "--yes", "--deployment", dep)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "keep bucket" in r.stdout
    left = count_tagged(aws, dep)
    assert left["bucket"] == 1 and sum(left.values()) == 1
    for _ in range(2):
        r = elematrix(cli_env, "run", "teardown", "--yes", "--deployment", dep,
                      "--set", f"confirm_deployment={dep}")
        assert r.returncode == 0, r.stdout + r.stderr
        assert sum(count_tagged(aws, dep).values()) == 0


def test_moto_server_is_loopback_only(moto_server: str) -> None:
    assert moto_server.startswith("http://127.0.0.1:")
