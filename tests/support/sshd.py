"""A real OpenSSH ``sshd`` on a loopback address, for tests and benchmarks.

``SshServer`` starts ``/usr/sbin/sshd -D`` with its own config, its own host keys and one
authorized client key, on a loopback address (``127.0.0.1`` or any other ``127.x``
address: moto hands out Elastic IPs in 127.x, so the same server can stand in for the
instance) and a free port. It exposes what a runbook would learn from AWS:
the address, port, login user, the private key, and the host key fingerprints formatted
exactly like the block EC2 prints in the console output::

    -----BEGIN SSH HOST KEY FINGERPRINTS-----
    256 SHA256:... no comment (ECDSA)
    256 SHA256:... no comment (ED25519)
    -----END SSH HOST KEY FINGERPRINTS-----

As root (the CI case) it logs in as ``ec2-user``, a plain user it creates once (shell
bash, passwordless sudo, like the Amazon Linux default user); ``user="root"`` logs in as
root instead (``PermitRootLogin prohibit-password``). Not root by default on purpose:
root's ``~/.bashrc`` on these machines runs ``pyenv init`` (bash sources it for sshd
sessions), which adds ~100 ms to every command. As a plain user it logs in as that user.
Import it as ``tests.support.sshd`` (run pytest as ``python -m pytest`` from the repo
root so the repo is on ``sys.path``).

Usage::

    with SshServer() as srv:
        ...  srv.host, srv.port, srv.user, srv.key_path, srv.fingerprints, srv.console_block
"""

from __future__ import annotations

import getpass
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                # sshd speaks first: a banner means it is really up (not just bound).
                s.settimeout(2)
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"sshd did not listen on {host}:{port} within {timeout}s")


def ensure_user(name: str) -> None:
    """Create a login user like EC2's default one (key-only, passwordless sudo), once."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        r = subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name],
                           capture_output=True, text=True)
        if r.returncode not in (0, 9):  # 9: created meanwhile by a parallel test
            raise RuntimeError(f"useradd {name} failed: {r.stderr}") from None
    # With UsePAM no, sshd refuses a locked account ('!' in shadow): '*' is "no password".
    subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
    sudoers = Path("/etc/sudoers.d")
    if sudoers.is_dir():
        f = sudoers / f"elematrix-{name}"
        if not f.exists():
            f.write_text(f"{name} ALL=(ALL) NOPASSWD:ALL\n")
            f.chmod(0o440)


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (read from /proc, no psutil needed)."""
    out: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Field 4 is the ppid; the command name (field 2) may contain spaces: split after ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


