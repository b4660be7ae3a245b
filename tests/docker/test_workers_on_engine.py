"""Synapse with workers on the real engine: the data path of the production runbook.

One module-scoped stack (tests/support/worker_stack.py), rendered by ``stack.workers``
with the default layout (2 sync, client reader, federation inbound and sender, event
persister, media repository, stream writer), real PostgreSQL and Redis (local images),
nginx with the generated map, and the one replacement: an nginx with a test CA's
certificate for the ALB. Against it: the route-map gate (and that it catches a path
mis-routed on purpose), the E2EE gate over HTTPS, and headless Chromium's secure-context
check. The stack publishes only on 127.0.0.1 (free ports); ``stack_lock()`` is held.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from elematrix_tui.actions.browser import NOT_POSSIBLE, SecureContext
from elematrix_tui.actions.matrix import Validate
from elematrix_tui.actions.matrix_routes import Routes, probe_routes
from elematrix_tui.engine.action import ActionFailed
from elematrix_tui.engine.standalone import StandaloneContext
from elematrix_tui.stack.workers import WORKER_HEADER
from tests.support.docker import need_chromium, stack_lock
from tests.support.worker_stack import (
    PUBLIC_HOST,
    SERVER_NAME,
    WorkerStack,
    media_s3,
    worker_stack,
)

pytestmark = pytest.mark.timeout(900)


def _worker_images() -> None:
    import importlib.util
    import sys

    from tests.support.docker import REPO

    spec = importlib.util.spec_from_file_location("elematrix_build_worker_images",
                                                  REPO / "scripts" / "build_worker_images.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    mod.ensure_worker_images()


@pytest.fixture(scope="module")
def stack(docker_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
          ) -> Iterator[WorkerStack]:
    t0 = time.monotonic()
    _worker_images()
    root = tmp_path_factory.mktemp("workers")
    t1 = time.monotonic()
    with stack_lock():
        t2 = time.monotonic()
        with media_s3() as s3, worker_stack(root, s3=s3) as st:
            st.s3 = s3
            print(f"worker stack: images {t1 - t0:.1f} s, lock wait {t2 - t1:.1f} s, "
                  f"up {st.up_seconds:.1f} s")
            yield st


def _routes(st: WorkerStack) -> dict[str, str]:
    return {r.route: r.answered_by for r in probe_routes(
        st.base_url, SERVER_NAME, st.layout, verify=str(st.ca.ca_pem)) if not r.passed}


def test_route_map_gate_passes(stack: WorkerStack, tmp_path: Path) -> None:
    ctx = StandaloneContext(deployment_dir=tmp_path)
    res = ctx.run(Routes(), {"base_url": stack.base_url, "server_name": SERVER_NAME,
                             "layout": stack.layout.model_dump(mode="json"),
                             "ca_file": str(stack.ca.ca_pem)})
    assert res.outputs["passed"], res.outputs
    got = res.outputs["routes"]
    assert got["sync"] in ("sync1", "sync2")
    assert got["typing"] == "writer1" and got["media"] == "media1"
    assert got["federation"] == "fedin1" and got["client"] == "client1"
    assert got["main"] == "main" and got["admin"] == ""


def test_route_map_gate_catches_a_misrouted_path(stack: WorkerStack, tmp_path: Path) -> None:
    conf = stack.dir / "nginx" / "default.conf"
    good = conf.read_text()
    # The typing endpoint sent to the client reader: it answers (any generic worker
    # can), so only the gate notices that the stream writer is bypassed.
    bad = good.replace("    typing synapse_stream_writer;", "    typing synapse_client_reader;")
    assert bad != good
    try:
        conf.write_text(bad)  # same inode: the bind mount sees it
        stack.compose("exec", "-T", "nginx", "nginx", "-s", "reload")
        time.sleep(1.0)
        ctx = StandaloneContext(deployment_dir=tmp_path)
        with pytest.raises(ActionFailed) as e:
            ctx.run(Routes(), {"base_url": stack.base_url, "server_name": SERVER_NAME,
                               "layout": stack.layout.model_dump(mode="json"),
                               "ca_file": str(stack.ca.ca_pem)})
        assert "typing: answered by client1, the map names writer1" in e.value.message
        assert _routes(stack) == {"typing": "client1"}
    finally:
        conf.write_text(good)
        stack.compose("exec", "-T", "nginx", "nginx", "-s", "reload")
        time.sleep(1.0)
    assert _routes(stack) == {}


def _federation(st: WorkerStack, tmp_path: Path) -> dict[str, object]:
    from elematrix_tui.actions.matrix_federation import Federation

    ctx = StandaloneContext(deployment_dir=tmp_path)
    return ctx.run(Federation(), {
        "server_name": SERVER_NAME, "connect": st.federation_connect,
        "ca_file": str(st.ca.ca_pem), "layout": st.layout.model_dump(mode="json")}).outputs


def test_federation_self_check_over_the_public_name(stack: WorkerStack, tmp_path: Path) -> None:
    """As another server: https://prod.test/.well-known/matrix/server (Synapse's
    serve_server_wellknown, through the edge and nginx) delegates to prod.test:443, whose
    certificate verifies for that name; the version endpoint is answered by the federation
    inbound worker; the signing keys pass the federation tester's checks; the client
    well-known names a base URL that answers."""
    out = _federation(stack, tmp_path)
    assert out["passed"] is True
    assert out["m.server"] == f"{SERVER_NAME}:443"
    assert out["version_answered_by"] == "fedin1"
    assert out["checks"] == {"WellKnownServer": True, "ValidCertificates": True,
                             "Version": True, "FederationInboundWorker": True,
                             "MatchingServerName": True, "FutureValidUntilTS": True,
                             "HasEd25519Key": True, "AllEd25519ChecksOK": True,
                             "WellKnownClient": True}
    assert str(out["server"]).startswith("Synapse 1.163.2")


def test_federation_self_check_catches_a_missing_delegation(stack: WorkerStack,
                                                            tmp_path: Path) -> None:
    """nginx no longer routing /.well-known/matrix/server to Synapse (Element's page
    answers it instead): other servers would dial 8448; the gate fails and says why."""
    conf = stack.dir / "nginx" / "default.conf"
    good = conf.read_text()
    bad = good.replace("location = /.well-known/matrix/server {",
                       "location = /.well-known/matrix/server-off {")
    assert bad != good
    try:
        conf.write_text(bad)
        stack.compose("exec", "-T", "nginx", "nginx", "-s", "reload")
        time.sleep(1.0)
        with pytest.raises(ActionFailed, match="WellKnownServer: HTTP"):
            _federation(stack, tmp_path)
    finally:
        conf.write_text(good)
        stack.compose("exec", "-T", "nginx", "nginx", "-s", "reload")
        time.sleep(1.0)
    assert _federation(stack, tmp_path)["passed"] is True


def test_edge_redirects_http_and_speaks_tls_only_with_the_ca(stack: WorkerStack) -> None:
    r = httpx.get(f"http://127.0.0.1:{stack.http_port}/_matrix/client/versions",
                  headers={"Host": PUBLIC_HOST})
    assert r.status_code == 301
    assert r.headers["location"] == f"https://{PUBLIC_HOST}/_matrix/client/versions"
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(stack.base_url + "/_matrix/client/versions")  # system CAs only
    import ssl

    r = httpx.get(stack.base_url + "/_matrix/client/versions",
                  verify=ssl.create_default_context(cafile=str(stack.ca.ca_pem)))
    assert r.status_code == 200 and r.headers[WORKER_HEADER] == "client1"


def test_e2ee_gate_over_https(stack: WorkerStack, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx (trust_env) and nio's aiohttp (OpenSSL's default paths) read SSL_CERT_FILE:
    # the test CA alone, so nothing else would be trusted either.
    monkeypatch.setenv("SSL_CERT_FILE", str(stack.ca.ca_pem))
    ctx = StandaloneContext(deployment_dir=tmp_path)
    res = ctx.run(Validate(), {
        "base_url": stack.base_url, "server_name": SERVER_NAME, "admin_url": stack.admin_url,
        "registration_shared_secret": stack.secrets["registration_shared_secret"],
        "max_upload_size_mb": 50, "timeout": 15, "total_timeout": 120})
    assert res.outputs["passed"], res.outputs


def _register(st: WorkerStack, user: str) -> str:
    """A user through the admin API (shared secret); its access token."""
    import hashlib
    import hmac
    import secrets

    url = st.admin_url + "/_synapse/admin/v1/register"
    nonce = httpx.get(url, timeout=10).json()["nonce"]
    password = secrets.token_urlsafe(16)
    mac = hmac.new(st.secrets["registration_shared_secret"].encode(),
                   b"\0".join([nonce.encode(), user.encode(), password.encode(), b"notadmin"]),
                   hashlib.sha1).hexdigest()
    r = httpx.post(url, json={"nonce": nonce, "username": user, "password": password,
                              "admin": False, "mac": mac}, timeout=10)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def test_events_are_written_by_the_event_persister(stack: WorkerStack) -> None:
    import ssl

    token = _register(stack, "persisted")
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=stack.base_url, headers=auth, timeout=15,
                      verify=ssl.create_default_context(cafile=str(stack.ca.ca_pem))) as c:
        room = c.post("/_matrix/client/v3/createRoom", json={}).json()["room_id"]
        sent = c.put(f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t1",
                     json={"msgtype": "m.text", "body": "persisted?"})
        assert sent.status_code == 200, sent.text
        assert sent.headers[WORKER_HEADER] == "client1"  # the event creator
    out = stack.compose("exec", "-T", "postgres", "psql", "-U", "synapse", "-d", "synapse",
                        "-tAc", "SELECT DISTINCT instance_name FROM events WHERE room_id = "
                        f"'{room}'").stdout.split()
    assert out == ["persister1"], out


def test_media_goes_to_s3_and_comes_back_without_the_local_copy(stack: WorkerStack) -> None:
    """Upload through the edge (to media1): with store_synchronous the object is in the
    bucket when the upload is answered, byte for byte; with the local copy removed from
    the media store, the download fetches it back from S3, identical. The media worker
    holds only the media policy of the instance role (moto enforces it)."""
    import os
    import ssl

    assert stack.s3 is not None
    token = _register(stack, "mediauser")
    blob = os.urandom(300_000)
    tls = ssl.create_default_context(cafile=str(stack.ca.ca_pem))
    with httpx.Client(base_url=stack.base_url, timeout=30, verify=tls,
                      headers={"Authorization": f"Bearer {token}"}) as c:
        up = c.post("/_matrix/media/v3/upload", params={"filename": "s3.bin"}, content=blob,
                    headers={"Content-Type": "application/octet-stream"})
        assert up.status_code == 200, up.text
        assert up.headers[WORKER_HEADER] == "media1"
        media_id = up.json()["content_uri"].removeprefix(f"mxc://{SERVER_NAME}/")
        # Synapse's layout of local media (synapse/media/filepath.py: local_media_filepath).
        key = f"local_content/{media_id[0:2]}/{media_id[2:4]}/{media_id[4:]}"
        s3 = stack.s3.client()
        assert s3.get_object(Bucket=stack.s3.bucket, Key=key)["Body"].read() == blob
        stack.compose("exec", "-T", "synapse-media1", "rm", f"/media_store/{key}")
        gone = stack.compose("exec", "-T", "synapse-media1", "test", "-e", f"/media_store/{key}",
                             check=False)
        assert gone.returncode == 1
        down = c.get(f"/_matrix/client/v1/media/download/{SERVER_NAME}/{media_id}")
        assert down.status_code == 200, down.text
        assert down.headers[WORKER_HEADER] == "media1"
        assert down.content == blob


def test_browser_secure_context_on_tls(stack: WorkerStack, tmp_path: Path) -> None:
    need_chromium()
    ctx = StandaloneContext(deployment_dir=tmp_path)
    res = ctx.run(SecureContext(), {
        "url": f"https://{PUBLIC_HOST}:{stack.tls_port}/",
        "resolve": {PUBLIC_HOST: "127.0.0.1"}, "ca_file": str(stack.ca.ca_pem)})
    assert res.outputs["verdict"] == "passed", res.outputs
    assert res.outputs["href"] == f"https://{PUBLIC_HOST}:{stack.tls_port}/"


def test_browser_without_the_ca_fails(stack: WorkerStack, tmp_path: Path) -> None:
    need_chromium()
    ctx = StandaloneContext(deployment_dir=tmp_path)
    with pytest.raises(ActionFailed, match="could not load"):
        ctx.run(SecureContext(), {"url": f"https://{PUBLIC_HOST}:{stack.tls_port}/",
                                  "resolve": {PUBLIC_HOST: "127.0.0.1"}})


def test_browser_on_plain_http_reports_not_possible(stack: WorkerStack, tmp_path: Path) -> None:
    """The POC's shape: the same Element page over http:// on a public (not loopback)
    name: a browser cannot do E2EE there, reported as the POC's limit, not a failure."""
    need_chromium()
    ctx = StandaloneContext(deployment_dir=tmp_path)
    res = ctx.run(SecureContext(), {"url": f"http://{PUBLIC_HOST}:{stack.plain_port}/",
                                    "resolve": {PUBLIC_HOST: "127.0.0.1"}})
    assert res.outputs["verdict"] == NOT_POSSIBLE
    assert res.outputs["secure_context"] is False
    with pytest.raises(ActionFailed, match="not a secure context"):
        ctx.run(SecureContext(), {"url": f"http://{PUBLIC_HOST}:{stack.plain_port}/",
                                  "resolve": {PUBLIC_HOST: "127.0.0.1"}, "require_secure": True})


