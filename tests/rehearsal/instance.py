"""``FakeInstance``: the rehearsal's EC2 instance, on this machine (docs/testing-rehearsal.md).

Everything about it is real except the Docker engine: a real OpenSSH sshd on the instance's
loopback address (moto hands out Elastic IPs in 127.x), real sudo, real files, real
PostgreSQL/Synapse/nginx processes. Only ``docker``, ``cloud-init`` and ``systemctl`` are
the test double of ``tests/rehearsal/fakehost`` (first on the SSH session's PATH and on
sudo's ``secure_path``), which starts the stack's services natively from the files the
runbook uploaded.

Machine-wide side effects, all undone by :meth:`FakeInstance.stop` (needs root):
- a marked block in /etc/hosts mapping the compose service names (postgres, synapse,
  element, nginx) to their loopback addresses, as a compose network's DNS would;
- a sudoers drop-in so ``sudo`` keeps the double on PATH and its state variable;
- the services the double started (stopped through its pid files).
So only one FakeInstance may run on a machine at a time (the service names are global).

Usage::

    with FakeInstance("127.0.0.77", tmp_path / "instance") as inst:
        inst.host, inst.port, inst.user, inst.key_path, inst.console_output()
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.rehearsal.fakehost import fakedocker
from tests.support.sshd import SshServer

REPO = Path(__file__).resolve().parents[2]
SHIM_DIR = Path(__file__).resolve().parent / "fakehost" / "bin"
PG_BIN = Path(os.environ.get("ELEMATRIX_PG_BIN", "/usr/lib/postgresql/15/bin"))
NGINX_BIN = Path(os.environ.get("ELEMATRIX_NGINX_BIN", "/usr/sbin/nginx"))
SYNAPSE_VENV = Path(os.environ.get("ELEMATRIX_SYNAPSE_VENV", str(REPO / ".venv-synapse")))
AWS_CLI = REPO / ".tools" / "awscli" / "bin" / "aws"
HOSTS = Path("/etc/hosts")
SUDOERS_DIR = Path("/etc/sudoers.d")
SERVICES = ("postgres", "synapse", "element", "nginx")
# Passed through SSH sessions and sudo so `aws s3 cp` in backup.sh reaches the moto server.
AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION")
_MARK = "elematrix-fakehost"
# What the user-data script leaves behind on a real instance (the runbook may check them);
# the double's cloud-init never runs user-data, so the instance writes them.
CLOUD_INIT_STATE = Path("/var/lib/elematrix")
# One record per live FakeInstance: the next start cleans up after a test process that died
# without stop() (services still bound to the service addresses would break the next run).
REGISTRY = Path(tempfile.gettempdir()) / "elematrix-fakehost-instances"
# The instance's extra programs (the aws CLI): one shared directory, so that the sudoers
# drop-ins of concurrent instances (keyed by login user) say exactly the same thing.
BIN_DIR = Path(tempfile.gettempdir()) / "elematrix-fakehost-bin"


def missing_binaries() -> list[str]:
    """What this machine lacks for a FakeInstance (empty when everything is there)."""
    out = []
    if os.geteuid() != 0:
        out.append("root (the fake instance edits /etc/hosts and sudoers, runs sshd and "
                   "initdb as postgres)")
    for p in (Path("/usr/sbin/sshd"), PG_BIN / "initdb", PG_BIN / "postgres", NGINX_BIN,
              SYNAPSE_VENV / "bin" / "python", Path("/usr/bin/sudo"), Path("/usr/bin/curl"),
              Path("/usr/bin/wget")):
        if not p.exists():
            out.append(str(p))
    return out


def port_free(host: str, port: int) -> bool:
    """Nothing listens on host:port right now (we could bind it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _owner_alive(pid: int, starttime: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[19] == starttime


def _self_starttime() -> str:
    return Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]


def cleanup_stale() -> list[str]:
    """Undo what FakeInstances of dead test processes left behind; returns their roots."""
    cleaned = []
    REGISTRY.mkdir(mode=0o755, exist_ok=True)
    for rec_path in REGISTRY.glob("*.json"):
        try:
            rec = json.loads(rec_path.read_text())
        except (OSError, ValueError):
            continue
        if _owner_alive(int(rec["pid"]), str(rec["starttime"])):
            continue
        root = Path(rec["state_root"])
        if root.exists():
            with contextlib.suppress(OSError):
                fakedocker.stop_all(root)
        with contextlib.suppress(OSError):
            _edit_hosts(str(root), None)
        Path(rec["sudoers"]).unlink(missing_ok=True)
        shutil.rmtree(rec["runtime"], ignore_errors=True)
        rec_path.unlink(missing_ok=True)
        cleaned.append(str(root))
    return cleaned


def namespaces_work() -> bool:
    """Can we give sshd a private /etc/hosts (root, CAP_SYS_ADMIN, util-linux unshare)?"""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "--", "sh", "-c",
                        "mount --bind /etc/hosts /etc/hosts"], capture_output=True)
    return r.returncode == 0


