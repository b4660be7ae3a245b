"""The bundled stack, rendered by the product's own code, runs on the real engine unchanged.

``elematrix_tui.stack.render.render_stack`` writes the stack into a tmp dir; the only
step taken by hand is the one the deploy phase does on the instance (poc-ec2 runbook:
"Give Synapse's configuration to the container's user (uid 991)": chown -R 991:991
synapse/). Then ``docker compose up -d --wait`` on the rendered file as it is, with the
local images (or real ones, if a registry gave them). The rendered file publishes
127.0.0.1:8008 and the http port, so the test holds ``stack_lock()``; the project name is
this branch's, and the stack goes down with its volumes at the end.
"""

from __future__ import annotations

import os
import secrets
import uuid
from pathlib import Path

import httpx
import pytest

from elematrix_tui.actions.browser import NOT_POSSIBLE, SecureContext
from elematrix_tui.engine.standalone import StandaloneContext
from elematrix_tui.stack.render import render_stack
from elematrix_tui.stack.values import SECRET_NAMES
from tests.support.docker import compose, down, need_chromium, stack_lock
from tests.support.services import free_port

# A cold image build (first run without scripts/setup.sh) happens in the first test's
# fixture setup: about 4-5 minutes on a 2-core machine, more than the suite's default.
pytestmark = pytest.mark.timeout(900)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for p in root.rglob("*"):
        os.chown(p, uid, gid)


def test_rendered_stack_starts_on_the_engine(docker_images: dict[str, str],
                                             tmp_path: Path) -> None:
    port = free_port()
    values = {"server_name": "engine.test", "public_address": f"127.0.0.1:{port}",
              "http_port": port, "deployment": "engine-test"}
    stack_secrets = {n: secrets.token_urlsafe(24).replace("-", "x") for n in SECRET_NAMES}
    stack = render_stack(values, stack_secrets, tmp_path / "stack").path
    _chown_tree(stack / "synapse", 991, 991)
    project = f"docker-images-stack-{uuid.uuid4().hex[:8]}"
    with stack_lock():
        try:
            compose(stack, project, "up", "-d", "--wait", "--wait-timeout", "240",
                    timeout=300)
            # Synapse directly, on the host's loopback (what the SSH forward reaches).
            health = httpx.get("http://127.0.0.1:8008/health", timeout=10)
            assert health.status_code == 200 and health.text == "OK"
            base = f"http://127.0.0.1:{port}"
            versions = httpx.get(f"{base}/_matrix/client/versions", timeout=10)
            assert versions.status_code == 200, versions.text
            assert "v1.11" in versions.json()["versions"]
            # Element's config through nginx, as rendered (not the image's sample).
            cfg = httpx.get(f"{base}/config.json", timeout=10).json()
            assert cfg["default_server_config"]["m.homeserver"]["server_name"] == "engine.test"
            wk = httpx.get(f"{base}/.well-known/matrix/client", timeout=10).json()
            assert wk["m.homeserver"]["base_url"].startswith(f"http://127.0.0.1:{port}")
            # The admin API is not proxied publicly.
            admin = httpx.get(f"{base}/_synapse/admin/v1/server_version", timeout=10)
            assert admin.status_code == 404
            # The signing key was written to the (chowned) data volume by uid 991.
            owner = compose(stack, project, "exec", "-T", "synapse", "stat", "-c", "%u:%g",
                            "/data/engine.test.signing.key").stdout.strip()
            assert owner == "991:991"
            # A real browser on the POC (a public name, plain HTTP): Element's E2EE is
            # "not possible over plain HTTP", reported, not a failure of the POC.
            need_chromium()
            got = StandaloneContext(deployment_dir=tmp_path / "browser").run(
                SecureContext(), {"url": f"http://engine.test:{port}/",
                                  "resolve": {"engine.test": "127.0.0.1"}})
            assert got.outputs["verdict"] == NOT_POSSIBLE, got.outputs
        finally:
            down(stack, project)
