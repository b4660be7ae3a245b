"""The gate from an operator behind a 10 Mbit/s uplink (issue 12: media check).

"The operator" is a network namespace with a veth pair to the root namespace and ``tc
tbf`` limiting its egress to 10 Mbit/s (tests/support/netns.py). The root namespace is
the instance: the real PostgreSQL/Synapse/nginx (nginx also listening on the veth
address, the stack's public address) and the real OpenSSH sshd on the veth address. The
gate runs in a process inside the namespace (tests/matrix/operator_gate.py) and reaches
Synapse's admin API through the real ``ssh.forward`` over the shaped link.

Upload limit: the product default, 50 MiB. Before the fix the gate pushed limit - 1 KiB
as one httpx body under a 10 s timeout (httpx applies the write timeout to the whole
body): at 10 Mbit/s that needs ~42 s, so the media check failed with a timeout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from elematrix_tui.engine.action import Result
from tests.support import netns
from tests.support.services import MatrixStack, StackSettings
from tests.support.sshd import SshServer

from .conftest import require_stack

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]
LIMIT_MB = 50  # the product's default max_upload_size_mb


def _require_netns() -> None:
    why = netns.unavailable()
    if why is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def operator_ns() -> Iterator[netns.OperatorNetns]:
    _require_netns()
    ns = netns.OperatorNetns(rate="10mbit")
    ns.start()
    try:
        yield ns
    finally:
        ns.stop()


@pytest.fixture(scope="module")
def shaped_stack(operator_ns: netns.OperatorNetns,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[MatrixStack]:
    require_stack()
    settings = StackSettings(public_host=operator_ns.host_addr, max_upload_size_mb=LIMIT_MB)
    stack = MatrixStack(tmp_path_factory.mktemp("shaped-stack"), settings)
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def host_sshd(operator_ns: netns.OperatorNetns) -> Iterator[SshServer]:
    with SshServer(bind=operator_ns.host_addr) as srv:
        yield srv


def run_operator_gate(ns: netns.OperatorNetns, stack: MatrixStack, srv: SshServer,
                      tmp_path: Path, *, host_ssh: bool, **validate: Any) -> dict[str, Any]:
    spec = {
        "ssh": srv.inputs(),
        "admin_port": stack.ports.synapse,
        "host_ssh": host_ssh,
        # nginx as the host itself sees it (the bundled stack: http://127.0.0.1:80).
        "host_url": f"http://127.0.0.1:{stack.ports.nginx}",
        "validate": {"base_url": stack.base_url, "server_name": stack.server_name,
                     "registration_shared_secret": stack.registration_shared_secret,
                     "timeout": 10, **validate},
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    r = subprocess.run(ns.argv(sys.executable, "-m", "tests.matrix.operator_gate", str(path)),
                       cwd=REPO, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def test_the_operator_link_is_shaped_to_10_mbit(operator_ns: netns.OperatorNetns) -> None:
    assert "tbf" in operator_ns.qdisc() and "10Mbit" in operator_ns.qdisc()
    rate = operator_ns.measure_uplink()
    print(f"measured operator uplink: {rate:.2f} Mbit/s")
    assert 7.5 < rate < 11, rate


def test_gate_passes_over_a_10_mbit_uplink_within_60_s(
        tmp_path: Path, operator_ns: netns.OperatorNetns, shaped_stack: MatrixStack,
        host_sshd: SshServer) -> None:
    out = run_operator_gate(operator_ns, shaped_stack, host_sshd, tmp_path, host_ssh=True,
                            max_upload_size_mb=LIMIT_MB, total_timeout=120)
    print(f"gate over 10 Mbit/s with host access: {out['gate_s']} s")
    media = out["checks"].get("media", {})
    assert out["status"] == "ok", (out.get("error"), out.get("diagnosis"),
                                   media.get("details"))
    assert out["gate_s"] < 60
    details = "\n".join(media["details"])
    # The near- and over-limit uploads ran on the host, through nginx on 127.0.0.1.
    assert "on the host" in details and str(LIMIT_MB * 1024 * 1024 - 1024) in details
    assert out["outputs"]["media_refused_by"] in ("nginx", "synapse")


def test_gate_without_host_access_streams_the_limit_within_its_budget(
        tmp_path: Path, operator_ns: netns.OperatorNetns, shaped_stack: MatrixStack,
        host_sshd: SshServer) -> None:
    """No SSH target for the gate: the near-limit upload streams from the operator (50 MiB
    at 10 Mbit/s: ~42 s) under a budget sized from the payload and the measured uplink,
    and the gate says that is what it did."""
    out = run_operator_gate(operator_ns, shaped_stack, host_sshd, tmp_path, host_ssh=False,
                            max_upload_size_mb=LIMIT_MB, total_timeout=240)
    print(f"gate over 10 Mbit/s without host access: {out['gate_s']} s")
    media = out["checks"].get("media", {})
    assert out["status"] == "ok", (out.get("error"), out.get("diagnosis"),
                                   media.get("details"))
    details = "\n".join(media["details"])
    assert "no host access" in details and "Mbit/s" in details
    # Expect: 100-continue: nginx refuses the over-limit Content-Length before any body
    # is sent (blindly sent, nginx's lingering close took ~30 s more of the uplink).
    m = re.search(r"from this machine \(answered in ([\d.]+) s\) refused", details)
    assert m and float(m.group(1)) < 5, details


# ------------------------------------------------------------------ proxies (issue 12)
# The stack's public address here is the veth address (not loopback), reached from this
# (the root) namespace directly; the admin API is Synapse on 127.0.0.1 (the tunnel's end).


def _proxy_env(monkeypatch: pytest.MonkeyPatch, proxy: str, no_proxy: str = "") -> None:
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
              "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    if no_proxy:
        monkeypatch.setenv("NO_PROXY", no_proxy)


def test_public_traffic_goes_through_the_proxy_loopback_never(
        tmp_path: Path, shaped_stack: MatrixStack, host_sshd: SshServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY set: httpx AND nio reach the public address through it; the admin API
    on 127.0.0.1 never goes there (a proxy elsewhere could not reach it)."""
    from tests.support.proxy import RecordingProxy

    from .conftest import checks, run_validate

    with RecordingProxy() as proxy:
        _proxy_env(monkeypatch, proxy.url)
        res, ctx = run_validate(tmp_path, shaped_stack, max_upload_size_mb=LIMIT_MB,
                                host_ssh=host_sshd.inputs(),
                                host_url=f"http://127.0.0.1:{shaped_stack.ports.nginx}")
    public = f"{shaped_stack.settings.public_host}:{shaped_stack.ports.nginx}"
    assert not [s for s in proxy.seen if s.startswith(("127.", "localhost"))], proxy.seen
    assert isinstance(res, Result), (getattr(res, "diagnosis", res), checks(ctx))
    assert public in proxy.seen
    # nio's own requests (CONNECT through aiohttp-socks, or absolute URIs) came too.
    assert any("/sync" in line or line.startswith("CONNECT") for line in proxy.lines), \
        proxy.lines


