"""Phases ``infra`` then ``harden`` of poc-ec2 through the real runner (in-process moto),
then the teardown runbook.

WHAT MOTO CANNOT EXERCISE, said plainly: moto 5.2 has no ``ssm.describe_instance_information``
(Session Manager). This test patches moto to answer it with ``PingStatus: Online`` for the
instance, so the steps after the readiness check can run; it proves nothing about a real
SSM agent coming online. moto's ``send_command`` reports every command as Success without
running anything, so the CloudWatch agent install/start steps are exercised only as API
calls. ``tests/aws/test_actions.py::test_session_manager_readiness_is_real_aws_code_moto_cannot_run``
shows the unpatched behaviour (the operator is told the endpoint does not implement it).

The deploy phase sits between configure and harden in the shipped runbook; it needs SSH
and a Docker host, so this test runs a copy of the runbook with infra, configure (local:
server name, rendering, doctor) and harden, the host steps on this machine
(``host_transport: local``, the stack uploaded into a temporary ``remote_dir``).

WHAT STANDS IN FOR THE DOCKER ENGINE: harden's ``recreate_awslogs`` (``docker compose up``
with the awslogs driver). The real driver runs inside dockerd and takes its AWS
credentials from dockerd's own chain; the shared engine here has none and cannot be
restarted with any (measured: ``docker run --log-driver awslogs --log-opt
awslogs-endpoint=http://127.0.0.1:<moto>`` fails with "NoCredentialProviders"), and
in-process moto is not reachable from it anyway. :class:`AwslogsEngine` does what the
driver does (moby ``daemon/logger/awslogs/cloudwatchlogs.go``, and measured with the real
driver of dockerd 20.10.24 in ``tests/aws/test_awslogs_engine.py`` and by hand: one stream
per container named by ``tag``, the lines as events; a container whose stream cannot be
created still starts in non-blocking mode and exits 125 in blocking mode): per container, in the group
the uploaded compose file names (``awslogs-group``), a stream named by ``tag``
(``{{.Name}}``: ``elematrix-<service>-1``), then PutLogEvents. It is as strict: a missing
group (``awslogs-create-group: "false"``) gets no stream and no events, and a service that
is not on awslogs sends nothing to CloudWatch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from elematrix_tui.actions.ssh import Run
from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.engine.action import Result

from .helpers import count_tagged

RUNBOOKS = runbooks_dir()
CIDR = "203.0.113.5/32"


@pytest.fixture
def moto_with_ssm_online(aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                         tmp_path: Path) -> Iterator[None]:
    from moto import mock_aws
    from moto.core.responses import ActionResult
    from moto.ssm.responses import SimpleSystemManagerResponse

    def describe_instance_information(self: Any) -> Any:
        ids: list[str] = []
        for f in self._get_param("Filters") or []:
            if f.get("Key") == "InstanceIds":
                ids += f.get("Values", [])
        return ActionResult({"InstanceInformationList": [
            {"InstanceId": i, "PingStatus": "Online", "PlatformName": "Amazon Linux"}
            for i in ids]})

    monkeypatch.setattr(SimpleSystemManagerResponse, "describe_instance_information",
                        describe_instance_information, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with mock_aws():
        yield


class AwslogsEngine(Run):
    """``cd <dir> && docker compose up -d --wait`` as the awslogs driver sees it (see the
    module docstring): every container logs one line into its service's log group."""

    def apply(self, ctx: Any, inputs: Any) -> Result:
        import re
        import time

        import yaml

        m = re.fullmatch(r"cd (\S+) && docker compose up -d --wait", inputs.command)
        assert m, f"unexpected command for the docker stand-in: {inputs.command!r}"
        compose = yaml.safe_load((Path(m.group(1)) / "docker-compose.yml").read_text())
        logs = boto3.client("logs")
        for svc, spec in compose["services"].items():
            logging = spec.get("logging") or {}
            if logging.get("driver") != "awslogs":
                continue
            opts = logging["options"]
            assert opts["tag"] == "{{.Name}}"
            stream = f"{compose['name']}-{svc}-1"
            try:
                logs.create_log_stream(logGroupName=opts["awslogs-group"], logStreamName=stream)
            except logs.exceptions.ResourceNotFoundException:
                # Non-blocking mode: dockerd retries in the background, the container runs
                # and its lines are dropped; blocking mode refuses to start it (exit 125).
                if opts.get("mode") != "non-blocking":
                    return Result(status="failed", outputs={"exit_code": 1},
                                  message="failed to initialize logging driver")
                continue
            logs.put_log_events(logGroupName=opts["awslogs-group"], logStreamName=stream,
                                logEvents=[{"timestamp": int(time.time() * 1000),
                                            "message": f"{svc} started"}])
        return Result(status="changed", outputs={"exit_code": 0, "stdout": "", "stderr": "",
                                                 "duration_s": 0.0})


def _runner(rb: Any, tmp_path: Path, params: dict[str, Any], phases: list[str],
            events: list[Any]) -> Any:
    from elematrix_tui.actions import default_registry
    from elematrix_tui.engine.runner import Runner, RunOptions
    from elematrix_tui.engine.standalone import AutoQuestions

    registry = default_registry()
    registry.add("ssh.run", AwslogsEngine)
    return Runner(rb, deployment="hard", state_dir=tmp_path / "state", params=params,
                  questions=AutoQuestions(), sinks=[events.append], registry=registry,
                  options=RunOptions(phases=phases, assume_yes=True))


def _failures(events: list[Any]) -> list[tuple[str, str]]:
    return [(getattr(e, "step_id", ""), getattr(e, "message", "")) for e in events
            if getattr(e, "status", None) == "failed"]


