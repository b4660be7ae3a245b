"""A real Synapse starts from the rendered homeserver.yaml, behind the rendered nginx.

Issue 4 'Done when': the rendered config is adapted ONLY as docker compose would map it
(service names -> 127.0.0.1 and their ports, container paths -> the volumes' directories,
the listener's 0.0.0.0:8008 -> a loopback port); the test asserts those are the only
lines that differ. PostgreSQL is initialised with the POSTGRES_INITDB_ARGS of the rendered
compose file (so a wrong template would fail here on Synapse's collation check), and the
signing key is NOT pre-created: Synapse must generate it on the data volume.

Launchers: PostgreSQL and nginx from tests/support/services.py; Synapse is started here
(services.Synapse pre-writes a signing key, which would hide what this test checks).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import require
from tests.support.services import (
    SYNAPSE_VENV,
    Nginx,
    Postgres,
    free_port,
    missing_binaries,
    nginx_main_conf,
)

from .conftest import PARAM_SETS, SECRETS, render

pytestmark = pytest.mark.services


def _compose_map(text: str, *, pg_port: int, syn_port: int, data: Path, media: Path,
                 config: Path) -> str:
    """What the compose file's network and volumes do to homeserver.yaml, as text edits."""
    text = re.sub(r"^(\s+host:) postgres$", r"\1 127.0.0.1", text, flags=re.M)
    text = re.sub(r"^(\s+port:) 5432$", rf"\1 {pg_port}", text, flags=re.M)
    text = re.sub(r"^(\s+- port:) 8008$", rf"\1 {syn_port}", text, flags=re.M)
    text = text.replace('bind_addresses: ["0.0.0.0"]', 'bind_addresses: ["127.0.0.1"]')
    text = re.sub(r"(?<![\w/])/data/", f"{data}/", text)
    text = re.sub(r"(?<![\w/])/media_store\b", str(media), text)
    return re.sub(r"(?<![\w/])/config/", f"{config}/", text)


@contextlib.contextmanager
def _synapse(config: Path, workdir: Path, port: int, timeout: float = 90) -> Iterator[str]:
    log_path = workdir / "synapse.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [str(SYNAPSE_VENV / "bin" / "python"), "-m", "synapse.app.homeserver",
             "-c", str(config)], cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"synapse exited {proc.returncode}:\n"
                            f"{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"synapse /health not 200 after {timeout}s:\n"
                            f"{log_path.read_text()[-4000:]}")
            time.sleep(0.1)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _nginx_conf(conf: str, *, port: int, syn_port: int, element_port: int, well_known: Path,
                www: Path) -> str:
    """The rendered nginx server, mapped like compose would, plus an 'element' stand-in."""
    conf = re.sub(r"listen 80 default_server;", f"listen 127.0.0.1:{port} default_server;", conf)
    conf = re.sub(r"^\s*listen \[::\]:80 default_server;\n", "", conf, flags=re.M)
    conf = conf.replace("http://synapse:8008", f"http://127.0.0.1:{syn_port}")
    conf = conf.replace("http://element:80", f"http://127.0.0.1:{element_port}")
    conf = conf.replace("/var/www/well-known", str(well_known))
    # The element container is itself a static web server: this stands in for it.
    return conf + (f"\nserver {{\n    listen 127.0.0.1:{element_port};\n"
                   f"    root {www};\n}}\n")


