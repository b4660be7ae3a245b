"""The local images are as strict as the upstream ones they stand in for.

Upstream behaviour copied, and where it is written (docs/test-images.md has the table):

- matrixdotorg/synapse ``docker/start.py``: run mode never chowns ``/data``; as root it
  execs Synapse through ``gosu 991:991``. A named volume on ``/data`` starts root-owned,
  so Synapse cannot write its signing key there: PermissionError, exit 1. A compose file
  that chowns ``/data`` to 991 before ``/start.py`` starts.
- postgres ``docker-entrypoint.sh``: only an EMPTY data directory is initialised; an
  existing one keeps its locale whatever POSTGRES_INITDB_ARGS say now; no
  POSTGRES_PASSWORD (and no trust) refuses to initialise.

These compose files are this test's own (not the rendered stack): no published ports, a
project name of this branch, brought down with their volumes.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import yaml

from elematrix_tui.stack.values import IMAGES
from tests.support.docker import compose, docker, down

_HOMESERVER = {
    "server_name": "strict.test",
    "pid_file": "/data/homeserver.pid",
    "signing_key_path": "/data/strict.test.signing.key",
    "media_store_path": "/data/media",
    "report_stats": False,
    "listeners": [{"port": 8008, "type": "http", "tls": False, "x_forwarded": True,
                   "bind_addresses": ["0.0.0.0"],
                   "resources": [{"names": ["client"], "compress": False}]}],
    "database": {"name": "sqlite3", "args": {"database": "/data/homeserver.db"}},
    "registration_shared_secret": "tstStrictRegSecretQ7w2E9r4T6y1U3",
    "macaroon_secret_key": "tstStrictMacaroonZ4x8C2v6B9n1M3k",
    "form_secret": "tstStrictFormA1s5D9f3G7h2J6k4L8q",
    "trusted_key_servers": [],
    "enable_metrics": False,
}

# A cold image build (first run without scripts/setup.sh) happens in the first test's
# fixture setup: about 4-5 minutes on a 2-core machine, more than the suite's default.
pytestmark = pytest.mark.timeout(900)

# Single containers need no network (the checks run inside them, on their loopback); it
# also keeps them off the engine's default bridge, which this machine's other work shares.
NO_NET = ("--network", "none")


def _synapse_project(tmp_path: Path, entrypoint: list[str] | None) -> Path:
    d = tmp_path / "proj"
    (d / "config").mkdir(parents=True)
    (d / "config" / "homeserver.yaml").write_text(yaml.safe_dump(_HOMESERVER))
    (d / "config").chmod(0o755)
    (d / "config" / "homeserver.yaml").chmod(0o644)
    service: dict[str, object] = {
        "image": IMAGES["synapse"],
        "environment": {"SYNAPSE_CONFIG_PATH": "/config/homeserver.yaml"},
        "volumes": ["./config:/config:ro", "synapse-data:/data"],
        "healthcheck": {"test": ["CMD", "curl", "-fSs", "http://localhost:8008/health"],
                        "interval": "2s", "timeout": "5s", "retries": 30,
                        "start_period": "60s"},
    }
    if entrypoint is not None:
        service["entrypoint"] = entrypoint
    (d / "docker-compose.yml").write_text(yaml.safe_dump(
        {"services": {"synapse": service}, "volumes": {"synapse-data": {}}}))
    return d


def _project() -> str:
    return f"docker-images-strict-{uuid.uuid4().hex[:8]}"


def _container(d: Path, project: str) -> str:
    return compose(d, project, "ps", "-a", "-q", "synapse").stdout.strip()


def test_root_owned_data_makes_synapse_exit_with_permission_error(
        docker_images: dict[str, str], tmp_path: Path) -> None:
    d = _synapse_project(tmp_path, entrypoint=None)
    project = _project()
    try:
        compose(d, project, "up", "-d", "--no-start")
        compose(d, project, "start", check=False)
        cid = _container(d, project)
        code = int(docker("wait", cid, timeout=120).stdout.strip())
        logs = docker("logs", cid).stderr + docker("logs", cid).stdout
        assert code != 0, logs
        assert "PermissionError" in logs and "/data/strict.test.signing.key" in logs, logs
        # It ran as 991:991 (gosu), not as root, and nothing chowned the volume.
        assert "Starting synapse with args" in logs
        owner = docker("run", "--rm", *NO_NET, "--entrypoint", "stat", "-v",
                       f"{project}_synapse-data:/data", IMAGES["synapse"], "-c", "%u:%g",
                       "/data").stdout.strip()
        assert owner == "0:0"
    finally:
        down(d, project)


def test_chowning_data_first_makes_synapse_start(docker_images: dict[str, str],
                                                 tmp_path: Path) -> None:
    d = _synapse_project(tmp_path, ["/bin/sh", "-c", "chown 991:991 /data && exec /start.py"])
    project = _project()
    try:
        compose(d, project, "up", "-d", "--wait", timeout=240)
        cid = _container(d, project)
        out = docker("exec", cid, "curl", "-fsS", "http://localhost:8008/health").stdout
        assert out.strip() == "OK"
        stat = docker("exec", cid, "stat", "-c", "%u:%g",
                      "/data/strict.test.signing.key").stdout.strip()
        assert stat == "991:991"
        # Synapse itself runs as 991 (gosu), not root.
        assert docker("exec", cid, "sh", "-c",
                      "stat -c %u /proc/1").stdout.strip() == "991"
    finally:
        down(d, project)


# --- postgres ----------------------------------------------------------------------


def _pg_run(volume: str, name: str, *env: str) -> str:
    args = ["run", "-d", *NO_NET, "--name", name, "-v", f"{volume}:/var/lib/postgresql/data"]
    for e in env:
        args += ["-e", e]
    return docker(*args, IMAGES["postgres"]).stdout.strip()


def _pg_ready(name: str, timeout: float = 60.0) -> None:
    # Over TCP: the entrypoint's init server listens on the socket only, so an answer on
    # 127.0.0.1 comes from the final server.
    deadline = time.monotonic() + timeout
    while docker("exec", name, "pg_isready", "-h", "127.0.0.1", "-U", "synapse",
                 check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} not ready: {docker('logs', name, check=False)}")
        time.sleep(0.5)


def _locale(name: str) -> list[str]:
    out = docker("exec", name, "psql", "-U", "synapse", "-d", "synapse", "-Atc",
                 "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM "
                 "pg_database WHERE datname = current_database()").stdout.strip()
    return out.split("|")


def test_postgres_existing_volume_keeps_its_locale(docker_images: dict[str, str]) -> None:
    tag = uuid.uuid4().hex[:8]
    volume, first, second = (f"docker-images-pg-{tag}", f"docker-images-pg1-{tag}",
                             f"docker-images-pg2-{tag}")
    common = ("POSTGRES_USER=synapse", "POSTGRES_DB=synapse",
              "POSTGRES_PASSWORD=tstPgPasswordP0o9I8u7Y6t5R4e3W2")
    try:
        _pg_run(volume, first, *common,
                "POSTGRES_INITDB_ARGS=--encoding=UTF8 --lc-collate=C.UTF-8 --lc-ctype=C.UTF-8")
        _pg_ready(first)
        assert _locale(first) == ["UTF8", "C.UTF-8", "C.UTF-8"]
        hba = docker("exec", first, "tail", "-n", "1",
                     "/var/lib/postgresql/data/pg_hba.conf").stdout.strip()
        assert hba == "host all all all scram-sha-256"
        # Listening on all addresses (the image's sample config), so other containers reach it.
        listen = docker("exec", first, "psql", "-U", "synapse", "-d", "synapse", "-Atc",
                        "SHOW listen_addresses").stdout.strip()
        assert listen == "*"
        # The server runs as the tag's postgres user (uid 70 for -alpine), data dir 0700.
        uid = "70" if "alpine" in IMAGES["postgres"] else "999"
        assert docker("exec", first, "stat", "-c", "%u:%g %a",
                      "/var/lib/postgresql/data").stdout.strip() == f"{uid}:{uid} 700"
        assert docker("exec", first, "stat", "-c", "%u",
                      "/proc/1").stdout.strip() == uid
        docker("stop", "-t", "20", first)
        docker("rm", first)
        # What Synapse would need: the same volume, new INITDB_ARGS. They are ignored.
        _pg_run(volume, second, *common,
                "POSTGRES_INITDB_ARGS=--encoding=UTF8 --lc-collate=C --lc-ctype=C")
        _pg_ready(second)
        assert "Skipping initialization" in docker("logs", second).stdout
        assert _locale(second) == ["UTF8", "C.UTF-8", "C.UTF-8"]
    finally:
        docker("rm", "-f", "-v", first, second, check=False)
        docker("volume", "rm", volume, check=False)


def test_postgres_without_password_refuses(docker_images: dict[str, str]) -> None:
    name = f"docker-images-pgnopw-{uuid.uuid4().hex[:8]}"
    try:
        proc = docker("run", *NO_NET, "--name", name, "-e", "POSTGRES_USER=synapse",
                      IMAGES["postgres"], check=False, timeout=60)
        assert proc.returncode == 1
        assert "superuser password is not specified" in proc.stderr
        info = json.loads(docker("inspect", name).stdout)[0]
        assert info["State"]["ExitCode"] == 1
    finally:
        # -v: the anonymous volume the image's VOLUME made goes with the container.
        docker("rm", "-f", "-v", name, check=False)


@pytest.mark.parametrize("key", ["nginx", "element"])
def test_nginx_images_have_busybox_wget_and_reload(docker_images: dict[str, str],
                                                   key: str) -> None:
    name = f"docker-images-{key}-{uuid.uuid4().hex[:8]}"
    try:
        docker("run", "-d", *NO_NET, "--name", name, IMAGES[key])
        deadline = time.monotonic() + 30
        while docker("exec", name, "wget", "-q", "-O", "/dev/null",
                     "http://127.0.0.1:80/", check=False).returncode != 0:
            assert time.monotonic() < deadline, docker("logs", name, check=False).stderr
            time.sleep(0.3)
        assert docker("exec", name, "nginx", "-t", check=False).returncode == 0
        assert docker("exec", name, "nginx", "-s", "reload", check=False).returncode == 0
        assert "BusyBox" in docker("exec", name, "wget", "--help", check=False).stderr
        user = "nginx" if key == "element" else "root"
        assert docker("exec", name, "id", "-un").stdout.strip() == user
        assert docker("exec", name, "id", "-u", "nginx").stdout.strip() == "101"
    finally:
        docker("rm", "-f", "-v", name, check=False)


def test_element_listens_on_element_web_port(docker_images: dict[str, str]) -> None:
    """element-web's template: the port comes from ELEMENT_WEB_PORT, as USER nginx."""
    name = f"docker-images-elport-{uuid.uuid4().hex[:8]}"
    try:
        docker("run", "-d", *NO_NET, "--name", name, "-e", "ELEMENT_WEB_PORT=8081",
               IMAGES["element"])
        deadline = time.monotonic() + 30
        while docker("exec", name, "wget", "-q", "-O", "/dev/null",
                     "http://127.0.0.1:8081/config.json", check=False).returncode != 0:
            assert time.monotonic() < deadline, docker("logs", name, check=False).stderr
            time.sleep(0.3)
        assert docker("exec", name, "wget", "-q", "-O", "/dev/null",
                      "http://127.0.0.1:80/config.json", check=False).returncode != 0
        version = docker("exec", name, "wget", "-q", "-O", "-",
                         "http://127.0.0.1:8081/version").stdout.strip()
        assert version == IMAGES["element"].rsplit(":v", 1)[-1]
    finally:
        docker("rm", "-f", "-v", name, check=False)


def test_synapse_generate_mode_chowns_data(docker_images: dict[str, str]) -> None:
    """start.py's generate mode (unlike run mode) chowns /data, then writes the config."""
    volume = f"docker-images-gen-{uuid.uuid4().hex[:8]}"
    try:
        docker("run", "--rm", *NO_NET, "-v", f"{volume}:/data",
               "-e", "SYNAPSE_SERVER_NAME=gen.test", "-e", "SYNAPSE_REPORT_STATS=no",
               IMAGES["synapse"], "generate", timeout=180)
        out = docker("run", "--rm", *NO_NET, "--entrypoint", "stat", "-v", f"{volume}:/data",
                     IMAGES["synapse"], "-c", "%n %u:%g", "/data", "/data/homeserver.yaml",
                     "/data/gen.test.signing.key").stdout.split("\n")
        assert out[:3] == ["/data 991:991", "/data/homeserver.yaml 991:991",
                           "/data/gen.test.signing.key 991:991"], out
    finally:
        docker("volume", "rm", volume, check=False)
