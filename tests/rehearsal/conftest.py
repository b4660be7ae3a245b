"""Fixtures for the rehearsal tests: a FakeInstance (real sshd, real Docker engine) and a
plain SSH client to drive it.

The client here is deliberately minimal paramiko (the project's ssh actions are tested
elsewhere): it reaches the instance exactly like the runbook does, over a real SSH
connection to a real sshd, through sudo.
"""

from __future__ import annotations

import os
import random
import shlex
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.rehearsal.instance import FakeInstance, missing_binaries, moto_points_at
from tests.support.docker import engine, ensure_images
from tests.support.services import reset_moto


@dataclass
class RunResult:
    rc: int
    out: bytes
    err: str

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace")


class Remote:
    """One SSH connection to the instance (TCP_NODELAY, host key checked against the pin)."""

    def __init__(self, inst: FakeInstance) -> None:
        import paramiko

        sock = socket.create_connection((inst.host, inst.port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.client = paramiko.SSHClient()
        # The pin is checked right below (this helper is not the thing under test).
        self.client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        self.client.connect(inst.host, inst.port, username=inst.user,
                            key_filename=str(inst.key_path), sock=sock, look_for_keys=False,
                            allow_agent=False, timeout=10)
        transport = self.client.get_transport()
        assert transport is not None
        import base64
        import hashlib

        key = transport.get_remote_server_key()
        fp = "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode() \
            .rstrip("=")
        assert fp in inst.fingerprints, f"host key {fp} is not the instance's"

    def run(self, command: str, *, sudo: bool = False, stdin: bytes | None = None,
            timeout: float = 180) -> RunResult:
        """Run one command the way the ssh.run action does (``sudo -n -- sh -c``)."""
        if sudo:
            command = f"sudo -n -- sh -c {shlex.quote(command)}"
        chan_in, chan_out, chan_err = self.client.exec_command(command, timeout=timeout)
        if stdin is not None:
            chan_in.write(stdin)
        chan_in.channel.shutdown_write()
        out = chan_out.read()
        err = chan_err.read().decode(errors="replace")
        rc = chan_out.channel.recv_exit_status()
        return RunResult(rc, out, err)

    def ok(self, command: str, **kw: Any) -> RunResult:
        r = self.run(command, **kw)
        assert r.rc == 0, f"$ {command}\nexit {r.rc}\n{r.text[-3000:]}\n{r.err[-3000:]}"
        return r

    def put_tree(self, local: Path, remote: str) -> None:
        """Upload a directory, keeping file modes (sftp put does not)."""
        sftp = self.client.open_sftp()
        try:
            for p in sorted(local.rglob("*")):
                rel = p.relative_to(local).as_posix()
                dest = f"{remote}/{rel}"
                if p.is_dir():
                    try:
                        sftp.mkdir(dest, 0o755)
                    except OSError:
                        pass
                else:
                    sftp.put(str(p), dest)
                    sftp.chmod(dest, stat.S_IMODE(p.stat().st_mode))
        finally:
            sftp.close()

    def close(self) -> None:
        self.client.close()


def pick_address() -> str:
    """A 127.x address for the instance, like moto's EIPs, where nothing listens on 22
    (another engineer's sshd may be running)."""
    from tests.rehearsal.instance import port_free

    while True:
        addr = f"127.0.{random.randint(20, 250)}.{random.randint(2, 250)}"
        if port_free(addr, 22):
            return addr


@pytest.fixture
def moto_env() -> Iterator[dict[str, str]]:
    """A moto server on 127.0.0.1 and the AWS_* variables that point the aws CLI at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    finally:
        server.stop()


@pytest.fixture
def fake_instance(tmp_path: Path, moto_env: dict[str, str]) -> Iterator[FakeInstance]:
    """A started FakeInstance (stack down, and every machine edit undone, at teardown)."""
    missing = missing_binaries()
    require(not missing, f"the fake instance's prerequisites ({', '.join(missing)})")
    engine()
    inst = FakeInstance(pick_address(), tmp_path / "instance", aws_env=moto_env)
    inst.start()
    try:
        yield inst
    finally:
        inst.stop()


@pytest.fixture
def remote(fake_instance: FakeInstance) -> Iterator[Remote]:
    r = Remote(fake_instance)
    try:
        yield r
    finally:
        r.close()


# -- the whole-runbook rehearsal (test_rehearsal.py, test_rehearsal_tui.py) ---------------
# moto is patched only where it has no answer; test_rehearsal.py's docstring says where.
@pytest.fixture
def moto_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.core.responses import ActionResult
    from moto.server import ThreadedMotoServer
    from moto.ssm.responses import SimpleSystemManagerResponse

    def describe_instance_information(self: Any) -> Any:
        ids = [v for f in self._get_param("Filters") or [] if f.get("Key") == "InstanceIds"
               for v in f.get("Values", [])]
        return ActionResult({"InstanceInformationList": [
            {"InstanceId": i, "PingStatus": "Online", "PlatformName": "Amazon Linux"}
            for i in ids]})

    monkeypatch.setattr(SimpleSystemManagerResponse, "describe_instance_information",
                        describe_instance_information, raising=False)

    from moto.s3.models import FakeBucket

    from elematrix_tui.practice import bucket_policy_permission

    # moto denies on any unmet condition; the instance's aws CLI speaks HTTPS on AWS.
    monkeypatch.setattr(FakeBucket, "get_permission", bucket_policy_permission)
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    url = f"http://127.0.0.1:{port}"
    # moto's backends are this process's, shared with every earlier test on this worker
    # (in-process mock_aws and other servers): each rehearsal starts from an empty account,
    # as a real staging account would be, and leaves one for the next.
    reset_moto(url)
    yield url
    reset_moto(url)
    server.stop()



@pytest.fixture
def aws_env(moto_server: str) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "rehearsal",
            "AWS_SECRET_ACCESS_KEY": "rehearsal", "AWS_SESSION_TOKEN": "rehearsal",
            "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def instance(tmp_path: Path, aws_env: dict[str, str]) -> Iterator[FakeInstance]:
    missing = missing_binaries()
    require(not missing, f"rehearsal prerequisites ({', '.join(missing)})")
    require(os.geteuid() == 0, "root (the rehearsal binds sshd on a 127.x address)")
    ensure_images()
    inst = FakeInstance("127.0.0.77", tmp_path / "instance", aws_env=aws_env,
                        unit_dir=tmp_path / "systemd")
    with inst, moto_points_at(inst):
        yield inst