@pytest.mark.parametrize("params_name", ["default", "unusual"])
def test_rendered_synapse_and_nginx_serve(params_name: str, tmp_path: Path) -> None:
    missing = missing_binaries()
    require(not missing, ", ".join(missing))
    params: dict[str, Any] = dict(PARAM_SETS[params_name])
    stack = render(tmp_path, params).path
    server_name = params["server_name"]

    # PostgreSQL as the postgres image would make it, from the rendered compose file.
    compose = yaml.safe_load((stack / "docker-compose.yml").read_text())
    pg_env = compose["services"]["postgres"]["environment"]
    # data_dir=None: a directory of its own the postgres user can enter (pytest's are 0700).
    pg = Postgres(None, initdb_args=pg_env["POSTGRES_INITDB_ARGS"].split()).start()
    try:
        user, db = pg_env["POSTGRES_USER"], pg_env["POSTGRES_DB"]
        pg.psql(f"CREATE ROLE \"{user}\" LOGIN PASSWORD '{SECRETS['postgres_password']}'")
        # No locale given: the cluster's defaults from initdb, as the image does it.
        pg.psql(f'CREATE DATABASE "{db}" OWNER "{user}"')
        assert pg.psql("SELECT pg_encoding_to_char(encoding) || '/' || datcollate || '/' || "
                       "datctype FROM pg_database WHERE datname = current_database()",
                       db=db) == "UTF8/C/C"

        # Volumes: synapse-data at /data, synapse-media at /media_store, ./synapse at /config.
        data, media, work = tmp_path / "vol-data", tmp_path / "vol-media", tmp_path / "work"
        for d in (data, media, work):
            d.mkdir()
        syn_port = free_port()
        original = (stack / "synapse" / "homeserver.yaml").read_text()
        mapped = _compose_map(original, pg_port=pg.port, syn_port=syn_port, data=data,
                              media=media, config=stack / "synapse")
        changed = [ln for ln in difflib.unified_diff(original.splitlines(), mapped.splitlines(),
                                                     lineterm="", n=0)
                   if ln.startswith("-") and not ln.startswith(("---", "-#"))]
        # Exactly: db host, db port, listener port, bind address, pid, signing key, media,
        # log config (comments aside). Nothing else is touched.
        assert len(changed) == 8, changed
        config = work / "homeserver.yaml"
        config.write_text(mapped)
        config.chmod(0o600)
        key = data / f"{server_name}.signing.key"
        assert not key.exists()

        with _synapse(config, work, syn_port) as syn_url:
            assert key.exists() and key.read_text().startswith("ed25519 "), \
                "Synapse generated its signing key on the data volume"
            www = tmp_path / "www"
            www.mkdir()
            (www / "config.json").write_text((stack / "element" / "config.json").read_text())
            ng_port, el_port = free_port(), free_port()
            prefix = tmp_path / "nginx"
            prefix.mkdir()
            server_conf = prefix / "server.conf"
            server_conf.write_text(_nginx_conf(
                (stack / "nginx" / "default.conf").read_text(), port=ng_port,
                syn_port=syn_port, element_port=el_port,
                well_known=stack / "nginx" / "well-known", www=www))
            (prefix / "nginx.conf").write_text(nginx_main_conf(prefix, server_conf))
            ng = Nginx(prefix / "nginx.conf", prefix, ng_port).start()
            try:
                _check_through_nginx(f"http://127.0.0.1:{ng_port}", syn_url, server_name,
                                     params)
            finally:
                ng.stop()
    finally:
        pg.stop()


def _check_through_nginx(base: str, syn_url: str, server_name: str,
                         params: dict[str, Any]) -> None:
    with httpx.Client(base_url=base, timeout=10) as c:
        r = c.get("/_matrix/client/versions")
        assert r.status_code == 200 and "versions" in r.json()

        r = c.get("/.well-known/matrix/client")
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "*"
        assert r.headers["content-type"].startswith("application/json")
        assert r.json() == {"m.homeserver": {"base_url": f"http://{params['public_address']}"}}

        # Element (the stand-in serves the rendered config.json) at /.
        r = c.get("/config.json")
        assert r.status_code == 200 and r.json()["brand"] == params.get("brand", "Element")

        # The admin API answers on Synapse itself (the SSH forward) but not through nginx.
        assert httpx.get(syn_url + "/_synapse/admin/v1/server_version").status_code == 200
        assert c.get("/_synapse/admin/v1/server_version").status_code == 404

        # proxy_pass without a path: %2F and %3A reach Synapse undecoded (FACTS.md probe).
        r = c.get(f"/_matrix/client/v3/directory/room/%23probe%2Fx%3A{server_name}")
        assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND", r.text

        # Invite-only registration: open, but a registration token is required.
        r = c.post("/_matrix/client/v3/register", json={"username": "probe", "password": "x"})
        assert r.status_code == 401, r.text
        stages = {s for f in r.json()["flows"] for s in f["stages"]}
        assert "m.login.registration_token" in stages

        # A 2 MiB upload reaches Synapse (401: no token), not nginx's 1 MB default 413.
        r = c.post("/_matrix/media/v3/upload", content=b"x" * (2 * 1024 * 1024),
                   headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"

        # Synapse built its URLs from public_baseurl (http, the public address).
        wk = httpx.get(syn_url + "/.well-known/matrix/client")
        if wk.status_code == 200:
            assert json.loads(wk.text)["m.homeserver"]["base_url"].startswith("http://")
