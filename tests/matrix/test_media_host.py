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


def test_host_ssh_through_the_real_runner_from_an_anchor(
        elematrix: str, matrix_stack: MatrixStack, sshd: SshServer) -> None:
    """The CLI and runner render host_ssh from an x-ssh anchor (as poc-ec2's gate does)
    and the shared SSH connection resource works under the runner's resource lock."""
    import subprocess

    runbook = Path(__file__).parent / "data" / "gate-with-host-ssh.yaml"
    r = subprocess.run(
        [elematrix, "run", str(runbook), "--yes", "--deployment", "host-ssh-t",
         "--set", f"base_url={matrix_stack.base_url}",
         "--set", f"server_name={matrix_stack.server_name}",
         "--set", f"admin_url={matrix_stack.admin_url}",
         "--set", f"registration_shared_secret={matrix_stack.registration_shared_secret}",
         "--set", f"ssh_host={sshd.host}", "--set", f"ssh_port={sshd.port}",
         "--set", f"ssh_user={sshd.user}", "--set", f"ssh_key={sshd.key_path}",
         "--set", f"ssh_fingerprints={','.join(sshd.fingerprints)}",
         "--set", f"http_port={matrix_stack.ports.nginx}"],
        capture_output=True, text=True, timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert f"on the host ({sshd.user}@{sshd.host}:{sshd.port}" in out
