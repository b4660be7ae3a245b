"""~/.ssh/config mapping (User, Port, IdentityFile, HostName, one ProxyJump hop) and keys."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from elematrix_tui.actions.ssh import Run
from elematrix_tui.engine.action import ActionFailed
from tests.ssh.conftest import TimedContext
from tests.support.sshd import SshServer


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty HOME without ssh-agent: only what the test writes is used."""
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return h


def _known_hosts(srv: SshServer) -> str:
    return "".join(f"[{srv.host}]:{srv.port} {Path(str(p) + '.pub').read_text().strip()}\n"
                   for p in srv.host_key_paths)


def test_alias_from_ssh_config(sshd: SshServer, ctx: TimedContext, home: Path) -> None:
    (home / ".ssh" / "config").write_text(
        f"Host staging-box\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.key_path}\n")
    r = ctx.run(Run(), {"host": "staging-box", "command": "whoami",
                        "host_key_fingerprints": sshd.fingerprints})
    assert r.outputs["stdout"] == f"{sshd.user}\n"
    assert f"ssh.hostkeys.{sshd.host}:{sshd.port}" in ctx.meta


def test_explicit_inputs_win_over_config(sshd: SshServer, ctx: TimedContext, home: Path) -> None:
    (home / ".ssh" / "config").write_text(f"Host {sshd.host}\n  User nobody-here\n  Port 1\n")
    r = ctx.run(Run(), sshd.inputs(command="whoami"))
    assert r.outputs["stdout"] == f"{sshd.user}\n"


def test_deployment_key_used_when_no_key_given(sshd: SshServer, ctx: TimedContext,
                                               home: Path) -> None:
    keys = ctx.deployment_dir / "keys"
    keys.mkdir()
    shutil.copy(sshd.key_path, keys / "id_ed25519")
    (keys / "id_ed25519").chmod(0o600)
    r = ctx.run(Run(), {"host": sshd.host, "port": sshd.port, "user": sshd.user,
                        "command": "echo key", "host_key_fingerprints": sshd.fingerprints})
    assert r.outputs["stdout"] == "key\n"


def test_default_user_is_ec2_user(sshd: SshServer, ctx: TimedContext, home: Path) -> None:
    if sshd.user != "ec2-user":
        pytest.skip("the fixture logs in as the current user when not root")
    r = ctx.run(Run(), {"host": sshd.host, "port": sshd.port, "key_path": str(sshd.key_path),
                        "command": "whoami", "host_key_fingerprints": sshd.fingerprints})
    assert r.outputs["stdout"] == "ec2-user\n"


def test_one_proxyjump_hop(sshd: SshServer, ctx: TimedContext, home: Path) -> None:
    # The same sshd is both the bastion and (through it) the target.
    (home / ".ssh" / "config").write_text(
        f"Host bastion\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.key_path}\n"
        f"Host inner\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.key_path}\n  ProxyJump bastion\n")
    (home / ".ssh" / "known_hosts").write_text(_known_hosts(sshd))
    r = ctx.run(Run(), {"host": "inner", "command": "echo through",
                        "host_key_fingerprints": sshd.fingerprints})
    assert r.outputs["stdout"] == "through\n"


def test_proxyjump_host_must_be_known(sshd: SshServer, ctx: TimedContext, home: Path) -> None:
    (home / ".ssh" / "config").write_text(
        f"Host inner\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.key_path}\n  ProxyJump {sshd.user}@{sshd.host}:{sshd.port}\n")
    with pytest.raises(ActionFailed) as e:
        ctx.run(Run(), {"host": "inner", "command": "true",
                        "host_key_fingerprints": sshd.fingerprints})
    assert "known_hosts" in (e.value.diagnosis or "")


@pytest.mark.parametrize("line,needle", [
    ("ProxyJump a,b", "one ProxyJump hop"),
    ("ProxyCommand nc %h %p", "ProxyCommand"),
])
def test_unsupported_config_said_plainly(ctx: TimedContext, home: Path, line: str,
                                         needle: str) -> None:
    (home / ".ssh" / "config").write_text(f"Host box\n  HostName 127.0.0.1\n  {line}\n")
    with pytest.raises(ActionFailed) as e:
        ctx.run(Run(), {"host": "box", "command": "true"})
    assert needle in (e.value.message + (e.value.diagnosis or ""))


def test_include_is_expanded(sshd: SshServer, ctx: TimedContext, home: Path) -> None:
    (home / ".ssh" / "config.d").mkdir()
    (home / ".ssh" / "config.d" / "10-staging").write_text(
        f"Host staging-inc\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.key_path}\n")
    (home / ".ssh" / "config").write_text("Include config.d/*\n\nHost other\n  Port 1\n")
    r = ctx.run(Run(), {"host": "staging-inc", "command": "echo included",
                        "host_key_fingerprints": sshd.fingerprints})
    assert r.outputs["stdout"] == "included\n"
