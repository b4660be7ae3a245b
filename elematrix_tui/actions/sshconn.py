"""SSH connections for the ``ssh.*`` actions: targets, host key pinning, exec, files, forwards.

One :class:`SshConnection` per host per run (the actions borrow it through
``ctx.resource``). It opens the TCP socket itself with ``TCP_NODELAY`` (paramiko never
sets it: a command on a reused connection takes ~48 ms without it, ~4 ms with it), pins
the host key against the fingerprints the infra phase read from the console output (or
the ones the operator accepted once), and reconnects when the transport died between
two commands. Whether a command that was *running* when the connection dropped may be
re-run is the action's decision, not this module's.

``host: local`` gives a :class:`LocalConnection` with the same interface: commands run
with ``/bin/sh -c`` on this machine and files are copied. Runbooks can then be rehearsed
without any SSH server.

paramiko is imported lazily (inside functions): importing this module must stay cheap.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import glob
import hashlib
import os
import re
import secrets
import select
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..engine.action import ActionFailed, StepContext
from ..engine.poll import PollTimeout, poll

if TYPE_CHECKING:
    import paramiko

LOCAL = "local"
DEFAULT_USER = "ec2-user"
DEFAULT_PORT = 22
# Outputs keep the tail of stdout/stderr: enough for a diagnosis, small enough to journal.
OUTPUT_CAP = 64 * 1024
FP_RE = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")
BLOCK_RE = re.compile(r"-----BEGIN SSH HOST KEY FINGERPRINTS-----(.*?)"
                      r"-----END SSH HOST KEY FINGERPRINTS-----", re.S)
# Deployment meta where the infra phase (aws.wait host_keys_of) keeps the console's pins.
INFRA_HOST_KEYS = "ssh.host_key_fingerprints"
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

LineSink = Callable[[str, str], None]


# --------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------
def parse_fingerprints(value: str | list[str] | None) -> list[str]:
    """``SHA256:...`` fingerprints from a list of them, or from the raw EC2 console text.

    The console output holds other text (and a ``BEGIN SSH HOST KEY KEYS`` block of full
    public keys): when the fingerprint block is present only its lines are read.
    """
    if value is None:
        return []
    text = "\n".join(value) if isinstance(value, list) else value
    m = BLOCK_RE.search(text)
    if m:
        text = m.group(1)
    seen: list[str] = []
    for fp in FP_RE.findall(text):
        if fp not in seen:
            seen.append(fp)
    if not seen and text.strip():
        raise ActionFailed(
            "host_key_fingerprints holds no SHA256 fingerprint",
            diagnosis=f"Expected 'SHA256:' followed by 43 base64 characters, got {text[:120]!r}.",
            fix="Pass the fingerprints the infra phase read from the console output, e.g. "
                "'SHA256:abc...', or the whole BEGIN/END SSH HOST KEY FINGERPRINTS block.")
    return seen


def key_fingerprint(key: paramiko.PKey) -> str:
    """The OpenSSH SHA256 fingerprint of a public key (as ``ssh-keygen -l`` prints it)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


# --------------------------------------------------------------------------------------
# Targets and ~/.ssh/config
# --------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------
# Host keys
# --------------------------------------------------------------------------------------
class HostKeyProblem(Exception):
    """The server's host key is not one of the pinned ones (or nothing is pinned yet)."""

    def __init__(self, presented: list[tuple[str, str]], pins: list[str]) -> None:
        super().__init__("host key not trusted")
        self.presented = presented  # (key type, fingerprint) for every type we were shown
        self.pins = pins


def _key_algorithms(negotiated: str) -> list[str]:
    # Disabling one host key type makes the server present another on the next try.
    if "rsa" in negotiated:
        return ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
    return [negotiated]


@dataclass
class ExecResult:
    """What one command did."""

    exit_code: int
    stdout: str
    stderr: str
    duration: float
    # The connection died while the command ran: it may or may not have finished.
    dropped: bool = False
    timed_out: bool = False
    cancelled: bool = False
    # After a timeout or cancel: the command was signalled and ended (not left running).
    stopped: bool = False


