"""On the real Docker engine: nginx reaches a RECREATED Synapse without a restart.

Issue 12: a re-deploy recreates the synapse container with a new address; nginx resolved
``proxy_pass http://synapse:8008`` once at start and answered 502 until restarted. The
rendered nginx config now asks Docker's embedded DNS (``resolver 127.0.0.11``, which exists
only inside a Docker network) per request through variables. This test runs the rendered
compose file on the engine (project ``host-faults-*``, under the machine-wide stack lock),
recreates Synapse on another address, and requires the request through nginx to succeed
with nginx untouched; then the same with the old static ``proxy_pass`` to show the fault
(502) that the test would have caught.

The images are the local builds (branch docker-images, ``scripts/build_images.py``) of the
repositories in ``IMAGES``: their tags are taken as built (``images`` overrides of the
rendering), since no registry is reachable. Until that branch's compose fix merges, the
synapse entrypoint also chowns ``/data`` in this test's copy (the image's start.py does not,
see FACTS.md); nothing else of the rendered files is changed except where said.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from elematrix_tui.stack.render import render_stack
from elematrix_tui.stack.values import IMAGES
from tests.support.docker import stack_lock

from .conftest import SECRETS

SERVER = "engine.test"


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)


def _docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {r.returncode}:\n"
                             f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout


def _local_images() -> dict[str, str]:
    """Service -> a locally built image of the repository IMAGES pins (tag as built)."""
    if shutil.which("docker") is None:
        _unavailable("no docker client")
    r = subprocess.run(["docker", "images", "--filter", "label=org.elematrix.local-build",
                        "--format", "{{.Repository}}:{{.Tag}}"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        _unavailable(f"no Docker engine answers: {r.stderr.strip()}")
    have = r.stdout.split()
    out: dict[str, str] = {}
    for svc, ref in IMAGES.items():
        repo = ref.rsplit(":", 1)[0]
        found = [h for h in have if h == ref] or [h for h in have
                                                 if h.rsplit(":", 1)[0] == repo]
        if not found:
            _unavailable(f"no local image for {repo} (python3 scripts/build_images.py)")
        out[svc] = found[0]
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Stack:
    def __init__(self, root: Path, project: str) -> None:
        self.root, self.project = root, project
        self.placeholders: list[str] = []

    def compose(self, *args: str, timeout: float = 420) -> str:
        r = subprocess.run(["docker", "compose", "-p", self.project, "-f",
                            "docker-compose.yml", *args], cwd=self.root, capture_output=True,
                           text=True, timeout=timeout)
        if r.returncode != 0:
            logs = subprocess.run(["docker", "compose", "-p", self.project, "logs",
                                   "--tail", "30"], cwd=self.root, capture_output=True,
                                  text=True, timeout=60).stdout
            # A container that never ran (a port taken, a mount refused) has no logs: its
            # State says why (CI once saw synapse "exited (0)" with nothing logged).
            states = subprocess.run(
                ["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project="
                 f"{self.project}", "--format", "{{.Names}}"], capture_output=True,
                text=True, timeout=60).stdout.split()
            why = "".join(_docker("inspect", "-f", f"{name}: {{{{json .State}}}}\n", name,
                                  check=False) for name in states)
            raise AssertionError(f"compose {' '.join(args)} exited {r.returncode}:\n"
                                 f"{logs[-3000:]}\n{why[-3000:]}\n"
                                 f"{r.stdout[-1500:]}\n{r.stderr[-1500:]}")
        return r.stdout

    def container(self, svc: str) -> str:
        return f"{self.project}-{svc}-1"

    def address(self, svc: str) -> str:
        nets = json.loads(_docker("inspect", "-f", "{{json .NetworkSettings.Networks}}",
                                  self.container(svc)))
        return str(next(iter(nets.values()))["IPAddress"])

    def started_at(self, svc: str) -> str:
        return _docker("inspect", "-f", "{{.State.StartedAt}}", self.container(svc)).strip()

    def recreate_synapse_elsewhere(self, image: str) -> tuple[str, str]:
        """Remove synapse, start a placeholder on the network, start a new synapse:
        (old address, new address). Docker may hand a freed address out again; the
        placeholder takes it first then, so the new container really moves."""
        old = self.address("synapse")
        self.compose("rm", "-s", "-f", "synapse", timeout=120)
        holder = f"{self.project}-placeholder-{uuid.uuid4().hex[:6]}"
        _docker("run", "-d", "--name", holder, "--network", f"{self.project}_default",
                "--entrypoint", "sleep", image, "600")
        self.placeholders.append(holder)
        self.compose("up", "-d", "--no-deps", "--wait", "synapse")
        return old, self.address("synapse")


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None


def _statuses_for(url: str, seconds: float) -> list[int]:
    seen: list[int] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r = _get(url)
        seen.append(r.status_code if r is not None else -1)
        time.sleep(1)
    return seen


def _until_ok(url: str, seconds: float) -> list[int]:
    seen: list[int] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r = _get(url)
        seen.append(r.status_code if r is not None else -1)
        if seen[-1] == 200:
            break
        time.sleep(1)
    return seen


@pytest.fixture
def engine_stack(tmp_path: Path) -> Iterator[tuple[_Stack, int, dict[str, str]]]:
    images = _local_images()
    port = _free_port()
    root = tmp_path / "stack"
    render_stack({"server_name": SERVER, "public_address": f"127.0.0.1:{port}",
                  "http_port": port, "deployment": "hostfaults", "images": images},
                 SECRETS, root)
    compose_file = root / "docker-compose.yml"
    text = compose_file.read_text()
    if "chown 991:991 /data" not in text:
        text = text.replace('"chown 991:991 /media_store && exec /start.py"',
                            '"chown 991:991 /data /media_store && exec /start.py"')
        assert "chown 991:991 /data /media_store" in text
        compose_file.write_text(text)
    # What the deploy phase does on the host: Synapse (uid 991) reads its 0600 config.
    for p in [root / "synapse", *(root / "synapse").rglob("*")]:
        os.chown(p, 991, 991)
    stack = _Stack(root, f"host-faults-{uuid.uuid4().hex[:8]}")
    with stack_lock():
        try:
            stack.compose("up", "-d", "--wait")
            yield stack, port, images
        finally:
            for holder in stack.placeholders:
                _docker("rm", "-f", holder, check=False)
            subprocess.run(["docker", "compose", "-p", stack.project, "down", "-v",
                            "--remove-orphans", "-t", "5"], cwd=root, capture_output=True,
                           timeout=180)


def test_nginx_reaches_a_recreated_synapse_without_restarting(
        engine_stack: tuple[_Stack, int, dict[str, str]]) -> None:
    stack, port, images = engine_stack
    base = f"http://127.0.0.1:{port}"
    versions = f"{base}/_matrix/client/versions"
    # Through the variable upstream the request URI reaches Synapse exactly as sent
    # (FACTS.md's probe: M_NOT_FOUND through a correct proxy, M_UNRECOGNIZED when rewritten).
    probe = httpx.get(f"{base}/_matrix/client/v3/directory/room/%23probe%2Fx%3A{SERVER}",
                      timeout=10)
    assert probe.status_code == 404 and probe.json()["errcode"] == "M_NOT_FOUND", probe.text
    assert httpx.get(versions, timeout=10).status_code == 200
    nginx_started = stack.started_at("nginx")

    old, new = stack.recreate_synapse_elsewhere(images["synapse"])
    assert old != new, "synapse kept its address: the test would prove nothing"
    # valid=10s: within that (plus a second) nginx asks again and finds the new address.
    t0 = time.monotonic()
    seen = _until_ok(versions, 20)
    print(f"synapse {old} -> {new}: through nginx {seen} in {time.monotonic() - t0:.1f} s")
    assert seen[-1] == 200, f"through nginx after the recreate: {seen}"
    assert stack.started_at("nginx") == nginx_started, "nginx was restarted"
    assert httpx.get(f"{base}/", timeout=10).status_code == 200  # Element via $element

    # The old shape, `proxy_pass http://synapse:8008;`, resolved once at start: after the
    # same recreate it keeps the dead address (the fault of issue 12).
    conf = stack.root / "nginx" / "default.conf"
    static = re.sub(r"set \$synapse (\S+);\n(\s*)proxy_pass \$synapse;",
                    r"proxy_pass \1;", conf.read_text())
    assert "proxy_pass http://synapse:8008;" in static and "$synapse" not in static
    conf.write_text(static)  # the same inode: the file is bind-mounted
    stack.compose("restart", "nginx", timeout=120)
    assert _until_ok(versions, 30)[-1] == 200
    stack.recreate_synapse_elsewhere(images["synapse"])
    seen = _statuses_for(versions, 15)
    print(f"static proxy_pass after the recreate: {seen}")
    assert set(seen) == {502}, f"the static proxy_pass should keep failing, saw {seen}"
