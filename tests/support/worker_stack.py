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
import json
import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elematrix_tui.stack.values import IMAGES, SECRET_NAMES
from elematrix_tui.stack.workers import (
    REDIS_TLS_FILES,
    WORKER_SECRET_NAMES,
    WorkerLayout,
    worker_files,
    workers_of,
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


# The name the media worker dials for S3 in the rehearsal (extra_hosts: host-gateway).
# One label: moto takes the first label of a dotted host as a virtual-hosted bucket name
# (moto/s3/utils.py: bucket_name_from_url), so "s3.x.test" would address bucket "s3".
S3_HOST = "s3-rehearsal"
MEDIA_REGION = "us-east-1"


@dataclass
class MediaS3:
    """The rehearsal's S3: a moto server the media worker reaches, its bucket, and the
    keys of an IAM user holding exactly the instance role's media policy."""

    url: str  # for this process
    bucket: str
    key_id: str
    secret: str = field(repr=False)
    port: int = 0

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name=MEDIA_REGION,
                            aws_access_key_id=self.key_id, aws_secret_access_key=self.secret)

    def container_env(self) -> dict[str, str]:
        """The media worker's environment: boto3's endpoint variable and the IAM user's
        keys stand for the instance role (no key in Synapse's config either way)."""
        return {"AWS_ENDPOINT_URL_S3": f"http://{S3_HOST}:{self.port}",
                "AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_EC2_METADATA_DISABLED": "true"}


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
    # The rehearsal's S3 when the media worker stores there.
    s3: MediaS3 | None = None

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


def docker_gateway() -> str:
    """The host's address on Docker's default bridge: what ``host-gateway`` names."""
    from .docker import docker

    gw = docker("network", "inspect", "bridge", "-f",
                "{{range .IPAM.Config}}{{.Gateway}}{{end}}").stdout.strip()
    if not gw:
        raise AssertionError("docker's bridge network has no gateway address")
    return gw


@contextlib.contextmanager
def media_s3(bucket: str = "elematrix-prod-media-123456789012") -> Iterator[MediaS3]:
    """A moto server on the host's Docker bridge address (containers reach the host there;
    127.0.0.1 is each container's own), with the bucket, and moto's IAM enforcement on:
    only an identity with ``assets/aws/media-role-policy.json`` (the instance role's
    policy, for this bucket) can touch it; every request must be signed (SigV4)."""
    import json

    import boto3
    from moto.core.authorization import enable_iam_authentication
    from moto.server import ThreadedMotoServer

    from elematrix_tui.bundled import assets_dir

    gw = docker_gateway()
    server = ThreadedMotoServer(ip_address=gw, port=0, verbose=False)
    server.start()
    try:
        _host, port = server.get_host_and_port()
        url = f"http://{gw}:{port}"
        admin = {"endpoint_url": url, "region_name": MEDIA_REGION,
                 "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        boto3.client("s3", **admin).create_bucket(Bucket=bucket)
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="media-role")
        policy = (assets_dir() / "aws" / "media-role-policy.json").read_text().replace(
            "${bucket_arn}", f"arn:aws:s3:::{bucket}")
        json.loads(policy)
        iam.put_user_policy(UserName="media-role", PolicyName="media-bucket",
                            PolicyDocument=policy)
        key = iam.create_access_key(UserName="media-role")["AccessKey"]
        with enable_iam_authentication():
            yield MediaS3(url, bucket, key["AccessKeyId"], key["SecretAccessKey"], port)
    finally:
        server.stop()


@contextlib.contextmanager
def worker_stack(root: Path, layout: WorkerLayout | None = None,
                 prefix: str = "prod-workers",
                 s3: MediaS3 | None = None) -> Iterator[WorkerStack]:
    """Render, bring up (``up -d --wait``), yield, and bring down with its volumes."""
    tls_port, http_port, admin_port = free_port(), free_port(), free_port()
    plain_port = free_port()
    lay = (layout or WorkerLayout()).model_copy(update={
        "admin_port": admin_port, "publish_router": False,
        "public_baseurl": f"https://127.0.0.1:{tls_port}/",
        # As ElastiCache with in-transit encryption: TLS only, AUTH token required.
        "redis_tls": True, "redis_ca_file": "/config/" + REDIS_CA_IN_SYNAPSE,
        **({"media_bucket": s3.bucket, "media_region": MEDIA_REGION} if s3 else {})})
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
    override = edge_compose(IMAGES["nginx"], tls_port, http_port, plain_port)
    media = [w for w in workers_of(lay) if w.role == "media_repository"]
    if s3 and media:
        # The rehearsal's stand-in for the instance role and S3's endpoint, on the media
        # worker only (the one process with the media repository).
        env = "".join(f"      {k}: {json.dumps(v)}\n" for k, v in s3.container_env().items())
        override += (f"  {media[0].service}:\n    environment:\n{env}"
                     f"    extra_hosts:\n      - \"{S3_HOST}:host-gateway\"\n")
    (out / "docker-compose.edge.yml").write_text(override)
    st = WorkerStack(out, f"{prefix}-{uuid.uuid4().hex[:8]}", tls_port, http_port,
                     admin_port, plain_port, ca, lay, stack_secrets)
    try:
        t0 = time.monotonic()
        st.compose("up", "-d", "--wait", "--wait-timeout", "300", timeout=360)
        st.up_seconds = time.monotonic() - t0
        yield st
    finally:
        st.compose("down", "-v", "--remove-orphans", "-t", "5", check=False, timeout=180)


@contextlib.contextmanager
def bridge_forward(target_port: int) -> Iterator[int]:
    """A TCP forwarder on the Docker bridge's gateway address (what ``host-gateway`` names)
    to ``127.0.0.1:target_port``: the containers of a rehearsal reach the moto server the
    CLI talks to on loopback. It forwards to that one port and nothing else. Yields the
    forwarder's port."""
    import socket
    import threading

    gw = docker_gateway()
    listener = socket.create_server((gw, 0))
    listener.settimeout(0.5)
    stop = threading.Event()

    def pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", target_port), timeout=10)
            upstream.settimeout(None)
            client.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)
