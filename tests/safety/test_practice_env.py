"""Issue 20 (lower item): practice clears every setting that could send its AWS calls to
anything but its own emulator (per-service endpoint variables, a profile, the operator's
config files), and says so. The real ``elematrix practice --headless``, with the Docker
engine hidden (DOCKER_HOST to nothing) so it stops before deploy."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from .conftest import cli


def _dead_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(900)
def test_practice_ignores_foreign_endpoint_overrides(elematrix: str, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{_dead_port()}"
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "config").write_text(f"[default]\nendpoint_url = {dead}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("ELEMATRIX_SECRET_STORE", None)
    env.update({"HOME": str(home), "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
                "AWS_ENDPOINT_URL_EC2": dead, "AWS_ENDPOINT_URL_STS": dead,
                "AWS_ENDPOINT_URL_IAM": dead, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true",
                "AWS_PROFILE": "someone-else",
                "AWS_CONFIG_FILE": str(home / ".aws" / "config")})
    res = cli(elematrix, "practice", "--headless", env=env, timeout=800)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    for name in ("AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL_IAM", "AWS_ENDPOINT_URL_STS",
                 "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        assert name in out.split("for practice")[0], out[:2000]
    assert "every AWS call goes to the emulator" in out
