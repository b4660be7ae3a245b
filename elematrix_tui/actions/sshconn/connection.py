"""One SSH connection to a host: its own TCP socket with ``TCP_NODELAY``, pinned host
keys, exec with streaming, timeout and cancel, SFTP uploads, direct-tcpip tunnels.
paramiko is imported lazily, inside the methods."""

from __future__ import annotations

import contextlib
import secrets
import select
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...engine.action import ActionFailed
from ...engine.poll import PollTimeout, poll
from .base import ChannelOpenError, ExecResult, LineSink, OutputTail, deadline_of
from .hostkeys import HostKeyProblem, key_algorithms, key_fingerprint
from .target import Target

if TYPE_CHECKING:
    import paramiko


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
                    disabled += key_algorithms(negotiated)
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
        deadline = deadline_of(timeout)
        out, err = OutputTail("stdout", sink), OutputTail("stderr", sink)
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