def test_infra_then_harden_then_teardown(moto_with_ssm_online: None, tmp_path: Path) -> None:
    from elematrix_tui.actions import default_registry
    from elematrix_tui.engine.loader import load_runbook

    rb = load_runbook(RUNBOOKS / "poc-ec2.yaml", default_registry())
    rb = rb.model_copy(update={"phases": [p for p in rb.phases
                                          if p.id in ("infra", "configure", "harden")]})
    remote = tmp_path / "host" / "stack"
    params = {"operator_cidr": CIDR, "host_key_wait": 0, "alert_email": "ops@example.org",
              "log_retention_days": 14, "host_transport": "local", "remote_dir": str(remote)}
    events: list[Any] = []
    assert _runner(rb, tmp_path, params, ["infra", "configure"], events).run() == 0, \
        _failures(events)
    all_events = list(events)
    # Before harden the rendering logs to json-file: nothing would reach CloudWatch.
    first = (tmp_path / "state" / "deployments" / "hard" / "stack" / "docker-compose.yml")
    assert "awslogs" not in first.read_text()
    events.clear()
    assert _runner(rb, tmp_path, params, ["harden"], events).run() == 0, _failures(events)
    all_events += events

    ec2 = boto3.client("ec2")
    sg = ec2.describe_security_groups(Filters=[
        {"Name": "tag:elematrix:deployment", "Values": ["hard"]}])["SecurityGroups"][0]
    assert [p["FromPort"] for p in sg["IpPermissions"]] == [80]
    cw = boto3.client("cloudwatch")
    alarms = {a["AlarmName"]: a for a in cw.describe_alarms(
        AlarmNamePrefix="elematrix-hard-")["MetricAlarms"]}
    assert {n: (a["Namespace"], a["MetricName"], a["Threshold"]) for n, a in alarms.items()} == {
        "elematrix-hard-disk": ("CWAgent", "disk_used_percent", 80.0),
        "elematrix-hard-memory": ("CWAgent", "mem_used_percent", 90.0),
        "elematrix-hard-cpu": ("AWS/EC2", "CPUUtilization", 85.0),
        "elematrix-hard-status": ("AWS/EC2", "StatusCheckFailed", 1.0),
    }
    topic = boto3.client("sns").list_topics()["Topics"][0]["TopicArn"]
    assert all(a["AlarmActions"] == [topic] for a in alarms.values())
    subs = boto3.client("sns").list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subs] == [("email", "ops@example.org")]
    groups = boto3.client("logs").describe_log_groups(logGroupNamePrefix="/elematrix/hard/")
    assert sorted((g["logGroupName"], g["retentionInDays"]) for g in groups["logGroups"]) == [
        (f"/elematrix/hard/{n}", 14) for n in ("element", "nginx", "postgres", "synapse")]
    # The compose file harden uploaded names exactly those groups, and the gate saw their
    # streams receive events (one naming scheme: stack/values.py log_group_name).
    import yaml

    uploaded = yaml.safe_load((remote / "docker-compose.yml").read_text())
    assert {s: v["logging"]["options"]["awslogs-group"]
            for s, v in uploaded["services"].items()} == {
        s: f"/elematrix/hard/{s}" for s in ("postgres", "synapse", "element", "nginx")}
    flowing = [e for e in events if getattr(e, "step_id", "") == "logs_flowing"
               and getattr(e, "status", None) == "ok"]
    assert flowing, "the logs_flowing gate did not pass"
    boto3.client("ssm").get_parameter(Name="AmazonCloudWatch-elematrix-hard")
    ssm_calls = [e.data["operation"] for e in events
                 if getattr(e, "name", "") == "aws.call" and e.data["service"] == "ssm"]
    # host_transport local is practice: the "instance" is this machine, where neither the
    # SSM agent nor the CloudWatch agent is installed (the rehearsal, over ssh, proves them).
    assert "describe_instance_information" not in ssm_calls
    assert "send_command" not in ssm_calls
    skipped = {e.step_id for e in events if getattr(e, "status", None) == "skipped"}
    assert {"ssm_ready", "cw_agent_install", "cw_agent_start"} <= skipped

    # Teardown removes the harden resources too, bucket included when confirmed.
    td = load_runbook(RUNBOOKS / "teardown.yaml", default_registry())
    events.clear()
    code = _runner(td, tmp_path, {"confirm_deployment": "hard"}, ["teardown"], events).run()
    assert code == 0, _failures(events)
    assert sum(count_tagged(boto3.Session(), "hard").values()) == 0
    all_events += events
    _assert_operator_policy_covers(all_events)
    params_left = boto3.client("ssm").describe_parameters(ParameterFilters=[
        {"Key": "Name", "Option": "BeginsWith", "Values": ["AmazonCloudWatch-elematrix-hard"]}])
    assert params_left["Parameters"] == []


def _assert_operator_policy_covers(events: list[Any]) -> None:
    """docs/aws.md points operators at assets/aws/operator-policy.json: it must allow every
    call the three phases made (waiter polls are describe calls listed there too)."""
    import json

    from elematrix_tui.actions.aws_errors import iam_action
    from elematrix_tui.actions.aws_policy import operator_policy

    # The asset has ${partition}/${region} placeholders; this is what an operator applies.
    policy = operator_policy("us-east-1")
    assert "${" not in json.dumps(policy)
    allowed = {a for st in policy["Statement"] for a in
               ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
    used = set()
    for e in events:
        if getattr(e, "name", "") == "aws.call" and not e.data["operation"].startswith("waiter:"):
            api = "".join(p.capitalize() for p in e.data["operation"].split("_"))
            for perm in iam_action(e.data["service"], api).split(" / "):
                used.add(perm)
    assert used - allowed == set()
    assert len(used) > 60
