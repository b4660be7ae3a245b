"""aws.ssm_run against in-process moto: send and wait in one step, resumable without
re-sending (the command id kept in the journal meta).

moto (5.2.5, moto/ssm/models.py ``Command``) marks every invocation ``Success`` the moment
the command is sent and runs nothing. Real SSM (API reference, GetCommandInvocation and
CommandInvocationStatus) answers ``InvocationDoesNotExist`` for a moment right after
SendCommand, then ``Pending``/``InProgress``, then ``Success`` or a failure (``Failed``,
``TimedOut``...). :func:`aws_like` makes moto's invocation follow that lifecycle (stricter
than moto, never kinder): the first look raises InvocationDoesNotExist, the next ones are
InProgress, then the given final status.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from elematrix_tui.actions.aws_ssm import SsmRun, meta_key
from elematrix_tui.engine.action import ActionFailed
from elematrix_tui.engine.standalone import StandaloneContext

INSTANCE = "i-0123456789abcdef0"
INPUTS = {"instance_id": INSTANCE, "document": "AWS-RunShellScript",
          "parameters": {"commands": ["echo hello"]}, "delay": 0.05, "max_wait": 10}


@pytest.fixture
def ctx(moto: None, tmp_path: Path) -> Iterator[StandaloneContext]:
    c = StandaloneContext(deployment_dir=tmp_path / "d", run_id=f"run-{tmp_path.name}",
                          step_id="cw_agent_install")
    c.deployment_dir.mkdir()
    yield c
    c.close()


def _sent() -> int:
    return len(boto3.client("ssm").list_commands()["Commands"])


@pytest.fixture
def aws_like(monkeypatch: pytest.MonkeyPatch) -> Any:
    from moto.ssm.exceptions import SSMException as RESTError
    from moto.ssm.models import Command

    looks: dict[str, int] = {}
    final = {"status": "Success", "stderr": ""}
    real = Command.get_invocation

    def get_invocation(self: Command, instance_id: str, plugin_name: str | None) -> Any:
        inv = dict(real(self, instance_id, plugin_name))
        n = looks[self.command_id] = looks.get(self.command_id, 0) + 1
        if n == 1:
            raise RESTError("InvocationDoesNotExist", "")
        if n <= 3:
            inv.update(Status="InProgress", StatusDetails="InProgress")
        else:
            inv.update(Status=final["status"], StatusDetails=final["status"],
                       StandardErrorContent=final["stderr"])
        return inv

    monkeypatch.setattr(Command, "get_invocation", get_invocation)
    return final


def test_sends_once_and_a_resumed_step_does_not_send_again(ctx: StandaloneContext) -> None:
    before = _sent()
    chk = ctx.check(SsmRun(), INPUTS)
    assert chk.in_sync is False and chk.changes == [
        f"send AWS-RunShellScript to {INSTANCE} and wait"]
    r = ctx.run(SsmRun(), INPUTS)
    assert r.status == "changed" and r.outputs["status"] == "Success"
    cid = r.outputs["command_id"]
    assert ctx.meta[meta_key(ctx)]["command_id"] == cid
    assert _sent() == before + 1
    # The same run and step again (a resume): in place, the same command, nothing sent.
    chk = ctx.check(SsmRun(), INPUTS)
    assert chk.in_sync is True and chk.outputs["command_id"] == cid
    again = ctx.run(SsmRun(), INPUTS)
    assert again.status == "ok" and again.outputs["command_id"] == cid
    assert _sent() == before + 1
    # Another request in the same step (other parameters) is sent.
    other = {**INPUTS, "parameters": {"commands": ["echo other"]}}
    assert ctx.check(SsmRun(), other).in_sync is False
    assert ctx.run(SsmRun(), other).outputs["command_id"] != cid
    assert _sent() == before + 2


def test_pending_then_success_and_a_failure(ctx: StandaloneContext, aws_like: Any) -> None:
    before = _sent()
    # Gives up after one look (InvocationDoesNotExist, right after the send: pending).
    with pytest.raises(ActionFailed, match="still Pending") as e:
        ctx.run(SsmRun(), {**INPUTS, "max_wait": 0})
    assert "not sent again" in (e.value.fix or "")
    cid = ctx.meta[meta_key(ctx)]["command_id"]
    chk = ctx.check(SsmRun(), INPUTS)  # second look: in progress
    assert chk.in_sync is False and chk.changes == [
        f"wait for command {cid} (it is InProgress; it is not sent again)"]
    r = ctx.run(SsmRun(), INPUTS)  # the resumed step waits on the same command
    assert r.status == "changed" and r.outputs["command_id"] == cid
    assert _sent() == before + 1

    aws_like.update(status="Failed", stderr="yum: no package AmazonCloudWatchAgent")
    failing = {**INPUTS, "parameters": {"commands": ["false"]}}
    with pytest.raises(ActionFailed, match="ended Failed") as e:
        ctx.run(SsmRun(), failing)
    assert "no package AmazonCloudWatchAgent" in (e.value.diagnosis or "")
    failed_cid = ctx.meta[meta_key(ctx)]["command_id"]
    assert ctx.check(SsmRun(), failing).changes == [
        f"send AWS-RunShellScript again (command {failed_cid} ended Failed)"]
