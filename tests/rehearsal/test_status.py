"""`elematrix status` on the rehearsal: a clean deployment is clean; planted drift is named.

Parts as tests/rehearsal/test_rehearsal.py (moto server, the FakeInstance's sshd, the real
Docker engine; the instance holds stack_lock()). poc-ec2's infra, configure and deploy
phases run, then `elematrix status rehearsal` must say 0 drifted (exit 0). Then drift is
planted by hand, as an operator's slip would: an extra security group rule (5432 open to
the world), IMDS set back to optional tokens, a changed homeserver.yaml on the host, a
stopped container. Each is reported on its own line (exit 1), and `--json` parses. The host
lines (running images against the pins, disk use, the last backup's age) are ok on the
clean deployment, and with AWS unreachable no AWS line says drifted (posture: unknown).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.rehearsal.instance import FakeInstance
from tests.rehearsal.test_rehearsal import RUNBOOK, TAG, _env, _params

DEPLOY_PHASES = ["infra", "configure", "deploy"]
RUNBOOK_ARGS = [x for ph in DEPLOY_PHASES for x in ("--phase", ph)]


def _ec2(aws_env: dict[str, str]) -> Any:
    import boto3

    return boto3.client("ec2", endpoint_url=aws_env["AWS_ENDPOINT_URL"],
                        region_name="us-east-1", aws_access_key_id="x",
                        aws_secret_access_key="x")


def _status(elematrix: str, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([elematrix, "status", "rehearsal", *extra], env=env,
                          capture_output=True, text=True, timeout=300)


def test_status_clean_then_each_planted_drift(elematrix: str, instance: FakeInstance,
                                              aws_env: dict[str, str], tmp_path: Path) -> None:
    env = _env(aws_env)
    deploy = subprocess.run([elematrix, "run", str(RUNBOOK), "--deployment", "rehearsal",
                             "--yes", "--quiet", *RUNBOOK_ARGS, *_params(instance, tmp_path)],
                            env=env, capture_output=True, text=True, timeout=900)
    assert deploy.returncode == 0, deploy.stdout[-6000:] + deploy.stderr[-3000:]

    clean = _status(elematrix, env, "--json")
    report = json.loads(clean.stdout)
    assert clean.returncode == 0 and report["counts"]["drifted"] == 0, clean.stdout[-6000:]
    assert report["phases"] == DEPLOY_PHASES and report["counts"]["ok"] >= 10
    host = {x["step"]: x for x in report["lines"] if x["phase"] == "host"}
    assert {k: v["verdict"] for k, v in host.items()} == {
        "images": "ok", "disk": "ok", "last_backup": "ok"}, host
    assert host["last_backup"]["detail"][0].startswith("rehearsal/"), host

    # AWS unreachable (nothing listens there): unknown with what to do, never drifted.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    away = json.loads(_status(elematrix, {**env, "AWS_ENDPOINT_URL": closed,
                                          "ELEMATRIX_AWS_MAX_ATTEMPTS": "1"}, "--json").stdout)
    aws_lines = [x for x in away["lines"] if x["phase"] == "infra"]
    assert aws_lines and all(x["verdict"] != "drifted" for x in aws_lines), aws_lines
    posture = next(x for x in aws_lines if x["step"] == "posture")
    assert posture["verdict"] == "unknown" and "AWS did not answer" in posture["todo"], posture

    ec2 = _ec2(aws_env)
    tag = [{"Name": f"tag:{TAG}", "Values": ["rehearsal"]}]
    gid = ec2.describe_security_groups(Filters=tag)["SecurityGroups"][0]["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    iid = [i["InstanceId"] for r in ec2.describe_instances(Filters=tag)["Reservations"]
           for i in r["Instances"] if i["State"]["Name"] != "terminated"][0]
    ec2.modify_instance_metadata_options(InstanceId=iid, HttpTokens="optional")
    hs = tmp_path / "opt" / "elematrix" / "synapse" / "homeserver.yaml"
    subprocess.run(["sh", "-c", f"echo 'enable_registration: true' >> '{hs}'"], check=True)
    assert instance.compose("stop", "element").returncode == 0

    drift = _status(elematrix, env)
    assert drift.returncode == 1, drift.stdout[-6000:] + drift.stderr[-2000:]
    text = drift.stdout
    lines = {ln.split()[1]: ln for ln in text.splitlines() if ln.startswith("  drifted")}
    assert "infra/security_group:" in lines and "revoke tcp/5432 from 0.0.0.0/0" in text, text
    assert "infra/instance:" in lines and "HttpTokens" in text, text
    assert "deploy/upload:" in lines and "homeserver.yaml" in text, text
    assert any(k.startswith("deploy/start_") for k in lines) and "element" in text, text
    js = json.loads(_status(elematrix, env, "--json").stdout)
    assert js["drifted"] is True and js["counts"]["drifted"] >= 4
    print(text)
