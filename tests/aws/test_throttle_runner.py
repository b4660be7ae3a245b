"""Throttling injected with a botocore before-send handler, through the real runner and the
poc-ec2 runbook's infra phase (in-process moto). botocore's standard retry mode retries it;
the run succeeds and every retry is visible in the aws.call notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
import pytest

from elematrix_tui.bundled import runbooks_dir
from tests.support.moto_session import endpoint_for

from .helpers import INFRA_SET, count_tagged, hook_sessions, inject

RUNBOOKS = runbooks_dir()
CIDR = "203.0.113.5/32"


@pytest.fixture
def endpoint(moto_server: str, aws_env: dict[str, str], fast_backoff: None,
             monkeypatch: pytest.MonkeyPatch) -> str:
    # A server, not mock_aws: in-process moto is itself a before-send handler and would
    # execute the request the injected handler answers (botocore calls every handler).
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


def test_throttling_during_infra_is_retried_and_the_run_succeeds(
        endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from elematrix_tui.actions import default_registry
    from elematrix_tui.engine.events import Note
    from elematrix_tui.engine.loader import load_runbook
    from elematrix_tui.engine.runner import Runner, RunOptions
    from elematrix_tui.engine.standalone import AutoQuestions

    monkeypatch.setenv("HOME", str(tmp_path))
    injected: list[list[int]] = []

    def throttle(session: Any) -> None:
        # (DescribeInstanceStatus was here: the status checks are a harden step now.)
        for op in ("RunInstances", "CreateSecurityGroup", "DescribeImages"):
            injected.append(inject(session, f"before-send.ec2.{op}", "RequestLimitExceeded",
                                   "Request limit exceeded.", status=503, times=2))
        injected.append(inject(session, "before-send.iam.CreateRole", "Throttling",
                               "Rate exceeded", status=400, times=1, protocol="query"))

    hook_sessions(throttle)
    events: list[Any] = []
    rb = load_runbook(RUNBOOKS / "poc-ec2.yaml", default_registry())
    runner = Runner(rb, deployment="throttled", state_dir=tmp_path / "state",
                    params={"operator_cidr": CIDR, "host_key_wait": 0},
                    questions=AutoQuestions(), sinks=[events.append],
                    registry=default_registry(),
                    options=RunOptions(phases=["infra"], assume_yes=True),
                    runbook_path=RUNBOOKS / "poc-ec2.yaml")
    code = runner.run()
    failed = [e for e in events if getattr(e, "status", None) == "failed"]
    assert code == 0, [(getattr(e, "step_id", ""), getattr(e, "message", "")) for e in failed]
    assert [c[0] for c in injected] == [2, 2, 2, 1]
    retried = {e.data["operation"]: e.data["retries"] for e in events
               if isinstance(e, Note) and e.name == "aws.call" and e.data.get("retries")}
    assert retried == {"run_instances": 2, "create_security_group": 2, "describe_images": 2,
                       "create_role": 1}, retried
    assert count_tagged(_Client(endpoint), "throttled") == INFRA_SET


class _Client:
    def __init__(self, url: str) -> None:
        self.session = boto3.Session()
        self.url = url

    def client(self, service: str) -> Any:
        # DLM is the stand-in beside moto (tests/conftest.py), as for the runner.
        return self.session.client(service, endpoint_url=endpoint_for(service, self.url))
