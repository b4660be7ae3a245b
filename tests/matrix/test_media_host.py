"""The media check's limit uploads on the host over SSH (real sshd, real stack, loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from elematrix_tui.engine.action import ActionFailed, Result
from tests.support.services import MatrixStack, free_port
from tests.support.sshd import SshServer

from .conftest import checks, run_validate

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    with SshServer() as srv:
        yield srv


def test_limit_uploads_run_on_the_host(tmp_path: Path, matrix_stack: MatrixStack,
                                       sshd: SshServer) -> None:
    res, ctx = run_validate(tmp_path, matrix_stack, max_upload_size_mb=4,
                            host_ssh=sshd.inputs(),
                            host_url=f"http://127.0.0.1:{matrix_stack.ports.nginx}")
    assert isinstance(res, Result), getattr(res, "diagnosis", res)
    details = "\n".join(checks(ctx)["media"]["details"])
    assert f"on the host ({sshd.user}@127.0.0.1:{sshd.port}" in details
    assert str(4 * 1024 * 1024 - 1024) in details and str(4 * 1024 * 1024 + 1024) in details
    assert "from this machine: 1048576 bytes" in details
    # The access token travelled on stdin, never on the host's command lines.
    assert "Bearer" not in sshd.log()


def test_host_url_not_listening_falls_back_to_the_public_address(
        tmp_path: Path, matrix_stack: MatrixStack, sshd: SshServer) -> None:
    res, ctx = run_validate(tmp_path, matrix_stack, max_upload_size_mb=4,
                            host_ssh=sshd.inputs(), host_url=f"http://127.0.0.1:{free_port()}")
    assert isinstance(res, Result), getattr(res, "diagnosis", res)
    details = "\n".join(checks(ctx)["media"]["details"])
    assert "nothing listens at" in details and "on the host (" in details


def test_host_ssh_that_does_not_connect_is_a_clear_finding(
        tmp_path: Path, matrix_stack: MatrixStack, sshd: SshServer) -> None:
    wrong = sshd.inputs(host_key_fingerprints=["SHA256:" + "A" * 43])
    res, ctx = run_validate(tmp_path, matrix_stack, max_upload_size_mb=4, host_ssh=wrong)
    assert isinstance(res, ActionFailed)
    media = checks(ctx)["media"]
    assert media["cause"] == "host_unreachable" and "SSH to" in "\n".join(media["details"])


def test_host_local_runs_the_limit_uploads_on_this_machine(
        tmp_path: Path, matrix_stack: MatrixStack) -> None:
    """``host: local`` (practice mode: the instance is this machine) takes the same path."""
    res, ctx = run_validate(tmp_path, matrix_stack, max_upload_size_mb=4,
                            host_ssh={"host": "local"},
                            host_url=f"http://127.0.0.1:{matrix_stack.ports.nginx}")
    assert isinstance(res, Result), getattr(res, "diagnosis", res)
    assert "on the host (this machine (local)" in "\n".join(checks(ctx)["media"]["details"])
