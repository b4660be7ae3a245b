"""Where to connect: a :class:`Target` from the step's host/port/user/key and
``~/.ssh/config`` (``Include``, ``ProxyJump`` as far as supported)."""

from __future__ import annotations

import glob
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...engine.action import ActionFailed

LOCAL = "local"
DEFAULT_USER = "ec2-user"
DEFAULT_PORT = 22


@dataclass(frozen=True)
class Target:
    """Where and as whom to connect, after ``~/.ssh/config`` was applied."""

    alias: str
    hostname: str
    port: int
    user: str
    key_files: tuple[str, ...] = ()
    # Try ssh-agent and ~/.ssh/id_* after the explicit key files.
    use_defaults: bool = True
    connect_timeout: float = 10.0
    jump: Target | None = None

    @property
    def local(self) -> bool:
        return self.alias == LOCAL

    @property
    def resource_key(self) -> str:
        if self.local:
            return "ssh:local"
        via = f" via {self.jump.resource_key}" if self.jump else ""
        return f"ssh:{self.user}@{self.hostname}:{self.port}{via}"

    @property
    def meta_key(self) -> str:
        return f"ssh.hostkeys.{self.hostname}:{self.port}"

    def __str__(self) -> str:
        return "this machine (local)" if self.local else f"{self.user}@{self.hostname}:{self.port}"


def ssh_config_path() -> Path:
    return Path(os.path.expanduser("~/.ssh/config"))


_INCLUDE_RE = re.compile(r"^\s*include\s*(?:=\s*|\s)(.+)$", re.I)


def _config_text(path: Path, depth: int = 0) -> str:
    """The config with ``Include`` expanded in place (paramiko ignores it).

    Relative patterns are under ~/.ssh, globs are sorted, as OpenSSH does. Inlining is
    exact for the usual top-level ``Include config.d/*``; an Include inside a Host block
    whose file has its own Host lines ends that block (OpenSSH would resume it).
    """
    if depth > 8:
        raise ValueError(f"Include nested too deeply at {path}")
    out: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        m = _INCLUDE_RE.match(line)
        if not m:
            out.append(line)
            continue
        for pattern in shlex.split(m.group(1)):
            pattern = os.path.expanduser(pattern)
            if not os.path.isabs(pattern):
                pattern = str(ssh_config_path().parent / pattern)
            for inc in sorted(glob.glob(pattern)):
                if os.path.isfile(inc):
                    out.append(_config_text(Path(inc), depth + 1))
    return "\n".join(out)


def _lookup_config(alias: str) -> dict[str, Any]:
    import paramiko

    path = ssh_config_path()
    if not path.is_file():
        return {}
    try:
        cfg = paramiko.SSHConfig.from_text(_config_text(path))
    except Exception as e:  # a config paramiko cannot parse must not be silently ignored
        raise ActionFailed(f"cannot read {path}: {e}",
                           diagnosis="paramiko could not parse your SSH config file.",
                           fix="Fix the file, or pass host/port/user/key_path explicitly.") from e
    return dict(cfg.lookup(alias))


def _parse_jump(spec: str, connect_timeout: float) -> Target:
    if "," in spec:
        raise ActionFailed(
            f"ProxyJump {spec!r} has more than one hop",
            diagnosis="elematrix supports one ProxyJump hop (user@host:port) only.",
            fix="Use a single jump host, or open the tunnel yourself and point host/port at it.")
    if spec.startswith("ssh://"):
        spec = spec[len("ssh://"):]
    user: str | None = None
    if "@" in spec:
        user, spec = spec.rsplit("@", 1)
    port: int | None = None
    if spec.count(":") == 1:
        spec, p = spec.split(":")
        port = int(p)
    return resolve_target(spec, port, user, None, connect_timeout, None, allow_jump=False)


def resolve_target(host: str, port: int | None, user: str | None, key_path: str | None,
                   connect_timeout: float, deployment_dir: Path | None,
                   *, allow_jump: bool = True) -> Target:
    """Apply explicit inputs, then ``~/.ssh/config`` (User, Port, IdentityFile, HostName,
    IdentitiesOnly, one ProxyJump hop), then defaults (port 22, user ``ec2-user``)."""
    if host == LOCAL:
        return Target(alias=LOCAL, hostname=LOCAL, port=0, user=os.environ.get("USER", ""),
                      connect_timeout=connect_timeout)
    cfg = _lookup_config(host)
    if "proxycommand" in cfg:
        raise ActionFailed(
            f"~/.ssh/config sets ProxyCommand for {host}",
            diagnosis="elematrix does not run ProxyCommand (only one ProxyJump hop is supported).",
            fix="Use 'ProxyJump user@jumphost' for this host, or pass the address explicitly.")
    hostname = str(cfg.get("hostname", host))
    eff_port = port or int(cfg.get("port", DEFAULT_PORT))
    eff_user = user or str(cfg.get("user") or DEFAULT_USER)
    keys: list[str] = []
    use_defaults = True
    if key_path:
        # An explicit key is the only one tried: an agent full of keys would otherwise hit
        # the server's MaxAuthTries before ours is offered.
        keys.append(os.path.expanduser(key_path))
        use_defaults = False
    else:
        for f in cfg.get("identityfile", []):
            p = os.path.expanduser(str(f))
            if os.path.exists(p):
                keys.append(p)
        if deployment_dir is not None:
            gen = Path(deployment_dir) / "keys" / "id_ed25519"
            if gen.is_file():
                keys.append(str(gen))
        if str(cfg.get("identitiesonly", "no")).lower() == "yes":
            use_defaults = False
    jump: Target | None = None
    pj = str(cfg.get("proxyjump", "none"))
    if pj.lower() != "none":
        if not allow_jump:
            raise ActionFailed(
                f"the jump host {host} itself has a ProxyJump",
                diagnosis="elematrix supports one ProxyJump hop only (no chains).",
                fix="Open the tunnel yourself and point host/port at it.")
        jump = _parse_jump(pj, connect_timeout)
    return Target(alias=host, hostname=hostname, port=eff_port, user=eff_user,
                  key_files=tuple(keys), use_defaults=use_defaults,
                  connect_timeout=connect_timeout, jump=jump)
