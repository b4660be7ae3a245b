"""ssh.upload (checksums, modes, atomic writes) and ssh.forward (loopback-only service)."""

from __future__ import annotations

import http.server
import os
import socket
import stat
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from elematrix_tui.actions.ssh import Forward
from elematrix_tui.actions.ssh_upload import Upload
from elematrix_tui.engine.action import ActionFailed
from tests.ssh.conftest import TimedContext
from tests.support.sshd import SshServer, free_port


def _stack(root: Path) -> Path:
    src = root / "stack"
    (src / "nginx").mkdir(parents=True)
    (src / "synapse").mkdir()
    (src / "compose.yaml").write_text("services: {}\n")
    (src / "nginx" / "default.conf").write_text("server { listen 80; }\n")
    (src / "synapse" / "homeserver.yaml").write_text("macaroon_secret_key: s3cret\n")
    (src / ".env").write_text("POSTGRES_PASSWORD=s3cret\n")
    return src


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _inputs(srv: SshServer | None, src: Path, dest: Path) -> dict[str, Any]:
    base: dict[str, Any] = srv.inputs() if srv else {"host": "local"}
    base.update(source=str(src), dest=str(dest),
                modes={"homeserver.yaml": "0600", ".env": "0600"})
    return base


@pytest.fixture(params=["ssh", "local"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SshServer | None,
                                                                             Path]]:
    """The same upload tests over SSH and over the local transport."""
    if request.param == "ssh":
        srv: SshServer = request.getfixturevalue("sshd")
        yield srv, srv.user_dir(f"up-{os.getpid()}-{id(tmp_path)}")
    else:
        yield None, tmp_path / "local-dest"


def test_upload_sets_modes_then_skips_unchanged(ctx: TimedContext,
                                                target: tuple[SshServer | None, Path]) -> None:
    srv, dest = target
    src = _stack(ctx.deployment_dir)
    inputs = _inputs(srv, src, dest)
    chk = ctx.check(Upload(), inputs)
    assert chk.in_sync is False
    assert any("create" in c and "homeserver.yaml (mode 0600)" in c for c in chk.changes)

    r = ctx.run(Upload(), inputs)
    assert r.status == "changed"
    assert sorted(r.outputs["uploaded"]) == [".env", "compose.yaml", "nginx/default.conf",
                                             "synapse/homeserver.yaml"]
    assert (dest / "synapse" / "homeserver.yaml").read_text() == "macaroon_secret_key: s3cret\n"
    assert _mode(dest / "synapse" / "homeserver.yaml") == 0o600
    assert _mode(dest / ".env") == 0o600
    assert _mode(dest / "compose.yaml") == 0o644
    assert not [p for p in dest.rglob(".*elematrix-*")]  # no temp files left behind
    assert "s3cret" not in repr(ctx.logs)  # contents are never logged

    # Second time: nothing differs.
    assert ctx.check(Upload(), inputs).in_sync is True
    r = ctx.run(Upload(), inputs)
    assert r.status == "ok"
    assert r.outputs["uploaded"] == [] and len(r.outputs["skipped"]) == 4

    # One file changed, one mode changed on the host: only those are touched.
    (src / "compose.yaml").write_text("services: {web: {}}\n")
    (dest / ".env").chmod(0o644)
    chk = ctx.check(Upload(), inputs)
    assert chk.in_sync is False
    assert sorted(chk.changes) == [f"chmod {dest}/.env to 0600",
                                   f"update {dest}/compose.yaml (content differs)"]
    r = ctx.run(Upload(), inputs)
    assert r.outputs["uploaded"] == ["compose.yaml"]
    assert r.outputs["chmodded"] == [".env"]
    assert _mode(dest / ".env") == 0o600
    assert (dest / "compose.yaml").read_text() == "services: {web: {}}\n"


def test_upload_relative_source_and_missing_source(ctx: TimedContext, tmp_path: Path) -> None:
    _stack(ctx.deployment_dir)
    dest = tmp_path / "d"
    r = ctx.run(Upload(), {"host": "local", "source": "stack", "dest": str(dest)})
    assert len(r.outputs["uploaded"]) == 4
    with pytest.raises(ActionFailed, match="not a directory"):
        ctx.run(Upload(), {"host": "local", "source": "nope", "dest": str(dest)})


def test_upload_unwritable_dest_is_explained(sshd: SshServer, ctx: TimedContext) -> None:
    if sshd.user == "root":
        pytest.skip("root can write anywhere")
    src = _stack(ctx.deployment_dir)
    with pytest.raises(ActionFailed) as e:
        ctx.run(Upload(), _inputs(sshd, src, Path("/root/not-yours")))
    assert "writable" in (e.value.fix or "")