def _live_nets() -> set[str]:
    nets = set()
    for rec_path in REGISTRY.glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            nets.add(json.loads(rec_path.read_text())["service_net"])
    return nets


def _strip_blocks(text: str) -> str:
    out, skip = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith(f"# BEGIN {_MARK} "):
            skip = True
        elif skip and line.startswith(f"# END {_MARK} "):
            skip = False
        elif not skip:
            out.append(line)
    joined = "".join(out)
    return joined if joined.endswith("\n") or not joined else joined + "\n"


def _edit_hosts(remove_marker: str | None, add: str | None) -> None:
    """Rewrite /etc/hosts in place (same inode: it may be a bind mount), under a lock."""
    with open(HOSTS, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        lines = f.read().splitlines(keepends=True)
        out: list[str] = []
        skip = False
        for line in lines:
            if line.startswith(f"# BEGIN {_MARK} "):
                owner = line.split(" ", 3)[3].strip()
                # Our block, or a stale one whose instance dir is gone (a crashed test).
                if owner == remove_marker or not Path(owner).exists():
                    skip = True
                    continue
            if skip:
                if line.startswith(f"# END {_MARK} "):
                    skip = False
                continue
            out.append(line)
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        if add:
            out.append(add)
        f.seek(0)
        f.write("".join(out))
        f.truncate()


@contextlib.contextmanager
def moto_points_at(inst: FakeInstance) -> Iterator[None]:
    """Make an in-process moto (``mock_aws`` or ``ThreadedMotoServer``) describe ``inst``:
    every Elastic IP it allocates is ``inst.address`` (moto picks a random 127.x), and
    ``get_console_output`` ends with the instance's host key blocks, as EC2 prints them."""
    from unittest import mock

    import moto.ec2.models.elastic_ip_addresses as eip
    import moto.ec2.responses.general as general

    console = general.SAMPLE_CONSOLE_OUTPUT + inst.console_output()
    with mock.patch.object(eip, "random_ip", lambda: inst.address), \
            mock.patch.object(general, "SAMPLE_CONSOLE_OUTPUT", console):
        yield


class FakeInstance:
    """A rehearsal instance: real sshd on ``address``, the Docker test double on PATH."""

    def __init__(self, address: str, state_root: Path, *, port: int | None = None,
                 user: str | None = None, service_net: str | None = None,
                 aws_env: dict[str, str] | None = None, unit_dir: Path | None = None,
                 keep_runtime: bool = False, cloud_init_markers: bool = True,
                 isolation: str = "auto") -> None:
        """``port=None``: 22 when free on ``address``, else a free port (see :attr:`port`).
        ``service_net``: the services get ``<net>.2`` (postgres) to ``<net>.5`` (nginx);
        None: the first of 127.0.10, 127.0.11, ... no live FakeInstance uses.
        ``isolation``: how the service names resolve. "namespace": sshd (so every session,
        and every service the double starts from one) runs in a private mount namespace
        whose /etc/hosts has the names: concurrent instances do not see each other's.
        "hosts": a marked block in the machine's /etc/hosts (one instance at a time).
        "auto": namespace when ``unshare -m`` works here, else hosts.
        ``aws_env``: AWS_* variables for the session (a moto server); missing ones are taken
        from this process's environment. ``unit_dir``: where the runbook installs its
        systemd units (default ``<state_root>/systemd``). ``keep_runtime``: keep the
        volumes (in ``/tmp/elematrix-fakehost-<hash of state_root>``) after stop().
        ``cloud_init_markers``: write what user-data leaves in /var/lib/elematrix
        (cloud-init.done, install-path, compose-version); removed by stop()."""
        self.address = address
        self.state_root = Path(state_root).resolve()
        self.requested_port = port
        self.service_net = service_net
        self.service_addresses: dict[str, str] = {}
        if isolation not in ("auto", "namespace", "hosts"):
            raise ValueError(f"isolation {isolation!r}: auto, namespace or hosts")
        self.isolation = isolation
        env = {k: os.environ[k] for k in AWS_VARS if k in os.environ}
        env.update(aws_env or {})
        self.aws_env = env
        self.unit_dir = Path(unit_dir) if unit_dir else self.state_root / "systemd"
        self.sshd = SshServer(bind=address, port=None, user=user)
        self._sudoers = SUDOERS_DIR / f"elematrix-fakehost-{os.getpid()}-{id(self):x}"
        # Derived from state_root: a new FakeInstance on the same state root (a restarted
        # fixture) finds the same volumes when keep_runtime=True.
        digest = hashlib.sha256(str(self.state_root).encode()).hexdigest()[:12]
        self.runtime = Path(tempfile.gettempdir()) / f"elematrix-fakehost-{digest}"
        self.keep_runtime = keep_runtime
        self._registry_entry = REGISTRY / f"{digest}.json"
        self.bin_dir = BIN_DIR
        self.cloud_init_markers = cloud_init_markers
        self._created: list[Path] = []
        self.started = False

    # -- what a runbook learns from AWS ----------------------------------------------------
    @property
    def host(self) -> str:
        return self.address

    @property
    def port(self) -> int:
        """The sshd port: 22 unless it was taken (pass it as the runbook's ssh_port)."""
        return self.sshd.port

    @property
    def user(self) -> str:
        return self.sshd.user

    @property
    def key_path(self) -> Path:
        return self.sshd.key_path

    @property
    def fingerprints(self) -> list[str]:
        return self.sshd.fingerprints

    def console_output(self) -> str:
        """What ``ec2 get-console-output`` would print: boot noise and the host key blocks."""
        keys = [Path(f"{p}.pub").read_text().split()[:2] for p in self.sshd.host_key_paths]
        return "\n".join([
            "[    0.000000] Linux version 6.1.0 (elematrix rehearsal instance)",
            "[    1.234567] cloud-init[1]: Cloud-init v. 24.1 running 'init' (test double)",
            f"ci-info: | lo | True | {self.address} | 255.0.0.0 | host | . |",
            "#############################################################",
            self.sshd.console_block,
            "-----BEGIN SSH HOST KEY KEYS-----",
            *[" ".join(k) for k in keys],
            "-----END SSH HOST KEY KEYS-----",
            "#############################################################",
            "cloud-init[1]: Cloud-init v. 24.1 finished (test double). Datasource DataSourceEc2.",
            "",
        ])

    def authorize_key(self, public_key: str) -> None:
        """Let another key log in (the runbook's key pair, created in moto or imported)."""
        line = public_key.strip()
        if not line.startswith(("ssh-", "ecdsa-")):
            raise ValueError("not an OpenSSH public key line")
        with open(self.sshd.dir / "authorized_keys", "a") as f:
            f.write(line + "\n")

    def authorize_private_key(self, private_key_path: Path) -> None:
        """Authorize the public half of a private key file (e.g. the key pair moto made)."""
        pub = subprocess.run(["ssh-keygen", "-y", "-f", str(private_key_path)], check=True,
                             capture_output=True, text=True).stdout
        self.authorize_key(pub)

    def run_local(self, command: str, timeout: float = 300,
                  input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """Run a shell command as root *on the instance* without SSH (debugging, fixtures):
        same PATH and variables as a session, and in namespace mode the instance's
        /etc/hosts (entered with nsenter through the sshd's mount namespace)."""
        argv = ["sh", "-c", command]
        if self.isolation == "namespace":
            argv = ["nsenter", f"--mount=/proc/{self.sshd.pid}/ns/mnt", "--", *argv]
        env = {**self.session_env(), "HOME": "/root", "LANG": "C.UTF-8"}
        return subprocess.run(argv, env=env, capture_output=True, timeout=timeout,
                              input=input, cwd="/")

    def ssh_inputs(self, **extra: object) -> dict[str, object]:
        """The ssh.* action inputs for this instance (host key pinned)."""
        return self.sshd.inputs(**extra)

    # -- the double's state ----------------------------------------------------------------
    def initdb_count(self) -> int:
        """How many times the double ran initdb (lines of ``initdb.log``)."""
        p = self.state_root / "initdb.log"
        return len(p.read_text().splitlines()) if p.exists() else 0

    def volume_dir(self, volume: str, project: str = "elematrix") -> Path:
        """Where the double keeps a named volume (e.g. ``postgres-data``)."""
        return self.runtime / "volumes" / f"{project}_{volume}"

    def log(self, service: str, project: str = "elematrix") -> str:
        p = self.state_root / "logs" / project / f"{service}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def session_path(self) -> str:
        return f"{SHIM_DIR}:{self.bin_dir}:{fakedocker.SYSTEM_PATH}"

    def session_env(self) -> dict[str, str]:
        """Environment every SSH session (and sudo) gets on this instance."""
        return {"PATH": self.session_path(), fakedocker.STATE_ENV: str(self.state_root),
                **self.aws_env}

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeInstance:
        if os.geteuid() != 0:
            raise RuntimeError("FakeInstance needs root (/etc/hosts, sudoers, initdb as postgres)")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        cleanup_stale()
        if self.isolation == "auto":
            self.isolation = "namespace" if namespaces_work() else "hosts"
        if self.service_net is None:
            used = _live_nets()
            self.service_net = next(f"127.0.{k}" for k in range(10, 250)
                                    if f"127.0.{k}" not in used
                                    and not self.address.startswith(f"127.0.{k}."))
        self.service_addresses = {name: f"{self.service_net}.{i}"
                                  for i, name in enumerate(SERVICES, start=2)}
        if self.address in self.service_addresses.values():
            raise ValueError(f"instance address {self.address} collides with a service address")
        self.state_root.mkdir(parents=True, exist_ok=True)
        REGISTRY.mkdir(mode=0o755, exist_ok=True)
        self._registry_entry.write_text(json.dumps({
            "state_root": str(self.state_root), "pid": os.getpid(),
            "starttime": _self_starttime(), "sudoers": str(self._sudoers),
            "runtime": str(self.runtime), "service_net": self.service_net}))
        os.chmod(self.state_root, 0o755)
        self.unit_dir.mkdir(parents=True, exist_ok=True)
        self.bin_dir.mkdir(mode=0o755, exist_ok=True)
        aws = self.bin_dir / "aws"
        if AWS_CLI.exists() and not (aws.is_symlink() and aws.resolve() == AWS_CLI.resolve()):
            tmp = self.bin_dir / f".aws-{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(AWS_CLI)
            tmp.replace(aws)
        # Volumes and sockets live outside pytest's tmp dirs: a concurrent pytest session
        # resets /tmp/pytest-of-root to 0700 and PostgreSQL (user postgres) loses its data
        # dir mid-test. Short, too: a unix socket path must fit in 107 bytes.
        self.runtime.mkdir(mode=0o755, exist_ok=True)
        os.chmod(self.runtime, 0o755)
        (self.runtime / "pgsock").mkdir(mode=0o755, exist_ok=True)
        cfg = {"address": self.address, "services": self.service_addresses,
               "pg_bin": str(PG_BIN), "nginx_bin": str(NGINX_BIN),
               "synapse_python": str(SYNAPSE_VENV / "bin" / "python"),
               "python": sys.executable, "runtime": str(self.runtime),
               "unit_dirs": [str(self.unit_dir), "/etc/systemd/system"],
               "env": self.aws_env, "shim_dir": str(SHIM_DIR),
               "bin_dir": str(self.bin_dir)}
        (self.state_root / "fakehost.json").write_text(json.dumps(cfg, indent=1))
        block = "".join([f"# BEGIN {_MARK} {self.state_root}\n",
                         *[f"{a}\t{n}\n" for n, a in self.service_addresses.items()],
                         f"# END {_MARK} {self.state_root}\n"])
        if self.isolation == "namespace":
            # The machine's hosts file without other instances' blocks, plus ours, mounted
            # over /etc/hosts for sshd and everything started from its sessions.
            hosts = self.runtime / "hosts"
            hosts.write_text(_strip_blocks(HOSTS.read_text()) + block)
            hosts.chmod(0o644)
            self.sshd.command_prefix = (
                "unshare", "-m", "--propagation", "private", "--", "sh", "-c",
                'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts))
        else:
            _edit_hosts(str(self.state_root), block)
        self._write_sudoers()
        if self.cloud_init_markers:
            self._write_markers()
        # SetEnv (OpenSSH >= 8.7) applies after sshd's default PATH: the double comes first.
        setenv = " ".join(f'"{k}={v}"' for k, v in self.session_env().items())
        self.sshd.extra_config = f"SetEnv {setenv}"
        if self.requested_port is not None:
            self.sshd.port = self.requested_port
        elif port_free(self.address, 22):
            self.sshd.port = 22
        self.sshd.start()
        self.started = True

    def _write_sudoers(self) -> None:
        # sudo resets PATH to secure_path and drops the environment: keep the double first
        # and its state variable (plus the AWS ones for backup.sh) for the login user.
        keep = " ".join([f"{fakedocker.STATE_ENV}", "ELEMATRIX_FAKEHOST_*", *AWS_VARS])
        text = (f"# Written by tests/rehearsal/instance.py for {self.state_root}; removed at "
                "teardown.\n"
                f'Defaults:{self.sshd.user} secure_path="{self.session_path()}"\n'
                f'Defaults:{self.sshd.user} env_keep += "{keep}"\n')
        tmp = self._sudoers.with_name(f".{self._sudoers.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o440)
        tmp.replace(self._sudoers)

    def _write_markers(self) -> None:
        if not CLOUD_INIT_STATE.exists():
            CLOUD_INIT_STATE.mkdir(parents=True)
            self._created.append(CLOUD_INIT_STATE)
        for name, text in (("install-path", "test-double"),
                           ("compose-version", fakedocker.COMPOSE_VERSION_LINE),
                           ("cloud-init.done", "1970-01-01T00:00:00Z (test double)")):
            p = CLOUD_INIT_STATE / name
            if not p.exists():
                p.write_text(text + "\n")
                self._created.insert(0, p)

    def stop(self) -> None:
        """Stop every service the double started, the sshd, and undo the machine edits."""
        with contextlib.suppress(OSError):
            fakedocker.stop_all(self.state_root)
        self.sshd.close()
        if self.isolation == "hosts":
            with contextlib.suppress(OSError):
                _edit_hosts(str(self.state_root), None)
        self._sudoers.unlink(missing_ok=True)
        for p in self._created:  # files first, then the directory if we made it
            with contextlib.suppress(OSError):
                p.rmdir() if p.is_dir() else p.unlink()
        self._created.clear()
        if not self.keep_runtime:
            shutil.rmtree(self.runtime, ignore_errors=True)
        self._registry_entry.unlink(missing_ok=True)
        self.started = False

    def __enter__(self) -> FakeInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