def test_redis_is_tls_only_with_auth_and_every_process_replicates_over_it(
        stack: WorkerStack) -> None:
    """As ElastiCache with in-transit encryption and an AUTH token: a plaintext client is
    refused (there is no plaintext port), a TLS client without the token gets NOAUTH, a
    wrong token WRONGPASS; Synapse's processes are connected (over TLS: the only way in)
    and publish on the replication channel."""
    from elematrix_tui.stack.workers import REDIS_IMAGE, workers_of
    from tests.support.docker import docker
    from tests.support.worker_stack import REDIS_CA_IN_SYNAPSE

    ca = stack.dir / "synapse" / REDIS_CA_IN_SYNAPSE

    def cli(*args: str, auth: str = "") -> str:
        env = ["-e", f"REDISCLI_AUTH={auth}"] if auth else []
        proc = docker("run", "--rm", "--network", f"{stack.project}_default", *env,
                      "-v", f"{ca}:/ca.pem:ro", "--entrypoint", "redis-cli", REDIS_IMAGE,
                      "-h", "redis", "-p", "6379", *args, check=False)
        return proc.stdout + proc.stderr

    plain = cli("ping")
    assert "PONG" not in plain and "NOAUTH" not in plain, plain
    assert any(m in plain for m in ("reset by peer", "closed the connection", "I/O error")), plain
    assert "NOAUTH" in cli("--tls", "--cacert", "/ca.pem", "ping")
    assert "WRONGPASS" in cli("--tls", "--cacert", "/ca.pem", "ping", auth="not-the-token-x")
    token = stack.secrets["redis_password"]
    tls = ("--tls", "--cacert", "/ca.pem", "--no-auth-warning")
    assert cli(*tls, "config", "get", "port", auth=token).split() == ["port", "0"]
    clients = [c for c in cli(*tls, "client", "list", auth=token).splitlines()
               if "cmd=client" not in c]
    processes = 1 + len(workers_of(stack.layout))
    assert len(clients) >= processes, clients
    # Synapse subscribes to channels named after the server (replication/tcp/redis.py).
    assert SERVER_NAME in cli(*tls, "pubsub", "channels", auth=token).split()