# -- forward ---------------------------------------------------------------------------
class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"server": "loopback-only"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def loopback_service() -> Iterator[int]:
    """An HTTP service on 127.0.0.1 only (stands for Synapse's admin port on the host)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield int(srv.server_address[1])
    srv.shutdown()
    srv.server_close()


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return bytes(resp.read())


@pytest.mark.parametrize("over", ["ssh", "local"])
def test_forward_reaches_loopback_service_and_closes(request: pytest.FixtureRequest,
                                                     ctx: TimedContext, loopback_service: int,
                                                     over: str) -> None:
    base: dict[str, Any] = (request.getfixturevalue("sshd").inputs() if over == "ssh"
                            else {"host": "local"})
    inputs = {**base, "remote_port": loopback_service}
    r = ctx.run(Forward(), inputs)
    assert r.status == "changed"
    port = r.outputs["local_port"]
    assert r.outputs["url"] == f"http://127.0.0.1:{port}"
    for _ in range(3):  # several connections through the same forward
        assert _get(r.outputs["url"] + "/_synapse/admin/v1/server_version") == \
            b'{"server": "loopback-only"}'
    # A later step asking for the same forward gets the same one.
    again = ctx.run(Forward(), inputs)
    assert again.status == "ok" and again.outputs["local_port"] == port
    closed = ctx.run(Forward(), {**inputs, "close": True})
    assert closed.outputs == {"closed": True}
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_forward_closes_at_run_end_and_fixed_port(sshd: SshServer, tmp_path: Path,
                                                  loopback_service: int) -> None:
    ctx = TimedContext(deployment_dir=tmp_path)
    port = free_port()
    r = ctx.run(Forward(), sshd.inputs(remote_port=loopback_service, local_port=port))
    assert r.outputs["local_port"] == port
    assert _get(r.outputs["url"]) == b'{"server": "loopback-only"}'
    ctx.close()  # the engine closes run resources at the end of the run
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_forward_to_dead_port_fails_early(sshd: SshServer, ctx: TimedContext) -> None:
    with pytest.raises(ActionFailed) as e:
        ctx.run(Forward(), sshd.inputs(remote_port=free_port()))
    assert "not running" in (e.value.diagnosis or "")


def test_upload_with_sudo_into_root_owned_dir(sshd: SshServer, ctx: TimedContext) -> None:
    if sshd.user == "root":
        pytest.skip("needs a non-root login user")
    dest = sshd.dir / f"opt-{id(ctx)}" / "elematrix"  # root-owned parent: not writable
    src = _stack(ctx.deployment_dir)
    inputs = {**_inputs(sshd, src, dest), "sudo": True}
    # A run killed on this machine before (SIGKILL: nothing can clean up) may have left one.
    before = set(Path("/tmp").glob("elematrix-upload.*"))
    with pytest.raises(ActionFailed):
        ctx.run(Upload(), {**inputs, "sudo": False})
    r = ctx.run(Upload(), inputs)
    assert len(r.outputs["uploaded"]) == 4
    hs = dest / "synapse" / "homeserver.yaml"
    assert hs.stat().st_uid == 0 and _mode(hs) == 0o600
    assert _mode(dest / "compose.yaml") == 0o644
    assert not list(dest.rglob(".*elematrix-*"))
    # Root-only 0600 files are still compared (checksums read with sudo): all skipped.
    r = ctx.run(Upload(), inputs)
    assert r.status == "ok" and r.outputs["uploaded"] == []
    hs.chmod(0o640)
    (src / "nginx" / "default.conf").write_text("server { listen 8080; }\n")
    r = ctx.run(Upload(), inputs)
    assert r.outputs == {"uploaded": ["nginx/default.conf"], "skipped": r.outputs["skipped"],
                         "chmodded": ["synapse/homeserver.yaml"], "dest": str(dest)}
    assert _mode(hs) == 0o600
    assert (dest / "nginx" / "default.conf").read_text() == "server { listen 8080; }\n"
    # The staging directory is gone. Another test's upload on this machine may stage one of
    # its own meanwhile (the same user, a few seconds): a leftover of ours stays, theirs go.
    deadline = time.monotonic() + 20
    while (left := [p for p in set(Path("/tmp").glob("elematrix-upload.*")) - before
                    if p.owner() == sshd.user]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left


def test_forward_survives_a_dropped_connection(own_sshd: SshServer, ctx: TimedContext,
                                               loopback_service: int) -> None:
    import signal
    import time
    r = ctx.run(Forward(), own_sshd.inputs(remote_port=loopback_service))
    assert _get(r.outputs["url"]) == b'{"server": "loopback-only"}'
    own_sshd.signal_connections(signal.SIGKILL)
    time.sleep(0.3)
    # The next connection through the forward reconnects (pinned key, same port).
    assert _get(r.outputs["url"]) == b'{"server": "loopback-only"}'


def test_upload_to_home_relative_dest(sshd: SshServer, ctx: TimedContext) -> None:
    import pwd
    import shutil
    name = f"elematrix-up-{os.getpid()}-{id(ctx)}"
    home = Path(pwd.getpwnam(sshd.user).pw_dir)
    src = _stack(ctx.deployment_dir)
    try:
        r = ctx.run(Upload(), {**_inputs(sshd, src, Path("x")), "dest": f"~/{name}/stack"})
        assert len(r.outputs["uploaded"]) == 4
        assert (home / name / "stack" / "compose.yaml").is_file()
        assert not (home / "~").exists()
        r = ctx.run(Upload(), {**_inputs(sshd, src, Path("x")), "dest": f"{name}/stack"})
        assert r.outputs["uploaded"] == []
    finally:
        shutil.rmtree(home / name, ignore_errors=True)
