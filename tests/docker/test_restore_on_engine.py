"""A backup is proven by a restore: backup.sh, then restore.sh, on the real engine.

The bundled stack, rendered by the product's code, runs on the real engine (as in
test_stack_on_engine.py; ``stack_lock()`` held, the project name this test's own). A canary
is written through the real Synapse: a user, a room, a message, an image upload (Synapse
makes its thumbnails at upload), and one-time keys for the user's device. ``backup.sh`` runs
as on the instance, with the real AWS CLI against a moto server on loopback (the only
stand-in: S3; moto keeps the bytes as given). A message sent after the backup must NOT come
back. Then the stack goes down with its volumes (the disk is lost), comes up empty (Synapse
generates a new signing key), and ``restore.sh latest`` runs. Proven afterwards: the user
logs in with the same password, the canary event is back with the same id and body, the
media and its thumbnail are byte-identical, the signing key file is the same key, owned by
Synapse's uid, 0600 (the POC's listener serves no federation keys resource to ask), and ``e2e_one_time_keys_json`` is empty (Synapse's backup
guide). And a backup of another server_name is refused before anything is touched.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import struct
import subprocess
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from elematrix_tui.actions.matrix_http import registration_mac
from elematrix_tui.stack.render import render_stack
from elematrix_tui.stack.values import SECRET_NAMES
from tests.support.docker import compose, down, stack_lock
from tests.support.services import free_port

from ..conftest import ROOT, require

pytestmark = pytest.mark.timeout(900)

AWS_CLI = ROOT / ".tools" / "awscli" / "bin"
BUCKET = "restore-drill-backups"
SYNAPSE = "http://127.0.0.1:8008"  # published on loopback for the admin API (SSH tunnel)


def _png(width: int = 96, height: int = 64) -> bytes:
    """A real RGB PNG (Synapse's Pillow thumbnails it), made without Pillow."""
    # Each row: filter byte 0, then RGB per pixel.
    raw = b"".join(b"\x00" + b"".join(bytes((x * 2 % 256, y * 3 % 256, (x ^ y) % 256))
                                      for x in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


@pytest.fixture
def moto_s3() -> Iterator[dict[str, str]]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    try:
        yield env
    finally:
        server.stop()


def _script(stack: Path, name: str, env: dict[str, str], *args: str,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(stack / name), *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _client(token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=SYNAPSE, headers=headers, timeout=30)


def _register(secret: str, user: str, password: str) -> dict[str, Any]:
    with _client() as c:
        nonce = c.get("/_synapse/admin/v1/register").json()["nonce"]
        r = c.post("/_synapse/admin/v1/register", json={
            "nonce": nonce, "username": user, "password": password, "admin": False,
            "mac": registration_mac(secret, nonce, user, password, False)})
        assert r.status_code == 200, r.text
        return dict(r.json())


def _login(user: str, password: str) -> httpx.Response:
    with _client() as c:
        return c.post("/_matrix/client/v3/login", json={
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
            "password": password})


def _messages(token: str, room: str) -> list[dict[str, Any]]:
    with _client(token) as c:
        r = c.get(f"/_matrix/client/v3/rooms/{room}/messages",
                  params={"dir": "b", "limit": "50"})
        assert r.status_code == 200, r.text
        return [e for e in r.json()["chunk"] if e["type"] == "m.room.message"]


def _media(token: str, mxc: str, thumbnail: bool = False) -> httpx.Response:
    server, media_id = mxc.removeprefix("mxc://").split("/", 1)
    with _client(token) as c:
        if thumbnail:
            return c.get(f"/_matrix/client/v1/media/thumbnail/{server}/{media_id}",
                         params={"width": "32", "height": "32", "method": "scale"})
        return c.get(f"/_matrix/client/v1/media/download/{server}/{media_id}")


def _psql(stack: Path, project: str, sql: str) -> str:
    return compose(stack, project, "exec", "-T", "postgres", "psql", "-U", "synapse", "-d",
                   "synapse", "-tAc", sql).stdout.strip()


def _media_files(stack: Path, project: str) -> dict[str, str]:
    """sha256 of every file in the media store, by path (thumbnails included)."""
    out = compose(stack, project, "exec", "-T", "synapse", "sh", "-c",
                  "cd /media_store && find . -type f -exec sha256sum {} +").stdout
    return {ln.split(None, 1)[1]: ln.split(None, 1)[0] for ln in out.splitlines() if ln}


def _wait_health(timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if httpx.get(f"{SYNAPSE}/health", timeout=5).text == "OK":
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError("Synapse did not report healthy")


def test_backup_then_restore_brings_the_canary_back(docker_images: dict[str, str],
                                                    moto_s3: dict[str, str],
                                                    tmp_path: Path) -> None:
    require((AWS_CLI / "aws").exists(), "the AWS CLI (.tools/awscli, scripts/setup.sh --test)")
    import boto3

    boto3.client("s3", endpoint_url=moto_s3["AWS_ENDPOINT_URL"], region_name="us-east-1",
                 aws_access_key_id="testing", aws_secret_access_key="testing",
                 ).create_bucket(Bucket=BUCKET)
    port = free_port()
    stack_dir = tmp_path / "stack"
    values = {"server_name": "restore.test", "public_address": f"127.0.0.1:{port}",
              "http_port": port, "deployment": "restore-drill", "backup_bucket": BUCKET,
              "aws_region": "us-east-1", "remote_dir": str(stack_dir)}
    stack_secrets = {n: secrets.token_urlsafe(24).replace("-", "x") for n in SECRET_NAMES}
    stack = render_stack(values, stack_secrets, stack_dir).path
    for p in [stack / "synapse", *(stack / "synapse").rglob("*")]:
        os.chown(p, 991, 991)
    project = f"restore-drill-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **moto_s3, "COMPOSE_PROJECT_NAME": project,
           "PATH": f"{AWS_CLI}:{os.environ['PATH']}"}
    password = secrets.token_urlsafe(18)
    with stack_lock():
        try:
            compose(stack, project, "up", "-d", "--wait", "--wait-timeout", "240", timeout=300)
            user = _register(stack_secrets["registration_shared_secret"], "canary", password)
            token, device = user["access_token"], user["device_id"]
            with _client(token) as c:
                room = c.post("/_matrix/client/v3/createRoom",
                              json={"name": "canary room"}).json()["room_id"]
                body = f"canary {uuid.uuid4().hex}"
                event = c.put(f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t1",
                              json={"msgtype": "m.text", "body": body}).json()["event_id"]
                image = _png()
                mxc = c.post("/_matrix/media/v3/upload", content=image,
                             headers={"Content-Type": "image/png"},
                             params={"filename": "canary.png"}).json()["content_uri"]
                otks = {f"signed_curve25519:AAAA{i}": {"key": f"k{i}", "signatures": {}}
                        for i in range(5)}
                r = c.post("/_matrix/client/v3/keys/upload", json={"one_time_keys": otks})
                assert r.status_code == 200, r.text
            thumb = _media(token, mxc, thumbnail=True)
            assert thumb.status_code == 200 and thumb.content, thumb.text
            before_files = _media_files(stack, project)
            assert any("local_thumbnails" in p for p in before_files), before_files
            assert int(_psql(stack, project, "SELECT count(*) FROM e2e_one_time_keys_json")) == 5
            key_file = compose(stack, project, "exec", "-T", "synapse", "cat",
                               "/data/restore.test.signing.key").stdout

            backup = _script(stack, "backup.sh", env)
            assert backup.returncode == 0, backup.stderr
            listed = _script(stack, "restore.sh", env, "--list")
            assert listed.returncode == 0, listed.stderr
            [(prefix, size)] = [ln.split() for ln in listed.stdout.splitlines()]
            assert prefix.startswith("restore-drill/") and int(size) > len(image)
            with _client(token) as c:  # after the backup: must not survive the restore
                c.put(f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t2",
                      json={"msgtype": "m.text", "body": "after the backup"})

            # The disk is lost: volumes gone; the stack comes up empty (a new signing key).
            compose(stack, project, "down", "-v", "-t", "5", timeout=180)
            compose(stack, project, "up", "-d", "--wait", "--wait-timeout", "240", timeout=300)
            fresh_key = compose(stack, project, "exec", "-T", "synapse", "cat",
                                "/data/restore.test.signing.key").stdout
            assert fresh_key != key_file
            assert _login("canary", password).status_code == 403

            started = time.monotonic()
            restored = _script(stack, "restore.sh", env, "latest")
            rto = time.monotonic() - started
            assert restored.returncode == 0, restored.stdout + restored.stderr
            assert f"done from s3://{BUCKET}/{prefix}/" in restored.stdout
            _wait_health()

            login = _login("canary", password)
            assert login.status_code == 200, login.text
            token2 = login.json()["access_token"]
            events = _messages(token2, room)
            assert [(e["event_id"], e["content"]["body"]) for e in events] == [(event, body)]
            got = _media(token2, mxc)
            assert got.status_code == 200
            assert hashlib.sha256(got.content).digest() == hashlib.sha256(image).digest()
            assert _media(token2, mxc, thumbnail=True).content == thumb.content
            assert _media_files(stack, project) == before_files
            assert compose(stack, project, "exec", "-T", "synapse", "cat",
                           "/data/restore.test.signing.key").stdout == key_file
            owner = compose(stack, project, "exec", "-T", "synapse", "stat", "-c", "%u:%a",
                            "/data/restore.test.signing.key").stdout.strip()
            assert owner == "991:600"
            assert _psql(stack, project, "SELECT count(*) FROM e2e_one_time_keys_json") == "0"
            # The old device's access token came back with the database.
            assert _messages(token, room)[0]["event_id"] == event
            assert device
            print(f"restore.rto_s={rto:.1f}")

            # A backup of another server_name: refused before anything is touched.
            other_dir = tmp_path / "other"
            other = render_stack({**values, "server_name": "other.test",
                                  "remote_dir": str(other_dir)}, stack_secrets, other_dir).path
            refused = _script(other, "restore.sh", env, "latest")
            assert refused.returncode == 3, refused.stdout + refused.stderr
            assert "server_name 'restore.test'" in refused.stderr
            assert "nothing was changed" in refused.stderr
            bad = _script(stack, "restore.sh", env, "restore-drill/19990101T000000Z")
            assert bad.returncode == 2 and "not a complete backup" in bad.stderr
        finally:
            down(stack, project)
