"""A real nginx on loopback with a tiny config covering every http.check outcome."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from elematrix_tui.engine.standalone import StandaloneContext
from tests.support.services import NGINX_BIN, Nginx, free_port, nginx_main_conf

SERVER = """
server {
    listen 127.0.0.1:%(port)d;
    server_name localhost;
    client_max_body_size 1k;
    default_type text/html;

    location = / { add_header X-Frame-Options SAMEORIGIN; return 200 "<html>element</html>"; }
    location = /to-https { return 301 https://matrix.example.test/; }
    location = /elsewhere { return 302 /; }
    location = /hsts {
        add_header Strict-Transport-Security "max-age=63072000" always;
        return 200 "hsts";
    }
    location = /_matrix/client/versions {
        default_type application/json;
        return 200 '{"versions": ["r0.6.1", "v1.11"], "unstable_features": {"x": true}}';
    }
    location = /.well-known/matrix/client {
        default_type application/json;
        add_header Access-Control-Allow-Origin *;
        return 200 '{"m.homeserver": {"base_url": "http://matrix.example.test"}}';
    }
    location /_matrix/client/v3/directory/room/ {
        default_type application/json;
        return 400 '{"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}';
    }
    location = /_matrix/media/v3/upload { return 200 "{}"; }
    location = /_matrix/bad-gateway { proxy_pass http://127.0.0.1:%(dead)d; }
    location = /later.json { root %(root)s; default_type application/json; }
}
"""


@pytest.fixture(scope="session")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not NGINX_BIN.exists():
        msg = f"{NGINX_BIN} missing: apt-get install -y nginx"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    prefix = tmp_path_factory.mktemp("nginx")
    root = prefix / "www"
    root.mkdir()
    port = free_port()
    server = prefix / "server.conf"
    server.write_text(SERVER % {"port": port, "dead": free_port(), "root": root})
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_main_conf(prefix, server))
    ng = Nginx(conf, prefix, port).start()
    try:
        yield {"base": f"http://127.0.0.1:{port}", "root": root}
    finally:
        ng.stop()


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[StandaloneContext]:
    c = StandaloneContext(deployment_dir=tmp_path)
    yield c
    c.close()
