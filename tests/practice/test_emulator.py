"""The practice emulator keeps its state in the deployment: a restart brings back the same
resources with the same ids (moto's recorder replayed into a server seeded the same way)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import json, sys, boto3
from pathlib import Path
from elematrix_tui.practice import Emulator
emu = Emulator(Path(sys.argv[1])).start()
assert emu.url.startswith("http://127.0.0.1:"), emu.url
env = emu.environ()
kw = dict(region_name=env["AWS_REGION"], aws_access_key_id="x", aws_secret_access_key="x")
ec2 = boto3.client("ec2", **kw, endpoint_url=env["AWS_ENDPOINT_URL"])
if sys.argv[2] == "create":
    sg = ec2.create_security_group(GroupName="practice", Description="p")["GroupId"]
    ami = boto3.client("ssm", **kw, endpoint_url=env["AWS_ENDPOINT_URL"]).get_parameter(
        Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")
    ec2.run_instances(ImageId=ami["Parameter"]["Value"], MinCount=1, MaxCount=1,
                      InstanceType="t3.medium")
    ec2.allocate_address(Domain="vpc")
    role = boto3.client("iam", **kw, endpoint_url=env["AWS_ENDPOINT_URL"]).create_role(RoleName="practice-dlm",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "dlm.amazonaws.com"},
             "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
    boto3.client("dlm", **kw, endpoint_url=env["AWS_ENDPOINT_URL_DLM"]).create_lifecycle_policy(
        ExecutionRoleArn=role, Description="practice", State="ENABLED", PolicyDetails={
            "ResourceTypes": ["VOLUME"], "TargetTags": [{"Key": "k", "Value": "v"}],
            "Schedules": [{"CreateRule": {"Interval": 24, "IntervalUnit": "HOURS",
                                          "Times": ["03:00"]}, "RetainRule": {"Count": 7}}]})
if sys.argv[2] == "concurrent":
    # As infra's overlapping steps do: launches, allocations and associations in flight
    # at once. Each thread's association names ids its own requests were answered with.
    from concurrent.futures import ThreadPoolExecutor
    ami = boto3.client("ssm", **kw, endpoint_url=env["AWS_ENDPOINT_URL"]).get_parameter(
        Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")
    def one(_: int) -> None:
        c = boto3.client("ec2", **kw, endpoint_url=env["AWS_ENDPOINT_URL"])
        for _ in range(3):
            i = c.run_instances(ImageId=ami["Parameter"]["Value"], MinCount=1, MaxCount=1,
                                InstanceType="t3.medium")["Instances"][0]["InstanceId"]
            a = c.allocate_address(Domain="vpc")["AllocationId"]
            c.create_tags(Resources=[i], Tags=[{"Key": "n", "Value": i}])
            c.associate_address(InstanceId=i, AllocationId=a)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(8)))
groups = sorted(g["GroupId"] for g in ec2.describe_security_groups(
    Filters=[{"Name": "group-name", "Values": ["practice"]}])["SecurityGroups"])
instances = sorted(i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
                   for i in r["Instances"])
eips = sorted(a["PublicIp"] for a in ec2.describe_addresses()["Addresses"])
associated = sorted(a["PublicIp"] + ">" + a["InstanceId"]
                    for a in ec2.describe_addresses()["Addresses"] if a.get("InstanceId"))
tagged = sorted(i["InstanceId"] + "=" + t["Value"] for r in ec2.describe_instances()["Reservations"]
                for i in r["Instances"] for t in i.get("Tags", []) if t["Key"] == "n")
dlm = boto3.client("dlm", **kw, endpoint_url=env["AWS_ENDPOINT_URL_DLM"])
policies = sorted(p["PolicyId"] for p in dlm.get_lifecycle_policies()["Policies"])
# Its execution role came back with moto's replay: the stand-in still accepts it.
for p in policies:
    dlm.update_lifecycle_policy(PolicyId=p, ExecutionRoleArn=dlm.get_lifecycle_policy(
        PolicyId=p)["Policy"]["ExecutionRoleArn"])
emu.stop()
print(json.dumps({"groups": groups, "instances": instances, "eips": eips,
                  "associated": associated, "tagged": tagged, "policies": policies}))
"""


def _run(directory: Path, mode: str) -> dict[str, list[str]]:
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(directory), mode],
                         capture_output=True, text=True, timeout=120, cwd=directory.parent)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_state_survives_a_restart_with_the_same_ids(tmp_path: Path) -> None:
    first = _run(tmp_path / "emulator", "create")
    assert len(first["groups"]) == 1 and len(first["instances"]) == 1
    # The DLM stand-in's policy is kept beside the recording (moto has no DLM to record).
    assert len(first["policies"]) == 1 and (tmp_path / "emulator" / "dlm.json").exists()
    # Recorded into the deployment, not into moto's default ./moto_recording (moto reads
    # MOTO_RECORDER_FILEPATH when first imported).
    assert (tmp_path / "emulator" / "recording.jsonl").stat().st_size > 0
    assert not (tmp_path / "moto_recording").exists()
    again = _run(tmp_path / "emulator", "read")
    assert again == first
    third = _run(tmp_path / "emulator", "read")
    assert third == first


def test_requests_in_flight_at_once_replay_to_the_same_world(tmp_path: Path) -> None:
    """Steps overlap (engine/schedule.py), so the emulator answers requests in flight at once.
    moto draws its ids from one seeded generator as it handles each request and records the
    request as it arrives: two requests handled at once could draw their ids in an order
    other than the one recorded, and the replay (sequential) hands out other ids, so a
    recorded AssociateAddress names an instance that does not exist and is dropped. That was
    practice's second run showing ``eip_association`` changed (session 4)."""
    first = _run(tmp_path / "emulator", "concurrent")
    assert len(first["associated"]) == 24 and len(first["tagged"]) == 24
    for _ in range(2):
        assert _run(tmp_path / "emulator", "read") == first
