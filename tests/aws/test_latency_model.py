"""The latency model (tests/support/latency.py): what it holds back of moto's instant
transitions, its scaled clock, and the critical path it gives poc-ec2 (bench/e2e_model.py;
docs/latency-model.md)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import latency

ROOT = Path(__file__).resolve().parents[2]


def test_the_clock_is_scaled() -> None:
    clock = latency.Clock(0.01)
    t0 = time.monotonic()
    clock.sleep(20.0)  # 20 modelled seconds: 0.2 s
    assert 0.19 <= time.monotonic() - t0 < 1.0
    assert 19.0 <= clock.now() < 100.0
    with pytest.raises(ValueError):
        latency.Clock(0.0)


def test_moto_transitions_are_held_back(moto: None) -> None:
    import boto3

    ec2 = boto3.client("ec2", region_name="us-east-1")
    ami = "ami-12c6146b"  # one of moto's bundled AMIs (listing them all takes seconds)
    # One modelled second is 10 ms: pending 17 s = 0.17 s, status checks 180 s = 1.8 s.
    # moto's first calls load its backends (seconds): warm them before the clock runs.
    warm = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    ec2.describe_instances(InstanceIds=[warm])
    ec2.describe_instance_status(InstanceIds=[warm])
    ec2.get_console_output(InstanceId=warm)
    clock = latency.Clock(0.01)
    with latency.patched_api_latency(clock) as launched:
        iid = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1,
                                InstanceType="t3.micro")["Instances"][0]["InstanceId"]
        assert iid in launched

        def state() -> str:
            r = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]
            return str(r["Instances"][0]["State"]["Name"])

        def status() -> list[Any]:
            return list(ec2.describe_instance_status(InstanceIds=[iid])["InstanceStatuses"])

        assert state() == "pending" and status() == []
        assert "Output" not in ec2.get_console_output(InstanceId=iid)
        clock.sleep_until(launched[iid] + latency.fig("pending_to_running_s") + 1)
        assert state() == "running"
        assert status()[0]["InstanceStatus"]["Status"] == "initializing"
        clock.sleep_until(launched[iid] + latency.fig("pending_to_running_s")
                          + latency.fig("status_ok_s") + 1)
        assert status()[0]["InstanceStatus"]["Status"] == "ok"
    # Off again: moto answers as it always does.
    assert ec2.describe_instance_status(InstanceIds=[iid])["InstanceStatuses"]


def test_every_figure_says_where_it_comes_from() -> None:
    doc = (ROOT / "docs" / "latency-model.md").read_text()
    for name, f in latency.FIGURES.items():
        assert f.source and f.unit
        assert f"`{name}`" in doc, f"docs/latency-model.md does not list {name}"


def test_the_shorter_path_is_within_the_limit_and_status_checks_are_off_it() -> None:
    """The critical path of poc-ec2 under the model, computed without sleeping: the old
    runbook (every step in sequence, SSH after the status checks, pulls at compose time)
    against this one. The threaded run through the real engine is bench/run.py e2e."""
    sys.path.insert(0, str(ROOT / "bench"))
    import e2e_model

    before, before_path = e2e_model.limit(e2e_model.baseline(e2e_model.RUNBOOK),
                                          e2e_model.baseline(e2e_model.USER_DATA))
    after, after_path = e2e_model.limit((ROOT / e2e_model.RUNBOOK).read_text(),
                                        (ROOT / e2e_model.USER_DATA).read_text())
    assert "instance_status_ok" in dict(before_path)
    assert "instance_status_ok" not in dict(after_path)
    assert after < 0.8 * before, (before, after)


def test_a_moto_server_answers_each_call_late(moto_server: str) -> None:
    import boto3

    sts = boto3.client("sts", endpoint_url=moto_server, region_name="us-east-1",
                       aws_access_key_id="x", aws_secret_access_key="x")
    sts.get_caller_identity()  # warm the server's backends
    clock = latency.Clock(0.02)  # api_call_s 0.15 modelled: 3 ms a call
    with latency.patched_server_latency(clock) as served:
        t0 = time.monotonic()
        for _ in range(5):
            sts.get_caller_identity()
        assert time.monotonic() - t0 >= 5 * latency.fig("api_call_s") * 0.02
    assert served == ["GetCallerIdentity"] * 5