def test_synapse_encrypts_to_redis_but_does_not_verify_its_certificate(
        stack: WorkerStack) -> None:
    """A limit of the pinned Synapse (docs/production-workers.md, "Redis over TLS"), held
    here so the docs change the day it does: its Redis TLS context
    (synapse/replication/tcp/context.py) loads redis.ca_file but keeps OpenSSL's
    VERIFY_NONE, so the certificate is not checked. Run in the image the stack runs."""
    from elematrix_tui.stack.workers import SYNAPSE_WORKERS_IMAGE
    from tests.support.docker import docker
    from tests.support.worker_stack import REDIS_CA_IN_SYNAPSE

    ca = stack.dir / "synapse" / REDIS_CA_IN_SYNAPSE
    code = ("from types import SimpleNamespace as N\n"
            "from OpenSSL import SSL\n"
            "from synapse.replication.tcp.context import ClientContextFactory\n"
            "c = ClientContextFactory(N(redis_certificate=None, redis_private_key=None,"
            " redis_ca_file='/ca.pem', redis_ca_path=None)).getContext()\n"
            "print(c.get_verify_mode() == SSL.VERIFY_NONE)\n")
    out = docker("run", "--rm", "-v", f"{ca}:/ca.pem:ro", "--entrypoint",
                 "/opt/synapse/bin/python", SYNAPSE_WORKERS_IMAGE, "-c", code).stdout
    assert out.strip() == "True", out


