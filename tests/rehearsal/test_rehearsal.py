"""The whole poc-ec2 runbook, first step to last, on the real Docker engine.

- AWS: a moto server on 127.0.0.1 in this process, reached by the real `elematrix` command
  through AWS_ENDPOINT_URL. moto is patched only where it has no answer: the Elastic IP it
  hands out is the rehearsal instance's loopback address, its console output carries that
  instance's host key fingerprints (as EC2 prints them), Session Manager reports the
  agent Online (moto does not implement describe_instance_information), and bucket-policy
  conditions are evaluated with ``aws:SecureTransport=true``: moto answers DENIED for any
  statement whose condition does not hold, whatever its Effect, and knows only the
  StringEquals operator, so the backup bucket's conditional deny-non-TLS statement refused
  every request. On AWS the instance's aws CLI speaks HTTPS and passes it.
- The instance: a real OpenSSH sshd on that address (tests/rehearsal/instance.py).
- Docker: the real client and the real engine with the stack's images (built locally where
  no registry answers: tests/support/docker.py ensure_images). Only cloud-init and
  systemctl are shims (docs/testing-rehearsal.md). No runbook step or template is changed
  for the test; the compose project name is (COMPOSE_PROJECT_NAME), to share the engine.
- The final gate is the real two-user E2EE validation through the rendered nginx; the
  backup lands in moto's S3. One initdb: the postgres volume was created once (engine
  events), and the postgres container's log shows the entrypoint's initdb at most once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from elematrix_tui.bundled import runbooks_dir
from tests.rehearsal.instance import FakeInstance

RUNBOOK = runbooks_dir() / "poc-ec2.yaml"
TAG = "elematrix:deployment"


def _params(inst: FakeInstance, tmp_path: Path) -> list[str]:
    values = {
        "operator_cidr": "127.0.0.1/32",
        "alert_email": "operator@example.org",
        "server_name": "rehearsal.test",
        "ssh_public_key_path": f"{inst.key_path}.pub",
        "ssh_private_key_path": str(inst.key_path),
        "ssh_user": inst.user,
        "ssh_port": str(inst.port),
        "remote_dir": str(tmp_path / "opt" / "elematrix"),
        "systemd_dir": str(inst.unit_dir),
        "host_key_wait": "0",
        # The engine's dockerd has no AWS credentials: its awslogs driver cannot write to
        # moto. That path is proven in tests/aws/test_awslogs_engine.py (a private dockerd).
        "container_logs": "local",
    }
    return [x for k, v in values.items() for x in ("--set", f"{k}={v}")]


def _env(aws_env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **aws_env}


def _count_tagged(aws_env: dict[str, str], deployment: str) -> dict[str, int]:
    import boto3

    kw: dict[str, Any] = dict(endpoint_url=aws_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="x", aws_secret_access_key="x")
    ec2 = boto3.client("ec2", **kw)
    tag = [{"Name": f"tag:{TAG}", "Values": [deployment]}]
    instances = [i for r in ec2.describe_instances(Filters=tag)["Reservations"]
                 for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    s3 = boto3.client("s3", **kw)
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]
               if b["Name"].startswith(f"elematrix-{deployment}-")]
    # The DLM stand-in beside moto (tests/conftest.py): one snapshot policy, also after kills.
    dlm = boto3.client("dlm", **{**kw, "endpoint_url": os.environ["AWS_ENDPOINT_URL_DLM"]})
    policies = [p for p in dlm.get_lifecycle_policies()["Policies"]
                if (p.get("Tags") or {}).get(TAG) == deployment]
    return {"instances": len(instances),
            "security_groups": len(ec2.describe_security_groups(Filters=tag)["SecurityGroups"]),
            "eips": len(ec2.describe_addresses(Filters=tag)["Addresses"]),
            "buckets": len(buckets), "dlm_policies": len(policies)}


def _backup_objects(aws_env: dict[str, str], deployment: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=aws_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                      aws_access_key_id="x", aws_secret_access_key="x")
    keys: list[str] = []
    for b in s3.list_buckets()["Buckets"]:
        if b["Name"].startswith(f"elematrix-{deployment}-"):
            keys += [o["Key"] for o in s3.list_objects_v2(Bucket=b["Name"]).get("Contents", [])]
    return keys


def _report(elematrix: str, env: dict[str, str], deployment: str) -> dict[str, Any]:
    runs = subprocess.run([elematrix, "runs", "--deployment", deployment], env=env,
                          capture_output=True, text=True, check=True).stdout.splitlines()
    run_id = runs[1].split()[0]
    out = subprocess.run([elematrix, "report", run_id, "--format", "json"], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def _all_step_ids() -> list[str]:
    from elematrix_tui.actions import default_registry
    from elematrix_tui.engine.loader import load_runbook

    rb = load_runbook(RUNBOOK, default_registry())
    return [s.id for ph in rb.phases for s in ph.steps + ph.gates]


def test_rehearsal_headless_every_phase(elematrix: str, instance: FakeInstance,
                                        aws_env: dict[str, str], tmp_path: Path) -> None:
    from tests.support import latency

    env = _env(aws_env)
    started = time.monotonic()
    # Under the latency model's per-call delay on the moto server (docs/latency-model.md):
    # AWS answering late must change nothing but the time (3 ms a call at scale 0.02).
    clock = latency.Clock(latency.scale_from_env(0.02))
    with latency.patched_server_latency(clock) as served:
        res = subprocess.run([elematrix, "run", str(RUNBOOK), "--deployment", "rehearsal",
                              "--yes", *_params(instance, tmp_path)], env=env,
                             capture_output=True, text=True, timeout=900)
    elapsed = time.monotonic() - started
    assert res.returncode == 0, (res.stdout[-6000:] + res.stderr[-3000:])
    assert "RunInstances" in served
    report = _report(elematrix, env, "rehearsal")
    # poc-ec2's needs: the infra resources run side by side after preflight (some two of
    # them overlap; which ones depends on how long each one's check takes).
    span = {s["step"]: (s["started"], s["started"] + s["duration"]) for s in report["steps"]
            if s["phase"] == "infra"}
    side = ["key_pair", "security_group", "backup_bucket", "instance_role", "elastic_ip"]
    assert any(span[a][0] < span[b][1] and span[b][0] < span[a][1]
               for i, a in enumerate(side) for b in side[i + 1:]), span
    done = {s["step"] for s in report["steps"] if s["status"] in ("ok", "changed", "skipped")}
    assert set(_all_step_ids()) <= done, set(_all_step_ids()) - done
    # Over ssh the instance is an instance: Session Manager and the CloudWatch agent steps
    # run (practice's local transport skips them; tests/aws/test_harden_runner.py).
    ran = {s["step"]: s["status"] for s in report["steps"]}
    assert all(ran[k] in ("ok", "changed") for k in (
        "ssm_ready", "cw_agent_install", "cw_agent_start")), ran
    gates = {g["gate_id"]: g["passed"] for g in report["gates"]}
    assert gates["e2ee"] and gates["backup_in_bucket"] and gates["posture"]
    checks = [n for n in report["notes"] if n.get("name") == "gate.check"]
    assert len(checks) >= 6 and all(c["passed"] for c in checks)
    assert any(k.endswith("synapse.sql.gz") for k in _backup_objects(aws_env, "rehearsal"))
    assert _count_tagged(aws_env, "rehearsal") == {"instances": 1, "security_groups": 1,
                                                   "eips": 1, "buckets": 1,
                                                   "dlm_policies": 1}
    assert instance.initdb_count() == 1
    assert instance.postgres_init_logged() == 1
    print(f"rehearsal: {elapsed:.1f} s")


def test_rehearsal_chaos_kill_9_and_resume(elematrix: str, instance: FakeInstance,
                                           aws_env: dict[str, str], tmp_path: Path) -> None:
    env = _env(aws_env)
    started = time.monotonic()
    args = [elematrix, "run", str(RUNBOOK), "--deployment", "chaos", "--yes", "--quiet",
            *_params(instance, tmp_path)]
    rng = random.Random(8)
    kills = 0
    first = True
    for _ in range(10):
        cmd = args if first else [elematrix, "resume", "--deployment", "chaos", "--yes",
                                  "--quiet"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.5, 9.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        # Killed before the run was recorded: start it again rather than resume.
        first = _no_run(env, elematrix)
        if proc.returncode == 0:
            break
    final = subprocess.run([elematrix, "resume", "--deployment", "chaos", "--yes"], env=env,
                           capture_output=True, text=True, timeout=900)
    if "found no unfinished run" not in final.stderr:
        assert final.returncode == 0, final.stdout[-6000:] + final.stderr[-2000:]
    assert kills >= 5
    report = _report(elematrix, env, "chaos")
    assert report["status"] == "passed"
    assert _count_tagged(aws_env, "chaos") == {"instances": 1, "security_groups": 1,
                                               "eips": 1, "buckets": 1,
                                               "dlm_policies": 1}
    assert instance.initdb_count() == 1
    assert instance.postgres_init_logged() <= 1
    print(f"chaos: {kills} kills, {time.monotonic() - started:.1f} s")


def _no_run(env: dict[str, str], elematrix: str) -> bool:
    res = subprocess.run([elematrix, "runs", "--deployment", "chaos"], env=env,
                         capture_output=True, text=True)
    return "no runs" in res.stdout
