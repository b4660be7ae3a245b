"""``elematrix audit`` for real: the infra and harden phases of poc-ec2 against a moto
server on 127.0.0.1, then the real CLI running the real Prowler against the same server.

The deployment is built once (module scope) as tests/aws/test_harden_runner.py builds it:
infra, configure and harden through the real runner, the host steps on this machine
(``host_transport: local``) and :class:`AwslogsEngine` standing in for dockerd's awslogs
driver (its docstring says what it copies).

WHAT MOTO CANNOT ANSWER, patched here and nowhere else: ``ssm.describe_instance_information``
(Session Manager) is not implemented in moto 5.2. The patch answers as SSM does once the
agent on the instance registered (which harden's ``ssm_ready`` waits for on a real
deployment; with host_transport local that step does not run): every running EC2 instance
is listed, ``PingStatus: Online``, and an ``InstanceIds`` filter narrows the list as the
real API does. Prowler's SSM.1 check (``ec2_instance_managed_by_ssm``) reads that list.
It is no kinder than SSM: an instance is listed only while moto says it runs.

DLM: moto has none; the stand-in ``elematrix_tui/practice_dlm.py`` (started by
tests/conftest.py, at least as strict as DLM: docs/aws.md) answers the runbook, the CLI and
Prowler's ``dlm`` service through ``AWS_ENDPOINT_URL_DLM``. It takes no snapshots, so
``ec2_ebs_volume_snapshots_exists`` fails and is accepted (until the first scheduled one).

The deploy phase is not run (it needs a Docker host): harden's ``hardened`` gate therefore
stays blocked for the native check (it says so in its notes), and the native audit judges
EC2.13 and the rest by infra's ``posture`` gate, whose checks hold before and after harden.

Prowler runs from its own environment (``.tools/prowler``, installed by
``scripts/setup.sh --test``, or ``ELEMATRIX_PROWLER``); under CI=true a missing Prowler
fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.practice_dlm import ENV_ENDPOINT as DLM_ENDPOINT

from ..conftest import ROOT, require
from .conftest import FAKE_ENV
from .test_harden_runner import AwslogsEngine

# Two Prowler scans (1.5-3 min each on a loaded 2-core machine) and the phases before them.
pytestmark = pytest.mark.timeout(900)
ELEMATRIX = str(Path(sys.executable).parent / "elematrix")
RUNBOOKS = runbooks_dir()
CIDR = "203.0.113.5/32"
DEP = "audited"
SNAPSHOTS = "PROWLER.dlm_ebs_snapshot_lifecycle_policy_exists"
PROWLER = os.environ.get("ELEMATRIX_PROWLER") or str(ROOT / ".tools" / "prowler" / "bin" /
                                                      "prowler")


def _ssm_online(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.core.responses import ActionResult
    from moto.ec2.models import ec2_backends
    from moto.ssm.responses import SimpleSystemManagerResponse

    def describe_instance_information(self: Any) -> Any:
        wanted: list[str] | None = None
        for f in self._get_param("Filters") or []:
            if f.get("Key") == "InstanceIds":
                wanted = (wanted or []) + f.get("Values", [])
        backend = ec2_backends[self.current_account][self.region]
        running = [i.id for r in backend.reservations.values() for i in r.instances
                   if i.state == "running"]
        return ActionResult({"InstanceInformationList": [
            {"InstanceId": i, "PingStatus": "Online", "PlatformName": "Amazon Linux"}
            for i in running if wanted is None or i in wanted]})

    monkeypatch.setattr(SimpleSystemManagerResponse, "describe_instance_information",
                        describe_instance_information, raising=False)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A moto server with the deployment after infra, configure and harden; the env of
    the CLI that audits it."""
    from moto.server import ThreadedMotoServer

    from elematrix_tui.actions import default_registry
    from elematrix_tui.engine.loader import load_runbook
    from elematrix_tui.engine.runner import Runner, RunOptions
    from elematrix_tui.engine.standalone import AutoQuestions

    tmp = tmp_path_factory.mktemp("audit")
    mp = pytest.MonkeyPatch()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        assert host == "127.0.0.1"
        env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") or k == DLM_ENDPOINT}
        env.update(FAKE_ENV)
        env.update({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                    "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
                    "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
                    "ELEMATRIX_STATE_DIR": str(tmp / "state"), "HOME": str(tmp / "home"),
                    "ELEMATRIX_SECRET_STORE": "file", "ELEMATRIX_CONFIG_DIR": str(tmp / "config"),
                    "ELEMATRIX_PROWLER": PROWLER})
        (tmp / "home").mkdir()
        for k in ("AWS_ENDPOINT_URL", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
                  "HOME", "ELEMATRIX_SECRET_STORE", "ELEMATRIX_CONFIG_DIR", *FAKE_ENV):
            mp.setenv(k, env[k])
        _ssm_online(mp)
        rb = load_runbook(RUNBOOKS / "poc-ec2.yaml", default_registry())
        rb = rb.model_copy(update={"phases": [p for p in rb.phases
                                              if p.id in ("infra", "configure", "harden")]})
        params = {"operator_cidr": CIDR, "host_key_wait": 0, "alert_email": "ops@example.org",
                  "host_transport": "local", "remote_dir": str(tmp / "host" / "stack")}
        registry = default_registry()
        registry.add("ssh.run", AwslogsEngine)
        events: list[Any] = []
        for phases in (["infra", "configure"], ["harden"]):
            code = Runner(rb, deployment=DEP, state_dir=tmp / "state", params=params,
                          questions=AutoQuestions(), sinks=[events.append], registry=registry,
                          options=RunOptions(phases=phases, assume_yes=True)).run()
            assert code == 0, [(getattr(e, "step_id", ""), getattr(e, "message", ""))
                               for e in events if getattr(e, "status", None) == "failed"]
        yield env
    finally:
        mp.undo()
        server.stop()