class _Tail:
    """Splits a byte stream into lines for the log, keeps the last ``cap`` characters."""

    def __init__(self, stream: str, sink: LineSink, cap: int = OUTPUT_CAP) -> None:
        self.stream = stream
        self.sink = sink
        self.cap = cap
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.partial = ""
        self.kept: deque[str] = deque()
        self.kept_len = 0
        self.truncated = False

    def feed(self, data: bytes) -> None:
        text = self.partial + self.decoder.decode(data)
        *complete, self.partial = text.split("\n")
        for line in complete:
            self._line(line)
        # A line without newline that grows huge (progress bars) is still bounded.
        if len(self.partial) > self.cap:
            self._line(self.partial)
            self.partial = ""

    def _line(self, line: str) -> None:
        line = line.rstrip("\r")
        self.sink(line, self.stream)
        self.kept.append(line)
        self.kept_len += len(line) + 1
        while self.kept_len > self.cap and len(self.kept) > 1:
            self.kept_len -= len(self.kept.popleft()) + 1
            self.truncated = True

    def finish(self) -> str:
        self.partial += self.decoder.decode(b"", final=True)
        if self.partial:
            self._line(self.partial)
            self.partial = ""
        return "\n".join(self.kept) + ("\n" if self.kept else "")


class Connection(Protocol):
    """What the actions need from a connection (SSH or local)."""

    target: Target

    def exec(self, command: str, *, timeout: float | None, cancel: threading.Event | None,
             sink: LineSink, stdin: bytes | None = None) -> ExecResult: ...

    def put_file(self, local: Path, remote: str, mode: int) -> None: ...

    def chmod(self, remote: str, mode: int) -> None: ...

    def open_tunnel(self, remote_host: str, remote_port: int,
                    origin: tuple[str, int]) -> Any: ...

    def is_alive(self) -> bool: ...

    def close(self) -> None: ...


