"""Fixtures for the AWS tests: fake credentials, in-process moto, a loopback moto server.

Nothing here ever reaches a real AWS endpoint: the in-process tests run under
``moto.mock_aws`` and the CLI tests point ``AWS_ENDPOINT_URL`` at a ``ThreadedMotoServer``
bound to 127.0.0.1. Shared config files are pointed at a path that does not exist, so
an operator's ~/.aws never leaks in.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import reset_moto

# Managed policies (CloudWatchAgentServerPolicy, AmazonSSMManagedInstanceCore) attach in
# moto only when it loads them; it reads this when an IAM backend is created.
os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"

REGION = "us-east-1"

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",
}


def _set_env(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_DEFAULT_PROFILE",
              "ELEMATRIX_AWS_MAX_ATTEMPTS"):
        mp.delenv(k, raising=False)
    for k, v in FAKE_ENV.items():
        mp.setenv(k, v)
    mp.setenv("AWS_CONFIG_FILE", str(tmp / "no-aws-config"))
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp / "no-aws-credentials"))


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """In-process moto, one per test module: starting and resetting moto's backends costs
    seconds, so tests share them and keep apart by deployment name (see ``ctx``)."""
    from moto import mock_aws

    with pytest.MonkeyPatch.context() as mp:
        _set_env(mp, tmp_path_factory.mktemp("awsenv"))
        with mock_aws():
            yield


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Fake credentials and region for one test; no profile, endpoint or shared config."""
    _set_env(monkeypatch, tmp_path)
    return dict(FAKE_ENV)


_deployments = itertools.count()


@pytest.fixture(scope="module")
def shared_session(moto: None) -> Iterator[Any]:
    """One AwsSession for the module: creating boto3 clients costs ~0.2 s each."""
    from elematrix_tui.actions.aws_session import AwsSession

    s = AwsSession(None, None)
    yield s
    s.close()


@pytest.fixture
def ctx(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A StandaloneContext for a deployment name of its own (``u0``, ``u1``...).

    Under in-process moto it starts with the module's shared AWS session (the account
    guard is run for it as on first use); ``ctx.drop_resource("aws.session")`` makes the
    next action build a fresh one (needed after changing credentials or adding hooks).
    """
    from elematrix_tui.actions.aws_session import SESSION_KEY, _guard
    from elematrix_tui.engine.standalone import StandaloneContext

    c = StandaloneContext(deployment_dir=tmp_path / "dep", deployment=f"u{next(_deployments)}",
                          run_id="run-1", params={"operator_cidr": "203.0.113.5/32"})
    c.deployment_dir.mkdir()
    if "moto" in request.fixturenames:
        shared = request.getfixturevalue("shared_session")
        _guard(shared, c)
        c._resources[SESSION_KEY] = (shared, None)  # not closed: the module owns it
    yield c
    c.close()


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's real retry logic, with its backoff sleeps shrunk to 10 ms."""
    from botocore.retries import standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount",
                        lambda self, context: 0.01)


@pytest.fixture(autouse=True)
def _no_session_hooks() -> Iterator[None]:
    """AwsSession.on_create hooks never leak from one test to the next."""
    from elematrix_tui.actions.aws_session import AwsSession

    saved = list(AwsSession.on_create)
    yield
    AwsSession.on_create[:] = saved


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 (random port) for the CLI tests; yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    url = f"http://127.0.0.1:{port}"
    reset_moto(url)  # an empty account, whatever this worker ran before
    yield url
    reset_moto(url)
    server.stop()