class SshServer:
    """A throw-away OpenSSH server on a loopback address. Use as a context manager."""

    def __init__(self, bind: str = "127.0.0.1", port: int | None = None,
                 key_types: tuple[str, ...] = ("ecdsa", "ed25519"),
                 extra_config: str = "", user: str | None = None,
                 command_prefix: tuple[str, ...] = ()) -> None:
        # command_prefix: argv run before sshd's own (it must exec sshd, keeping the pid),
        # e.g. the rehearsal's FakeInstance enters a private mount namespace with it.
        self.host = bind
        self.port = port or 0
        self.key_types = key_types
        self.extra_config = extra_config
        self.command_prefix = command_prefix
        self.user = user or ("ec2-user" if os.geteuid() == 0 else getpass.getuser())
        self.dir = Path(tempfile.mkdtemp(prefix="elematrix-sshd-"))
        self.key_path = self.dir / "client_ed25519"
        self.host_key_paths: list[Path] = []
        self.fingerprint_lines: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "sshd.log"

    # -- what a runbook would learn from AWS ---------------------------------------------
    @property
    def fingerprints(self) -> list[str]:
        """``SHA256:...`` fingerprints of the host keys."""
        return [line.split()[1] for line in self.fingerprint_lines]

    @property
    def console_block(self) -> str:
        """The fingerprints as EC2 prints them in the instance console output."""
        return "\n".join(["-----BEGIN SSH HOST KEY FINGERPRINTS-----",
                          *self.fingerprint_lines,
                          "-----END SSH HOST KEY FINGERPRINTS-----"])

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def session_pids(self) -> list[int]:
        """Pids of the per-connection sshd processes (children of the listener)."""
        return _children(self.pid)

    def connection_pids(self) -> list[int]:
        """Every sshd process serving a connection (privileged monitor and its user child),
        not the commands they run. SIGKILL them to drop the connections, SIGSTOP them to
        freeze the server as seen by the client."""
        out: list[int] = []
        todo = self.session_pids()
        while todo:
            pid = todo.pop()
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm == "sshd":
                out.append(pid)
                todo.extend(_children(pid))
        return out

    def signal_connections(self, sig: int) -> list[int]:
        """Send ``sig`` to every connection's sshd processes; returns their pids."""
        pids = self.connection_pids()
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return pids

    def inputs(self, **extra: object) -> dict[str, object]:
        """The common ssh.* inputs for this server (pinned)."""
        d: dict[str, object] = {"host": self.host, "port": self.port, "user": self.user,
                                "key_path": str(self.key_path),
                                "host_key_fingerprints": self.fingerprints,
                                "connect_timeout": 5}
        d.update(extra)
        return d

    def user_dir(self, name: str) -> Path:
        """A fresh directory the login user may write (for upload destinations)."""
        d = self.dir / "home" / name
        d.mkdir(parents=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(self.user)
            os.chown(d, pw.pw_uid, pw.pw_gid)
        return d

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> SshServer:
        if not Path(SSHD).exists():
            raise RuntimeError(f"{SSHD} is missing: apt-get install -y openssh-server")
        if os.geteuid() == 0:
            # sshd's privilege separation directory; the Debian package creates it at boot only.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
            if self.user != "root":
                ensure_user(self.user)
        self.dir.chmod(0o755)
        (self.dir / "home").mkdir(mode=0o755)
        for kt in self.key_types:
            path = self.dir / f"ssh_host_{kt}_key"
            subprocess.run([SSH_KEYGEN, "-q", "-t", kt, "-N", "", "-C", "", "-f", str(path)],
                           check=True)
            self.host_key_paths.append(path)
            # Same command cloud-init uses for the console block: "256 SHA256:... no comment (X)".
            fp = subprocess.run([SSH_KEYGEN, "-l", "-E", "sha256", "-f", f"{path}.pub"],
                                check=True, capture_output=True, text=True).stdout.strip()
            self.fingerprint_lines.append(fp)
        subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "elematrix-test",
                        "-f", str(self.key_path)], check=True)
        auth = self.dir / "authorized_keys"
        shutil.copy(f"{self.key_path}.pub", auth)
        # sshd reads it with the user's privileges: it must be readable by that user.
        auth.chmod(0o644)
        for attempt in range(5):
            port = self.port or free_port(self.host)
            cfg = self.dir / "sshd_config"
            cfg.write_text("\n".join([
                f"ListenAddress {self.host}:{port}",
                *[f"HostKey {p}" for p in self.host_key_paths],
                f"AuthorizedKeysFile {auth}",
                f"PidFile {self.dir / 'sshd.pid'}",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                # Keys live under /tmp, which StrictModes rejects.
                "StrictModes no",
                "UsePAM no",
                "AllowTcpForwarding yes",
                "X11Forwarding no",
                "PrintMotd no",
                "LogLevel VERBOSE",
                "MaxSessions 50",
                "MaxStartups 100:30:200",
                "Subsystem sftp internal-sftp",
                self.extra_config,
                "",
            ]))
            log = self.log_path.open("ab")
            self.proc = subprocess.Popen([*self.command_prefix, SSHD, "-D", "-e", "-f", str(cfg)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            log.close()
            try:
                _wait_port(self.host, port, self.proc, timeout=10)
            except RuntimeError:
                self.stop()
                if self.port or attempt == 4:
                    raise RuntimeError(f"sshd failed to start:\n{self.log()}") from None
                continue  # the free port was taken meanwhile: try another
            self.port = port
            return self
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the listener and every session it spawned."""
        if self.proc is None:
            return
        for pid in self.connection_pids():
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SshServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
