"""Fixtures for the host-fact actions: the real sshd (tests/support/sshd.py) in front of the
real Docker engine (tests/support/docker.py), a compose project of our own on it.

The login user is ``ec2-user`` with passwordless sudo (the sshd fixture, as on AL2023);
every step here uses ``sudo: true`` as the runbook does. Projects are named
``hostfacts-<random>`` (this branch's prefix) and removed with their volumes at teardown.
``stack_lock()`` is held while a project is up (the brief's rule for the one engine).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from elematrix_tui.engine.standalone import StandaloneContext
from tests.ssh.conftest import _require_sshd
from tests.support.docker import engine, stack_lock
from tests.support.sshd import SshServer

# Images the engine has (tests/support/docker.py ensure_images builds them when missing).
NGINX = "nginx:1.27.3-alpine"
POSTGRES = "postgres:15.10-alpine"


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    _require_sshd()
    with SshServer() as srv:
        yield srv


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[StandaloneContext]:
    c = StandaloneContext(deployment_dir=tmp_path / "deployment")
    c.deployment_dir.mkdir()
    yield c
    c.close()


def have_image(ref: str) -> None:
    r = subprocess.run(["docker", "image", "inspect", ref], capture_output=True)
    if r.returncode != 0:
        from tests.support.docker import ensure_images

        ensure_images()


class Project:
    """A compose project directory the SSH user can enter (pytest's tmp dirs are 0700)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hostfacts-"))
        os.chmod(self.dir, 0o755)
        self.name = f"hostfacts-{secrets.token_hex(4)}"

    def write(self, body: str) -> None:
        (self.dir / "docker-compose.yml").write_text(f"name: {self.name}\n{body}")

    def compose(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["docker", "compose", *args], cwd=self.dir, capture_output=True,
                              text=True, timeout=300)

    def container_id(self, service: str) -> str:
        return self.compose("ps", "-aq", service).stdout.strip()

    def remove(self) -> None:
        self.compose("down", "-v", "-t", "1", "--remove-orphans")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def project() -> Iterator[Project]:
    engine()
    have_image(NGINX)
    p = Project()
    with stack_lock():
        try:
            yield p
        finally:
            p.remove()