def _deadline_of(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


class SshConnection:
    """One paramiko client to one host, host key pinned, socket with TCP_NODELAY."""

    def __init__(self, target: Target, pins: list[str], *,
                 trust_known_hosts: bool = False) -> None:
        self.target = target
        self.pins = list(pins)
        # Only for a ProxyJump host: the operator's own bastion, known from known_hosts.
        self.trust_known_hosts = trust_known_hosts
        self.server_fingerprint: str | None = None
        self.server_key_type: str | None = None
        self._client: paramiko.SSHClient | None = None
        self._jump: SshConnection | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()
        self.connects = 0

    # -- connecting --------------------------------------------------------------------
    def _socket(self) -> Any:
        t = self.target
        if t.jump is not None:
            if self._jump is None:
                # The jump host is the operator's own: trusted through ~/.ssh/known_hosts.
                self._jump = SshConnection(t.jump, [], trust_known_hosts=True)
            return self._jump.open_tunnel(t.hostname, t.port, ("127.0.0.1", 0))
        sock = socket.create_connection((t.hostname, t.port), timeout=t.connect_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def connect(self) -> None:
        """Connect and authenticate; raise :class:`HostKeyProblem` or ActionFailed."""
        import paramiko

        t = self.target
        presented: list[tuple[str, str]] = []
        disabled: list[str] = []
        conn = self

        class Policy(paramiko.MissingHostKeyPolicy):
            def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                                 key: paramiko.PKey) -> None:
                fp = key_fingerprint(key)
                presented.append((key.get_name(), fp))
                if fp not in conn.pins:
                    raise HostKeyProblem(presented, conn.pins)

        for _ in range(4):  # at most one try per host key type the server may have
            client = paramiko.SSHClient()
            if self.trust_known_hosts:
                with contextlib.suppress(OSError):
                    client.load_system_host_keys()
                client.set_missing_host_key_policy(paramiko.RejectPolicy())
            else:
                client.set_missing_host_key_policy(Policy())
            try:
                sock = self._socket()
                client.connect(
                    t.hostname, port=t.port, username=t.user, sock=sock,
                    # paramiko accepts a list here; its stubs say str only.
                    key_filename=list(t.key_files) or None,  # type: ignore[arg-type]
                    allow_agent=t.use_defaults, look_for_keys=t.use_defaults,
                    timeout=t.connect_timeout, banner_timeout=t.connect_timeout,
                    auth_timeout=t.connect_timeout, channel_timeout=t.connect_timeout,
                    disabled_algorithms={"keys": disabled} if disabled else None)
            except HostKeyProblem as e:
                transport = client.get_transport()
                negotiated = transport.host_key_type if transport else None
                client.close()
                # The pins may be for another key type than the one negotiated (the console
                # block lists all of them, a parameter may hold just one): ask for the next.
                if self.pins and negotiated:
                    disabled += _key_algorithms(negotiated)
                    continue
                raise e from None
            except paramiko.SSHException as e:
                client.close()
                if disabled and not isinstance(e, paramiko.AuthenticationException):
                    # We ran out of host key types the server offers: none matched.
                    raise HostKeyProblem(presented, self.pins) from None
                raise self._connect_failed(e) from e
            except (OSError, EOFError) as e:
                client.close()
                raise self._connect_failed(e) from e
            except BaseException:
                client.close()
                raise
            self._client = client
            transport = client.get_transport()
            assert transport is not None
            transport.set_keepalive(30)
            self.server_key_type, self.server_fingerprint = (
                presented[-1] if presented else (transport.host_key_type or "", ""))
            self.connects += 1
            return
        raise HostKeyProblem(presented, self.pins)

    def _connect_failed(self, e: BaseException) -> ActionFailed:
        import paramiko

        t = self.target
        msg = f"cannot connect to {t}: {e.__class__.__name__}: {e}"
        if self.trust_known_hosts and isinstance(e, paramiko.SSHException) and not isinstance(
                e, paramiko.AuthenticationException):
            return ActionFailed(
                msg, diagnosis=f"The ProxyJump host {t} is checked against ~/.ssh/known_hosts "
                               "and its key is missing there or different.",
                fix=f"Connect once with OpenSSH (ssh -p {t.port} {t.user}@{t.hostname}) and "
                    "verify its fingerprint, then retry.")
        if isinstance(e, paramiko.AuthenticationException):
            keys = ", ".join(t.key_files) or "none given"
            return ActionFailed(
                msg,
                diagnosis=f"The server refused every key offered for user {t.user!r} "
                          f"(key files: {keys}; agent and ~/.ssh defaults "
                          f"{'tried' if t.use_defaults else 'not tried'}).",
                fix="Check the user (Amazon Linux: ec2-user) and that the key is the instance's "
                    "key pair (key_path, or the deployment's keys/id_ed25519).")
        if isinstance(e, ConnectionRefusedError):
            return ActionFailed(
                msg, diagnosis="The host answered but nothing listens on that port: sshd is not "
                               "running (yet), or the port is wrong.",
                fix="Wait for the instance to finish booting; check the port.")
        if isinstance(e, (TimeoutError, socket.timeout)):
            return ActionFailed(
                msg, diagnosis="No answer within the connect timeout: a security group or network "
                               "ACL drops the packets, the address is wrong, or the instance is "
                               "stopped.",
                fix="Check that the security group allows port 22 from your current IP "
                    "(operator_cidr) and that the instance is running.")
        return ActionFailed(msg, diagnosis="The SSH connection could not be set up.",
                            fix="Check the address, port and that the instance is running.")

    def is_alive(self) -> bool:
        c = self._client
        tr = c.get_transport() if c is not None else None
        return bool(tr is not None and tr.is_active())

    def client(self) -> paramiko.SSHClient:
        """The live client, reconnected if the transport died since the last use."""
        with self._lock:
            if not self.is_alive():
                self._drop_client()
                self.connect()
            assert self._client is not None
            return self._client

    def _drop_client(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def close(self) -> None:
        with self._lock:
            self._drop_client()
            if self._jump is not None:
                self._jump.close()
                self._jump = None

    # -- commands ----------------------------------------------------------------------
    def exec(self, command: str, *, timeout: float | None, cancel: threading.Event | None,
             sink: LineSink, stdin: bytes | None = None) -> ExecResult:
        """Run ``command``, stream its lines to ``sink`` as they arrive, wait for its status.

        ``timeout`` bounds the whole command and also catches a frozen server (no data, no
        status): keepalives would not, a channel timeout does. After a timeout the
        connection is closed, since it may be the connection that is stuck.
        Raises ``ChannelOpenError`` when the command could not even start.
        """
        import paramiko

        start = time.monotonic()
        deadline = _deadline_of(timeout)
        out, err = _Tail("stdout", sink), _Tail("stderr", sink)
        try:
            transport = self.client().get_transport()
            assert transport is not None
            chan = transport.open_session(timeout=self.target.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self._drop_client()
            raise ChannelOpenError(str(e)) from e
        try:
            chan.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError):
            # The request may have reached sshd before the connection died: that is a
            # drop mid-command, not "nothing ran".
            with contextlib.suppress(Exception):
                chan.close()
            self._drop_client()
            return ExecResult(exit_code=-1, stdout="", stderr="",
                              duration=time.monotonic() - start, dropped=True)
        try:
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()  # EOF on stdin: a command reading it does not hang
            rfd = chan.fileno()
            timed_out = cancelled = False
            while True:
                got = False
                if chan.recv_ready():
                    out.feed(chan.recv(65536))
                    got = True
                if chan.recv_stderr_ready():
                    err.feed(chan.recv_stderr(65536))
                    got = True
                if got:
                    continue
                if chan.exit_status_ready() and (chan.eof_received or chan.closed):
                    break
                if chan.closed:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    timed_out = True
                    break
                if cancel is not None and cancel.is_set():
                    cancelled = True
                    break
                wait = 0.25 if deadline is None else max(0.0, min(0.25,
                                                                  deadline - time.monotonic()))
                if chan.eof_received:
                    # No data can follow EOF, and the pipe stays readable from now on:
                    # selecting on it would spin (and starve paramiko's thread of the GIL).
                    chan.status_event.wait(wait)
                else:
                    select.select([rfd], [], [], wait)
            # Data that arrived together with the EOF, after the last recv_ready() check.
            while chan.recv_ready():
                out.feed(chan.recv(65536))
            while chan.recv_stderr_ready():
                err.feed(chan.recv_stderr(65536))
            stopped = False
            if (timed_out or cancelled) and transport.is_active():
                # Without a pty nothing tells the command its client gave up: ask sshd to
                # signal it (the 'signal' request; OpenSSH signals the process group).
                stopped = _stop_remote(chan)
            status = chan.exit_status if chan.exit_status_ready() else -1
            dropped = (not timed_out and not cancelled and status == -1
                       and _transport_died(transport))
        finally:
            with contextlib.suppress(Exception):
                chan.close()
        if ((timed_out or cancelled) and not stopped) or dropped:
            # The connection may be the frozen part: start clean next time.
            self._drop_client()
        return ExecResult(exit_code=status, stdout=out.finish(), stderr=err.finish(),
                          duration=time.monotonic() - start, dropped=dropped,
                          timed_out=timed_out, cancelled=cancelled, stopped=stopped)

    # -- files -------------------------------------------------------------------------
    def sftp(self) -> paramiko.SFTPClient:
        with self._lock:
            client = self.client()
            if self._sftp is None:
                self._sftp = client.open_sftp()
            return self._sftp

    def put_file(self, local: Path, remote: str, mode: int) -> None:
        """Write ``remote`` atomically with ``mode``: temp name, chmod, rename."""
        sftp = self.sftp()
        d, name = remote.rsplit("/", 1) if "/" in remote else (".", remote)
        tmp = f"{d}/.{name}.elematrix-{secrets.token_hex(4)}"
        try:
            # SFTP put does not keep modes: set it on the temp file before it gets its name,
            # so a secret is never readable under its final name.
            with sftp.open(tmp, "wb") as f:
                sftp.chmod(tmp, mode)
                f.set_pipelined(True)
                with local.open("rb") as src:
                    shutil.copyfileobj(src, f, 256 * 1024)
            sftp.posix_rename(tmp, remote)
        except BaseException:
            with contextlib.suppress(Exception):
                sftp.remove(tmp)
            raise

    def chmod(self, remote: str, mode: int) -> None:
        self.sftp().chmod(remote, mode)

    # -- tunnels -----------------------------------------------------------------------
    def open_tunnel(self, remote_host: str, remote_port: int, origin: tuple[str, int]) -> Any:
        """A direct-tcpip channel to ``remote_host:remote_port`` as seen from the host."""
        transport = self.client().get_transport()
        assert transport is not None
        return transport.open_channel("direct-tcpip", (remote_host, remote_port), origin,
                                      timeout=self.target.connect_timeout)


def _signal_request(chan: Any, sig: str) -> None:
    """Send the RFC 4254 'signal' channel request (paramiko has no public API for it)."""
    from paramiko.common import cMSG_CHANNEL_REQUEST
    from paramiko.message import Message

    m = Message()
    m.add_byte(cMSG_CHANNEL_REQUEST)
    m.add_int(chan.remote_chanid)
    m.add_string("signal")
    m.add_boolean(False)
    m.add_string(sig)
    chan.transport._send_user_message(m)


def _stop_remote(chan: Any, grace: float = 1.0) -> bool:
    """SIGTERM, then SIGKILL, the remote command; True when it then ended."""
    for sig in ("TERM", "KILL"):
        try:
            _signal_request(chan, sig)
        except Exception:
            return False
        if chan.status_event.wait(grace):
            return True
    return False


def _transport_died(transport: Any) -> bool:
    """Whether the channel ended because the connection died (not a signal-killed command:
    paramiko ignores ``exit-signal``, so both end with exit status -1)."""
    # paramiko closes the channels a moment before it marks the transport inactive; the
    # saved exception (EOF, socket error) is set first.
    try:
        return poll(lambda n: True if (not transport.is_active()
                                       or transport.saved_exception is not None) else None,
                    what="the transport to end", timeout=0.5, interval=0.01) is True
    except PollTimeout:
        return False


class ChannelOpenError(Exception):
    """The command could not be started (nothing ran): safe to reconnect and retry."""


class LocalConnection:
    """The same interface on this machine: ``/bin/sh -c`` and file copies."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.server_fingerprint: str | None = None

    def exec(self, command: str, *, timeout: float | None, cancel: threading.Event | None,
             sink: LineSink, stdin: bytes | None = None) -> ExecResult:
        start = time.monotonic()
        deadline = _deadline_of(timeout)
        out, err = _Tail("stdout", sink), _Tail("stderr", sink)
        proc = subprocess.Popen(["/bin/sh", "-c", command],
                                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)  # own group: a timeout kills it all
        if stdin and proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(stdin)
            proc.stdin.close()
        assert proc.stdout is not None and proc.stderr is not None
        streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
        timed_out = cancelled = False
        while streams:
            if deadline is not None and time.monotonic() >= deadline:
                timed_out = True
                break
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            wait = 0.25 if deadline is None else max(0.0, min(0.25, deadline - time.monotonic()))
            ready, _, _ = select.select(list(streams), [], [], wait)
            for fd in ready:
                data = os.read(fd, 65536)
                if data:
                    streams[fd].feed(data)
                else:
                    del streams[fd]
        if timed_out or cancelled:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        return ExecResult(exit_code=code if code >= 0 else -1, stdout=out.finish(),
                          stderr=err.finish(), duration=time.monotonic() - start,
                          timed_out=timed_out, cancelled=cancelled,
                          stopped=timed_out or cancelled)

    def put_file(self, local: Path, remote: str, mode: int) -> None:
        dest = Path(remote)
        tmp = dest.with_name(f".{dest.name}.elematrix-{secrets.token_hex(4)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as f, local.open("rb") as src:
                os.fchmod(f.fileno(), mode)  # umask must not weaken nor widen it
                shutil.copyfileobj(src, f, 256 * 1024)
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def chmod(self, remote: str, mode: int) -> None:
        os.chmod(remote, mode)

    def open_tunnel(self, remote_host: str, remote_port: int, origin: tuple[str, int]) -> Any:
        return socket.create_connection((remote_host, remote_port), timeout=10)

    def is_alive(self) -> bool:
        return True

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------
# Getting a connection in a step: pins, the operator's question, the run resource
# --------------------------------------------------------------------------------------
def _host_key_failure(target: Target, e: HostKeyProblem,
                      source: str = "the step") -> ActionFailed:
    shown = ", ".join(f"{fp} ({kt})" for kt, fp in e.presented) or "none"
    pins = ", ".join(e.pins) + f" (from {source})"
    return ActionFailed(
        f"host key of {target} does not match the pinned fingerprints",
        diagnosis=f"The server presented {shown}; the expected fingerprints are {pins}. "
                  "Either the instance was replaced (new host keys), the address now belongs to "
                  "another machine, or something is intercepting the connection. "
                  "The connection was closed before logging in.",
        fix="Compare with the instance console output (aws ec2 get-console-output, between "
            "BEGIN/END SSH HOST KEY FINGERPRINTS). If the instance was legitimately replaced, "
            "re-run the infra phase so the new fingerprints are read, or pass them as "
            "host_key_fingerprints.")


def open_connection(ctx: StepContext, target: Target, given: list[str],
                    *, interactive: bool = True, note: bool = True) -> Connection:
    """Connect with pinned host keys; ask the operator when nothing is pinned.

    Pins come from the step (``given``), else from what this deployment trusted before for
    this host (``ctx.get_meta('ssh.hostkeys.<host>:<port>')``), else from the instance's
    console fingerprints the infra phase stored (``ssh.host_key_fingerprints``). With no
    pins the operator is shown the fingerprint and must choose it (``ctx.questions.choose``):
    never accepted silently, not even with ``--yes``; a headless run without a terminal is
    refused and must pass ``host_key_fingerprints``. A mismatch is never offered. What was
    trusted is remembered.
    """
    if target.local:
        return LocalConnection(target)
    remembered = ctx.get_meta(target.meta_key) or []
    # The infra phase (aws.wait host_keys_of) stores the instance's console fingerprints
    # for the deployment: the pins of last resort when the step gives none.
    infra = ctx.get_meta(INFRA_HOST_KEYS) or []
    if given:
        pins, source = given, "the step's host_key_fingerprints"
    elif remembered:
        pins, source = list(remembered), f"this deployment's trusted keys ({target.meta_key})"
    else:
        pins, source = list(infra), f"the instance console output ({INFRA_HOST_KEYS})"
    conn = SshConnection(target, pins)
    try:
        conn.connect()
    except HostKeyProblem as e:
        conn.close()
        if pins:
            raise _host_key_failure(target, e, source) from None
        kt, fp = e.presented[-1]
        never = ("A host key is never accepted without the operator, not even with --yes.")
        fix = ("Pass host_key_fingerprints (the infra phase reads them from the console output), "
               "or run interactively and compare the fingerprint with the console output.")
        if not interactive:
            raise ActionFailed(
                f"host key of {target} is not pinned",
                diagnosis=f"The server presented {fp} ({kt}) and no expected fingerprint is "
                          f"known. {never}", fix=fix) from None
        prompt = (f"{target} presented a {kt} host key with fingerprint\n  {fp}\n"
                  "No expected fingerprint is known for it. Accept it only if it matches the "
                  "instance's console output (BEGIN/END SSH HOST KEY FINGERPRINTS).")
        # Asked even under --yes: the questions implementation refuses when nobody can
        # answer (headless without a terminal), it never answers this one by itself.
        choice = ctx.questions.choose(ctx.step_id, prompt, [fp])
        if choice != fp:
            raise ActionFailed(
                f"host key of {target} was not accepted",
                diagnosis=f"The server presented {fp} ({kt}); it was refused (by the operator, "
                          f"or because no terminal could ask). {never}", fix=fix) from None
        conn = SshConnection(target, [fp])
        try:
            conn.connect()
        except HostKeyProblem as e2:  # the key changed between two handshakes
            conn.close()
            raise _host_key_failure(target, e2) from None
        pins = [fp]
    if pins != list(remembered):
        ctx.set_meta(target.meta_key, pins)
    if note:
        ctx.note("ssh.connect", host=target.hostname, port=target.port, user=target.user,
                 host_key=conn.server_fingerprint, key_type=conn.server_key_type)
    return conn


def connection(ctx: StepContext, target: Target, given: list[str],
               *, interactive: bool = True) -> Connection:
    """The run's shared connection to ``target`` (created on first use, closed at run end)."""
    conn: Connection = ctx.resource(
        target.resource_key,
        lambda: open_connection(ctx, target, given, interactive=interactive),
        lambda c: c.close())
    fp = getattr(conn, "server_fingerprint", None)
    if given and fp and fp not in given:
        # Reused connection, but this step pins other keys: the step's pins win.
        ctx.drop_resource(target.resource_key)
        return connection(ctx, target, given, interactive=interactive)
    return conn


class Forwarder:
    """A listening port on 127.0.0.1 whose connections are tunnelled to a host-side port.

    Each accepted connection gets a direct-tcpip channel (or, for ``local``, a plain TCP
    connection) and a thread copying bytes both ways. The connection is owned: closing
    the forwarder closes it.
    """

    def __init__(self, conn: Connection, remote_host: str, remote_port: int,
                 local_port: int = 0, bind: str = "127.0.0.1") -> None:
        self.conn = conn
        self.remote_host = remote_host
        self.remote_port = remote_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.listener.bind((bind, local_port))
        except OSError:
            self.listener.close()
            raise
        self.listener.listen(64)
        # accept() is not woken by close() from another thread on Linux: poll instead.
        self.listener.settimeout(0.5)
        self.local_port = int(self.listener.getsockname()[1])
        self.errors: list[str] = []
        self.connections = 0
        self._stop = threading.Event()
        self._open: set[Any] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"ssh-forward-{self.local_port}")
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, addr = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # listener closed
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections += 1
            threading.Thread(target=self._pump, args=(sock, addr), daemon=True,
                             name=f"ssh-forward-{self.local_port}-{self.connections}").start()

    def _pump(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        try:
            chan = self.conn.open_tunnel(self.remote_host, self.remote_port, addr)
        except Exception as e:
            self.errors.append(f"{e.__class__.__name__}: {e}")
            sock.close()
            return
        with self._lock:
            self._open.update((sock, chan))
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([sock, chan], [], [], 0.5)
                if sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        break
                    chan.sendall(data)
                if chan in ready:
                    data = chan.recv(65536)
                    if not data:
                        break
                    sock.sendall(data)
        except OSError:
            pass  # either side went away: close both
        finally:
            with self._lock:
                self._open.discard(sock)
                self._open.discard(chan)
            for s in (chan, sock):
                with contextlib.suppress(Exception):
                    s.close()

    def probe(self) -> None:
        """Open (and close) one tunnel now, so a dead remote port fails the step, not later."""
        chan = self.conn.open_tunnel(self.remote_host, self.remote_port, ("127.0.0.1", 0))
        with contextlib.suppress(Exception):
            chan.close()

    def close(self) -> None:
        self._stop.set()
        # shutdown() stops the listening at once (close() alone waits for the blocked accept).
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.listener.close()
        self._thread.join(timeout=2)
        with self._lock:
            pairs = list(self._open)
        for s in pairs:
            with contextlib.suppress(Exception):
                s.close()
        self.conn.close()
