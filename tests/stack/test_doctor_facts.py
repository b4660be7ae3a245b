"""The facts the start-order rules stand on, checked against the real programs.

EM015 warns only where a process really dies without its dependency, and EM021 calls an
unknown static upstream name fatal. These tests keep those claims true:
- Synapse (the real one, from .venv-synapse) exits 1 at start when PostgreSQL is not
  accepting connections;
- nginx (the real image, on the real Docker engine) refuses to start while a static
  upstream name does not resolve, and starts once that container is merely *started*
  (so ``depends_on`` without a health condition is enough for nginx).
Under CI=true a missing Synapse venv, Docker engine or image fails; elsewhere it skips.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml

from elematrix_tui.stack.values import IMAGES

from ..support.services import SYNAPSE_VENV, ServiceError, Synapse, free_port


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing")
    pytest.skip(f"{what} is missing")


def test_synapse_exits_when_postgres_is_not_up(tmp_path: Path) -> None:
    if not (SYNAPSE_VENV / "bin" / "python").exists():
        _missing(f"the Synapse venv ({SYNAPSE_VENV})")
    port = free_port()  # nothing listens there: PostgreSQL "not up yet"
    cfg = {
        "server_name": "facts.test", "pid_file": str(tmp_path / "hs.pid"),
        "listeners": [{"port": free_port(), "bind_addresses": ["127.0.0.1"], "type": "http",
                       "resources": [{"names": ["client"]}]}],
        "database": {"name": "psycopg2", "args": {
            "user": "synapse", "password": "x" * 24, "dbname": "synapse",
            "host": "127.0.0.1", "port": port, "cp_min": 1, "cp_max": 1}},
        "media_store_path": str(tmp_path / "media"),
        "signing_key_path": str(tmp_path / "signing.key"),
        "report_stats": False, "trusted_key_servers": [],
        "macaroon_secret_key": secrets.token_hex(16), "form_secret": secrets.token_hex(16),
    }
    path = tmp_path / "homeserver.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ServiceError, match="synapse exited 1") as e:
        Synapse(path, tmp_path).start(timeout=60)
    # ...because of the database, not of something else in this small config.
    assert "Error during initialisation" in str(e.value)
    assert "connection" in str(e.value).lower() and str(port) in str(e.value)


def _docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def test_nginx_needs_its_static_upstream_started_not_healthy(
        tmp_path: Path, docker_images: dict[str, str]) -> None:
    # docker_images: the session's engine and images (started/built when missing), so this
    # does not depend on an earlier test having started dockerd.
    image = IMAGES["nginx"]
    if _docker("image", "inspect", image).returncode != 0:
        _missing(f"the image {image}")
    tag = f"doctor-real-{secrets.token_hex(3)}"
    net, up = f"{tag}-net", f"{tag}-up"
    conf = tmp_path / "default.conf"
    conf.write_text(f"server {{ listen 80; location / {{ proxy_pass http://{up}:80; }} }}\n")
    conf.chmod(0o644)
    tmp_path.chmod(0o755)
    test = ["run", "--rm", "--network", net, "-v", f"{conf}:/etc/nginx/conf.d/default.conf:ro",
            image, "nginx", "-t"]
    assert _docker("network", "create", net).returncode == 0
    try:
        before = _docker(*test)
        assert before.returncode == 1
        assert f'host not found in upstream "{up}"' in before.stderr
        # Started, not healthy (no healthcheck at all): the name resolves.
        assert _docker("run", "-d", "--rm", "--name", up, "--network", net, image
                       ).returncode == 0
        after = _docker(*test)
        assert after.returncode == 0, after.stderr
    finally:
        _docker("rm", "-f", up)
        _docker("network", "rm", net)