def test_redis_image_keeps_the_contract_and_is_not_kinder(docker_images: dict[str, str]) -> None:
    """The Redis stand-in: runs as redis (999) after the entrypoint's chown of /data; with no
    password it refuses another container (protected mode: stricter than upstream, which
    compiles it off); with requirepass it wants AUTH, as ElastiCache with an AUTH token."""
    import uuid

    from elematrix_tui.stack.workers import REDIS_IMAGE
    from tests.support.docker import docker

    _worker_images()
    tag = f"prod-workers-redis-{uuid.uuid4().hex[:8]}"
    docker("network", "create", tag)
    try:
        docker("run", "-d", "--name", f"{tag}-open", "--network", tag, REDIS_IMAGE)
        docker("run", "-d", "--name", f"{tag}-auth", "--network", tag, REDIS_IMAGE,
               "--requirepass", "s3cret-for-this-test")
        time.sleep(1.5)
        who = docker("exec", f"{tag}-open", "sh", "-c",
                     "stat -c %U /proc/1 /data").stdout.split()
        assert who == ["redis", "redis"], who

        def cli(host: str, *args: str) -> str:
            return docker("run", "--rm", "--network", tag, "--entrypoint", "redis-cli",
                          REDIS_IMAGE, "-h", host, *args, check=False).stdout

        assert "DENIED" in cli(f"{tag}-open", "ping")  # protected mode
        assert "NOAUTH" in cli(f"{tag}-auth", "ping")
        assert cli(f"{tag}-auth", "--no-auth-warning", "-a", "s3cret-for-this-test",
                   "ping").strip() == "PONG"
    finally:
        docker("rm", "-f", f"{tag}-open", f"{tag}-auth", check=False)
        docker("network", "rm", tag, check=False)
