"""A Synapse worker stack on the real engine, rendered by ``stack.workers``, behind the TLS
edge that stands in for the ALB (tests/support/tls_edge.py).

Used by tests/docker/test_workers_on_engine.py (one module-scoped stack) and by
``python bench/run.py capacity``. Everything but the edge is the product's rendering as
it is; the steps taken by hand are the deploy phase's (chown of ./synapse to 991 and of
./redis to the redis image's 999). Published: only the edge, on 127.0.0.1:<free ports>,
and the main process's admin listener on 127.0.0.1:<free port>; nothing on 8008.
The caller holds ``stack_lock()`` while it is up.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from elematrix_tui.stack.values import IMAGES, SECRET_NAMES
from elematrix_tui.stack.workers import (
    REDIS_TLS_FILES,
    WORKER_SECRET_NAMES,
    WorkerLayout,
    worker_files,
    write_worker_stack,
)

from .services import free_port
from .tls_edge import EDGE_CONF, TestCA, edge_compose, make_ca

SERVER_NAME = "prod.test"
# The public name a browser uses (resolved to 127.0.0.1 by Chromium's own rule): not a
# loopback name, so plain HTTP to it is not a secure context, as on the real POC.
PUBLIC_HOST = "matrix.prod.test"
# The Redis CA, relative to the stack's synapse/ directory (/config in the containers).
REDIS_CA_IN_SYNAPSE = "tls/redis-ca.pem"


@dataclass
class WorkerStack:
    """Where a running worker stack answers and what it was rendered with."""

    dir: Path
    project: str
    tls_port: int
    http_port: int
    admin_port: int
    # The same nginx over plain HTTP (the POC's shape), for the browser check.
    plain_port: int
    ca: TestCA
    layout: WorkerLayout
    secrets: dict[str, str] = field(repr=False, default_factory=dict)
    # How long `compose up --wait` took.
    up_seconds: float = 0.0

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"

    @property
    def federation_connect(self) -> dict[str, str]:
        """Where another server dialling <server_name>:443 reaches the edge here."""
        return {f"{SERVER_NAME}:443": f"127.0.0.1:{self.tls_port}"}

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def compose(self, *args: str, timeout: float = 300.0,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """``docker compose`` on the stack (with the edge override)."""
        cmd = ["docker", "compose", "-p", self.project, "-f", "docker-compose.yml",
               "-f", "docker-compose.edge.yml", *args]
        proc = subprocess.run(cmd, cwd=self.dir, capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}")
        return proc


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for p in root.rglob("*"):
        os.chown(p, uid, gid)


@contextlib.contextmanager
def worker_stack(root: Path, layout: WorkerLayout | None = None,
                 prefix: str = "prod-workers") -> Iterator[WorkerStack]:
    """Render, bring up (``up -d --wait``), yield, and bring down with its volumes."""
    tls_port, http_port, admin_port = free_port(), free_port(), free_port()
    plain_port = free_port()
    lay = (layout or WorkerLayout()).model_copy(update={
        "admin_port": admin_port, "publish_router": False,
        "public_baseurl": f"https://127.0.0.1:{tls_port}/",
        # As ElastiCache with in-transit encryption: TLS only, AUTH token required.
        "redis_tls": True, "redis_ca_file": "/config/" + REDIS_CA_IN_SYNAPSE})
    stack_secrets = {n: secrets.token_urlsafe(24).replace("-", "x")
                     for n in (*SECRET_NAMES, *WORKER_SECRET_NAMES)}
    values = {"server_name": SERVER_NAME, "public_address": f"127.0.0.1:{tls_port}",
              "deployment": "prod-workers", "federation": True}
    out = write_worker_stack(worker_files(values, stack_secrets, lay), root / "stack")
    # The Redis container's certificate from a CA of its own (the name Synapse dials:
    # "redis"); Synapse gets that CA as redis.ca_file.
    rca = make_ca(out / "redis" / "tls", ("redis",), ips=())
    assert (rca.server_crt.relative_to(out).as_posix(),
            rca.server_key.relative_to(out).as_posix()) == REDIS_TLS_FILES
    rca.server_key.chmod(0o600)
    (out / "synapse" / REDIS_CA_IN_SYNAPSE).parent.mkdir(parents=True, exist_ok=True)
    rca.ca_pem.replace(out / "synapse" / REDIS_CA_IN_SYNAPSE)
    _chown_tree(out / "synapse", 991, 991)
    if (out / "redis").is_dir():
        _chown_tree(out / "redis", 999, 999)
    # The server name too: federation's well-known is fetched at https://<server_name>/.
    ca = make_ca(out / "edge" / "tls", (PUBLIC_HOST, SERVER_NAME, "localhost"))
    ca_pem = root / "ca.pem"
    ca_pem.write_bytes(ca.ca_pem.read_bytes())
    (out / "edge" / "tls" / "ca.pem").unlink()  # the edge holds no CA key or cert it needs
    ca = TestCA(ca_pem, ca.server_crt, ca.server_key)
    (out / "edge" / "default.conf").write_text(EDGE_CONF % {"max_body": "50M"})
    (out / "docker-compose.edge.yml").write_text(edge_compose(IMAGES["nginx"], tls_port,
                                                              http_port, plain_port))
    st = WorkerStack(out, f"{prefix}-{uuid.uuid4().hex[:8]}", tls_port, http_port,
                     admin_port, plain_port, ca, lay, stack_secrets)
    try:
        t0 = time.monotonic()
        st.compose("up", "-d", "--wait", "--wait-timeout", "300", timeout=360)
        st.up_seconds = time.monotonic() - t0
        yield st
    finally:
        st.compose("down", "-v", "--remove-orphans", "-t", "5", check=False, timeout=180)
