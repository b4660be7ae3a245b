"""``ssm.forward``: the admin API through a Session Manager port forward (after close_ssh).

AWS side: in-process moto, whose EC2 holds the instance. moto does not implement
``ssm.start_session`` (NotImplementedError, moto 5.2.5; nor ``terminate_session``, which
the action calls best-effort at the end): ONLY start_session is answered by a botocore
``before-call.ssm.StartSession`` handler. botocore validates the request against the real
SSM model before that event, and the handler is at least as strict as AWS: the target
must be an instance moto knows in state running (AWS: InvalidInstanceId / TargetNotConnected),
the document must be AWS-StartPortForwardingSession with both port parameters; the response
has the shape of the API reference (SessionId, TokenValue, StreamUrl wss://ssmmessages...).

Data path: tests/support/bin/session-manager-plugin, a stand-in for AWS's plugin that
checks its arguments like the AWS CLI passes them and forwards 127.0.0.1:localPortNumber
to 127.0.0.1:portNumber (this machine stands in for the instance); the real Synapse of
the test stack answers there, and the whole gate runs through it.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from elematrix_tui.actions.matrix import Validate
from elematrix_tui.actions.matrix_ssm import SsmForward
from elematrix_tui.bundled import assets_dir, runbooks_dir
from elematrix_tui.engine.action import ActionFailed, Result
from elematrix_tui.engine.standalone import StandaloneContext
from tests.support.services import MatrixStack

from .conftest import validate_inputs

pytestmark = pytest.mark.services

BIN = Path(__file__).resolve().parents[1] / "support" / "bin"
REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        yield from _moto_instance(mp, tmp_path_factory.mktemp("ssm-aws"))


def _moto_instance(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    from botocore.awsrequest import AWSResponse
    from moto import mock_aws

    from elematrix_tui.actions.aws_session import AwsSession

    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
                 "AWS_CONFIG_FILE": str(tmp_path / "none"),
                 "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("ELEMATRIX_TEST_PYTHON", sys.executable)
    with mock_aws():
        import boto3

        ec2 = boto3.client("ec2", region_name=REGION)
        ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        iid = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1,
                                InstanceType="t3.medium")["Instances"][0]["InstanceId"]
        calls: list[dict[str, Any]] = []

        def start_session(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
            # ``params`` is the serialized request (SSM speaks JSON 1.1): its body.
            params = json.loads(params["body"])
            calls.append(params)
            target = params["Target"]
            found = [i for r in ec2.describe_instances(
                Filters=[{"Name": "instance-id", "Values": [target]}])["Reservations"]
                for i in r["Instances"] if i["State"]["Name"] == "running"]
            if not found:
                err = {"Error": {"Code": "TargetNotConnected",
                                 "Message": f"{target} is not connected."}}
                return AWSResponse("", 400, {}, None), err
            assert params["DocumentName"] == "AWS-StartPortForwardingSession"
            assert set(params["Parameters"]) == {"portNumber", "localPortNumber"}
            sid = f"elematrix-test-{secrets.token_hex(8)}"
            return AWSResponse("", 200, {}, None), {
                "SessionId": sid, "TokenValue": "tok-" + secrets.token_hex(40),
                "StreamUrl": f"wss://ssmmessages.{REGION}.amazonaws.com/v1/data-channel/"
                             f"{sid}?role=publish_subscribe",
                "ResponseMetadata": {"HTTPStatusCode": 200}}

        def hook(s: AwsSession) -> None:
            s.session.events.register("before-call.ssm.StartSession", start_session)

        AwsSession.on_create.append(hook)
        try:
            yield iid
        finally:
            AwsSession.on_create.remove(hook)


def test_verify_reaches_the_admin_api_through_session_manager(
        tmp_path: Path, matrix_stack: MatrixStack, moto_instance: str) -> None:
    ctx = StandaloneContext(deployment_dir=tmp_path)
    try:
        fwd = ctx.run(SsmForward(), {"instance_id": moto_instance,
                                     "remote_port": matrix_stack.ports.synapse})
        assert fwd.status == "changed" and fwd.outputs["url"].startswith("http://127.0.0.1:")
        res = ctx.run(Validate(), validate_inputs(matrix_stack, admin_url=fwd.outputs["url"],
                                                  max_upload_size_mb=4))
        assert isinstance(res, Result) and res.outputs["passed"], res
        # The session token is a secret: never in the logs or notes.
        text = repr(ctx.logs) + repr(ctx.notes)
        assert "tok-" not in text
        again = ctx.run(SsmForward(), {"instance_id": moto_instance,
                                       "remote_port": matrix_stack.ports.synapse})
        assert again.status == "ok" and again.outputs["url"] == fwd.outputs["url"]
        _assert_operator_policy_allows(ctx.notes)
    finally:
        ctx.close()


def _assert_operator_policy_allows(notes: list[tuple[str, dict[str, Any]]]) -> None:
    """assets/aws/operator-policy.json must allow every call ssm.forward made, and the
    terminate_session of its close."""
    from elematrix_tui.actions.aws_errors import iam_action

    policy = json.loads((assets_dir() / "aws" / "operator-policy.json").read_text())
    allowed = {a for st in policy["Statement"] for a in
               ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
    ops = {(d["service"], d["operation"]) for kind, d in notes if kind == "aws.call"}
    assert ("ssm", "start_session") in ops
    ops.add(("ssm", "terminate_session"))
    for service, op in ops:
        api = "".join(p.capitalize() for p in op.split("_"))
        for perm in iam_action(service, api).split(" / "):
            assert perm in allowed, perm


def test_an_unknown_or_stopped_instance_is_refused_clearly(tmp_path: Path,
                                                           moto_instance: str) -> None:
    import boto3

    ctx = StandaloneContext(deployment_dir=tmp_path)
    with pytest.raises(ActionFailed) as e:
        ctx.run(SsmForward(), {"instance_id": "i-0123456789abcdef0"})
    assert "does not exist" in str(e.value)
    ec2 = boto3.client("ec2", region_name=REGION)
    ec2.stop_instances(InstanceIds=[moto_instance])
    try:
        with pytest.raises(ActionFailed) as e:
            ctx.run(SsmForward(), {"instance_id": moto_instance})
        assert "not running" in str(e.value) and "start-instances" in (e.value.fix or "")
    finally:
        ec2.start_instances(InstanceIds=[moto_instance])
        ctx.close()


def test_missing_plugin_says_how_to_install_it(tmp_path: Path, moto_instance: str) -> None:
    ctx = StandaloneContext(deployment_dir=tmp_path)
    with pytest.raises(ActionFailed) as e:
        ctx.run(SsmForward(), {"instance_id": moto_instance,
                               "plugin": "no-such-session-manager-plugin"})
    assert "not installed" in str(e.value)
    assert "session-manager-working-with-install-plugin" in (e.value.fix or "")


def test_verify_runbook_with_admin_tunnel_ssm_from_the_command_line(
        elematrix: str, matrix_stack: MatrixStack, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The real CLI runs runbooks/verify.yaml with ``admin_tunnel=ssm`` against a moto
    server on 127.0.0.1. Only moto's missing ``start_session`` is added to the server
    (same strictness as above: the instance must exist and run); the plugin stand-in maps
    the instance's port 8008 to the test Synapse's port."""
    import subprocess

    import boto3
    from moto.core.responses import ActionResult
    from moto.ec2.models import ec2_backends
    from moto.server import ThreadedMotoServer
    from moto.ssm.responses import SimpleSystemManagerResponse

    def start_session(self: Any) -> Any:
        target = self._get_param("Target")
        backend = ec2_backends[self.current_account][self.region]
        inst = backend.get_instance(target)  # InvalidInstanceID.NotFound like AWS
        if inst.state != "running":
            raise AssertionError(f"{target} is {inst.state}: AWS says TargetNotConnected")
        assert self._get_param("DocumentName") == "AWS-StartPortForwardingSession"
        assert set(self._get_param("Parameters")) == {"portNumber", "localPortNumber"}
        sid = f"elematrix-test-{secrets.token_hex(8)}"
        return ActionResult({
            "SessionId": sid, "TokenValue": "tok-" + secrets.token_hex(40),
            "StreamUrl": f"wss://ssmmessages.{self.region}.amazonaws.com/v1/data-channel/"
                         f"{sid}?role=publish_subscribe"})

    monkeypatch.setattr(SimpleSystemManagerResponse, "start_session", start_session,
                        raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {**os.environ, "AWS_ENDPOINT_URL": f"http://{host}:{port}",
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
               "AWS_CONFIG_FILE": str(tmp_path / "none"),
               "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
               "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
               "ELEMATRIX_TEST_PYTHON": sys.executable,
               "ELEMATRIX_FAKE_SSM_PORTS": f"8008={matrix_stack.ports.synapse}"}
        env.pop("AWS_PROFILE", None)
        ec2 = boto3.client("ec2", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=REGION,
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        iid = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0][
            "InstanceId"]
        runbook = runbooks_dir() / "verify.yaml"
        r = subprocess.run(
            [elematrix, "run", str(runbook), "--yes", "--deployment", "verify-ssm",
             "--set", f"base_url={matrix_stack.base_url}",
             "--set", f"server_name={matrix_stack.server_name}",
             "--set", "admin_tunnel=ssm", "--set", f"instance_id={iid}",
             "--set", f"registration_shared_secret={matrix_stack.registration_shared_secret}",
             "--set", "max_upload_size_mb=4", "--set", "timeout=10"],
            capture_output=True, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"timed out: {e.stdout!r} {e.stderr!r}") from e
    finally:
        server.stop()
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "ssm.start_session -> SessionId=elematrix-test-" in out
    assert "[PASS] cleanup" in out and "tok-" not in out


def test_a_plugin_whose_channel_never_opens_is_interrupted_promptly(
        tmp_path: Path, moto_instance: str) -> None:
    """Ctrl-C while the plugin's port is awaited ends the step at once and stops the plugin.

    Before the one polling helper this wait slept in 0.1 s steps until ``ready_timeout``
    and never looked at the cancel event. The stand-in plugin hangs without listening, as
    the real one does when the agent's data channel never comes up.
    """
    import threading
    import time

    pid_file = tmp_path / "plugin.pid"
    hang = tmp_path / "hanging-plugin"
    hang.write_text("#!/bin/sh\n"
                    "[ \"$1\" = --version ] && { echo 1.2.707.0; exit 0; }\n"
                    f"echo $$ > {pid_file}\nexec sleep 120\n")
    hang.chmod(0o755)
    ctx = StandaloneContext(deployment_dir=tmp_path)
    timer = threading.Timer(1.0, ctx.cancel.set)
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(ActionFailed) as e:
            ctx.run(SsmForward(), {"instance_id": moto_instance, "plugin": str(hang),
                                   "ready_timeout": 120})
    finally:
        timer.cancel()
        ctx.close()
    assert time.monotonic() - t0 < 15
    assert "interrupted while waiting for the Session Manager plugin" in e.value.message
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