def test_no_proxy_keeps_the_public_address_direct(
        tmp_path: Path, shaped_stack: MatrixStack, host_sshd: SshServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.proxy import RecordingProxy

    from .conftest import run_validate

    with RecordingProxy() as proxy:
        _proxy_env(monkeypatch, proxy.url, no_proxy=shaped_stack.settings.public_host)
        res, _ = run_validate(tmp_path, shaped_stack, max_upload_size_mb=LIMIT_MB,
                              host_ssh=host_sshd.inputs(),
                              host_url=f"http://127.0.0.1:{shaped_stack.ports.nginx}")
    assert isinstance(res, Result), getattr(res, "diagnosis", res)
    assert proxy.seen == []


def test_one_body_under_a_10_s_timeout_fails_over_this_link(
        tmp_path: Path, operator_ns: netns.OperatorNetns, shaped_stack: MatrixStack) -> None:
    """What the gate used to do (limit - 1 KiB as one body from an httpx.AsyncClient with
    Timeout(10)) fails on this link with WriteTimeout: the link reproduces the fault the
    fix is for. (The async transport bounds the whole write by the timeout; FACTS.md.)"""
    code = ("import asyncio, httpx, sys\n"
            f"url = '{shaped_stack.base_url}/_matrix/media/v3/upload'\n"
            f"body = bytes({LIMIT_MB * 1024 * 1024 - 1024})\n"
            "async def go():\n"
            "    async with httpx.AsyncClient(timeout=httpx.Timeout(10)) as c:\n"
            "        await c.post(url, content=body)\n"
            "try:\n"
            "    asyncio.run(go())\n"
            "except httpx.WriteTimeout:\n"
            "    print('WriteTimeout'); sys.exit(0)\n"
            "print('no timeout'); sys.exit(1)\n")
    r = subprocess.run(operator_ns.argv(sys.executable, "-c", code), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "WriteTimeout" in r.stdout, (r.stdout, r.stderr[-2000:])


def test_stale_namespaces_of_dead_runs_are_swept() -> None:
    """A namespace whose creating process is gone is removed; a live run's is kept."""
    _require_netns()
    dead_pid = 2 ** 22 + 12345  # above pid_max's default: no such process
    assert not Path(f"/proc/{dead_pid}").exists()
    stale = f"{netns.PREFIX}{dead_pid}-abcdef"
    live = f"{netns.PREFIX}{os.getpid()}-fedcba"
    for name in (stale, live):
        subprocess.run([netns.IP, "netns", "add", name], check=True)
    try:
        gone = netns.sweep_stale()
        names = subprocess.run([netns.IP, "netns", "list"], capture_output=True,
                               text=True).stdout
        assert stale in gone and stale not in names
        assert live not in gone and live in names
    finally:
        for name in (stale, live):
            subprocess.run([netns.IP, "netns", "del", name], capture_output=True)