def audit(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    r = subprocess.run([ELEMATRIX, "audit", DEP, "--json", *args], env=env,
                       capture_output=True, text=True, timeout=900)
    data = json.loads(r.stdout) if r.stdout.strip().startswith("{") else {}
    return r.returncode, data, r.stderr


def failed_controls(data: dict[str, Any]) -> set[str]:
    return {f["control"] for f in data["findings"] if f["verdict"] == "failed"}


def _require_prowler() -> None:
    require(Path(PROWLER).is_file(), f"Prowler at {PROWLER} (scripts/setup.sh --test "
                                     f"installs it; or set ELEMATRIX_PROWLER)")


def test_clean_deployment_then_planted_faults(deployed: dict[str, str]) -> None:
    """After infra + harden nothing fails unexplained (Prowler and native); then a world-open
    port 22, IMDSv1 and a public bucket policy each fail with their control id."""
    _require_prowler()
    s = boto3.Session(region_name="us-east-1")
    ec2 = s.client("ec2", endpoint_url=deployed["AWS_ENDPOINT_URL"])
    s3 = s.client("s3", endpoint_url=deployed["AWS_ENDPOINT_URL"])
    inst = ec2.describe_instances(Filters=[{"Name": "tag:elematrix:deployment",
                                            "Values": [DEP]}])["Reservations"][0]["Instances"][0]
    sg = ec2.describe_security_groups(Filters=[{"Name": "tag:elematrix:deployment",
                                                "Values": [DEP]}])["SecurityGroups"][0]["GroupId"]
    # Prowler's DLM check reports on the Region's DLM (its per-Region result, region_wide
    # in the posture section): the deployment's snapshot schedule is what passes it.
    region_dlm = "arn:aws:dlm:us-east-1:123456789012:policy"
    ours = {inst["InstanceId"], sg, DEP, region_dlm,
            *(b["Ebs"]["VolumeId"] for b in inst["BlockDeviceMappings"]),
            *(a["AllocationId"] for a in ec2.describe_addresses()["Addresses"]
              if a.get("InstanceId") == inst["InstanceId"])}

    code, data, err = audit(deployed)
    assert code == 0, (err, [f for f in data.get("findings", []) if f["verdict"] == "failed"])
    assert data["engine"].startswith("prowler ") and data["phases"] == [
        "infra", "configure", "harden"]
    verdicts = {(f["control"], f["verdict"]) for f in data["findings"]}
    # The snapshot schedule is seen by Prowler's dlm service (it reports on a Region that
    # holds snapshots of the account: moto's own AMIs have some) and passes; EC2.28 (AWS
    # Backup) stays accepted with its reason.
    assert (SNAPSHOTS, "passed") in verdicts
    assert ("EC2.28", "accepted") in verdicts
    # Promised and seen passing; accepted with a reason; SSM.1 promised after harden.
    assert {("EC2.8", "passed"), ("EC2.13", "passed"), ("S3.12", "passed"),
            ("S3.17", "passed"), ("SSM.1", "passed"), ("EC2.9", "accepted")} <= verdicts
    assert all(f["reason"] for f in data["findings"] if f["verdict"] == "accepted")
    # moto's own default resources (AMIs' snapshots, default security groups) are not ours.
    assert all(any(x in f["resource"] for x in ours) for f in data["findings"]
               if f["verdict"] != "account")
    assert audit(deployed, "--native")[0] == 0

    ec2.authorize_security_group_ingress(GroupId=sg, IpPermissions=[
        {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    ec2.modify_instance_metadata_options(InstanceId=inst["InstanceId"], HttpTokens="optional")
    bucket = f"elematrix-{DEP}-123456789012"
    # S3 refuses a public policy while the bucket blocks public policies: lift that first.
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": False,
        "RestrictPublicBuckets": False})
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": f"arn:aws:s3:::{bucket}/*"}]}))

    # The root volume's snapshot policy disabled (by hand, in the console): Prowler's DLM
    # check passes on any policy in the Region, the native check sees it is not enabled.
    dlm = s.client("dlm", endpoint_url=deployed[DLM_ENDPOINT])
    policy = next(p for p in dlm.get_lifecycle_policies()["Policies"]
                  if p["Tags"].get("elematrix:deployment") == DEP)
    dlm.update_lifecycle_policy(PolicyId=policy["PolicyId"], State="DISABLED")

    code, data, err = audit(deployed)
    assert code == 1, err
    assert {"EC2.13", "EC2.8", "S3.2"} <= failed_controls(data)
    # Nothing else fails but the planted faults and what they imply (no public access block,
    # a policy open to everyone instead of the TLS-only one).
    assert failed_controls(data) <= {"EC2.13", "EC2.8", "S3.2", "S3.8", "S3.5", "S3.6", "EC2.19"}
    code, data, err = audit(deployed, "--native")
    assert code == 1, err
    # Each fault by its own check (FAIL), not by a gate that could not look (ERROR).
    assert {f["control"] for f in data["findings"] if f["status"] == "FAIL"} >= {
        "EC2.13", "EC2.8", "S3.2", SNAPSHOTS}, data["findings"]
    # `elematrix status` says the policy drifted, and what infra would change.
    st = json.loads(subprocess.run([ELEMATRIX, "status", DEP, "--json"], env=deployed,
                                   capture_output=True, text=True, timeout=120).stdout)
    line = next(x for x in st["lines"] if x["step"] == "snapshots")
    assert line["verdict"] == "drifted" and any(
        d.startswith("enable DLM policy") for d in line["detail"]), line
    # The run report shows the last audit.
    from elematrix_tui.engine.journal import Journal

    with Journal.open(Path(deployed["ELEMATRIX_STATE_DIR"]), DEP) as j:
        run_id = j.runs()[0].id
    report = subprocess.run([ELEMATRIX, "report", run_id, "--deployment", DEP], env=deployed,
                            capture_output=True, text=True, timeout=60).stdout
    assert "## Last audit" in report and "EC2.13" in report


def test_a_deleted_snapshot_policy_fails_the_native_audit(deployed: dict[str, str]) -> None:
    """The policy deleted: the native audit fails with the snapshot control's id (FAIL, by
    its own check), and `elematrix status` says infra would create it again."""
    dlm = boto3.Session(region_name="us-east-1").client(
        "dlm", endpoint_url=deployed[DLM_ENDPOINT])
    for p in dlm.get_lifecycle_policies()["Policies"]:
        if p["Tags"].get("elematrix:deployment") == DEP:
            dlm.delete_lifecycle_policy(PolicyId=p["PolicyId"])
    code, data, err = audit(deployed, "--native")
    assert code == 1, err
    assert (SNAPSHOTS, "FAIL") in {(f["control"], f["status"]) for f in data["findings"]}
    st = json.loads(subprocess.run([ELEMATRIX, "status", DEP, "--json"], env=deployed,
                                   capture_output=True, text=True, timeout=120).stdout)
    line = next(x for x in st["lines"] if x["step"] == "snapshots")
    assert line["verdict"] == "drifted" and line["detail"][0].startswith("create DLM policy")


def test_missing_prowler_says_how_to_install(deployed: dict[str, str], tmp_path: Path) -> None:
    env = {**deployed, "ELEMATRIX_PROWLER": str(tmp_path / "no-prowler"),
           "PATH": str(tmp_path)}
    r = subprocess.run([ELEMATRIX, "audit", DEP], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert "uv tool install prowler==" in r.stderr and "elematrix-tui[audit]" in r.stderr
    assert "--native" in r.stderr
