"""``FakeInstance``: the rehearsal's EC2 instance, on this machine (docs/testing-rehearsal.md).

- SSH: a real OpenSSH sshd on the instance's address (moto hands out Elastic IPs in 127.x),
  port 22 when free; login ``ec2-user``, key only, passwordless sudo, like AL2023.
- Docker: the REAL client (``/usr/bin/docker``, ``docker compose``) talking to the machine's
  real engine. The compose file, bind mounts (from the uploaded directory on this machine's
  disk), named volumes, healthchecks and published ports all run for real. ec2-user gets
  docker access the way our user-data gives it on AL2023 (``usermod -aG docker ec2-user``).
- ``cloud-init`` and ``systemctl`` are small shims (``fakehost/shims.py``: no systemd here);
  the systemctl shim runs the units' ``ExecStart`` lines with the real docker.

Sharing the one engine (machine-wide side effects, undone by :meth:`FakeInstance.stop`):
- every session and sudo get ``COMPOSE_PROJECT_NAME=<PROJECT_PREFIX>-<hash>``, so the stack's
  containers and volumes carry this branch's prefix instead of the compose file's
  ``name: elematrix`` (compose's documented precedence: -p, then COMPOSE_PROJECT_NAME, then
  ``name:``); the rendered file is unchanged;
- ``stack_lock()`` is held from start to stop: the stack publishes 127.0.0.1:8008 and the
  http port on every interface, so one stack at a time on the machine;
- stop() runs ``docker compose down -v`` for the project and removes whatever containers,
  volumes and networks still carry its label;
- a sudoers drop-in (``secure_path`` with the two shims first, ``env_keep`` for the AWS
  variables, the project name and the shims' state), removed at stop();
- /var/lib/elematrix markers user-data leaves behind (only the files it created are removed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tests.rehearsal.fakehost import shims
from tests.support.docker import stack_lock
from tests.support.sshd import SshServer

REPO = Path(__file__).resolve().parents[2]
SHIM_DIR = Path(__file__).resolve().parent / "fakehost" / "bin"
AWS_CLI = REPO / ".tools" / "awscli" / "bin" / "aws"
SUDOERS_DIR = Path("/etc/sudoers.d")
# Passed through SSH sessions and sudo so `aws s3 cp` in backup.sh reaches the moto server.
AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION")
# This branch's prefix for compose projects on the shared engine (BRIEF: name them so).
PROJECT_PREFIX = "rer"
# What the user-data script leaves behind on a real instance (the runbook reads install-path).
CLOUD_INIT_STATE = Path("/var/lib/elematrix")
# The instance's extra programs (the aws CLI): one shared directory, so that the sudoers
# drop-ins of concurrent instances (keyed by login user) say exactly the same thing.
BIN_DIR = Path("/tmp/elematrix-fakehost-bin")
DOCKER = "/usr/bin/docker"  # what the units' ExecStart name; AL2023's docker package too


def missing_binaries() -> list[str]:
    """What this machine lacks for a FakeInstance (empty when everything is there)."""
    out = []
    if os.geteuid() != 0:
        out.append("root (the fake instance runs sshd on a 127.x address, edits sudoers)")
    for p in (Path("/usr/sbin/sshd"), Path("/usr/bin/sudo"), Path(DOCKER)):
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


# moto's SAMPLE_CONSOLE_OUTPUT as moto ships it (moto_points_at patches the module's copy).
_CONSOLE_BASE: str | None = None


@contextlib.contextmanager
def moto_points_at(inst: FakeInstance) -> Iterator[None]:
    """Make an in-process moto (``mock_aws`` or ``ThreadedMotoServer``) describe ``inst``:
    every Elastic IP it allocates is ``inst.address`` (moto picks a random 127.x), and
    ``get_console_output`` ends with the instance's host key blocks, as EC2 prints them."""
    from unittest import mock

    import moto.ec2.models.elastic_ip_addresses as eip
    import moto.ec2.responses.general as general

    global _CONSOLE_BASE
    if _CONSOLE_BASE is None:  # moto's own text, before any patch of ours
        _CONSOLE_BASE = general.SAMPLE_CONSOLE_OUTPUT
    # Nested (a second instance beside the first): only this instance's host keys, as its
    # own console would print them; never the first's block before them.
    console = _CONSOLE_BASE + inst.console_output()
    with mock.patch.object(eip, "random_ip", lambda: inst.address), \
            mock.patch.object(general, "SAMPLE_CONSOLE_OUTPUT", console):
        yield


def docker(*args: str, timeout: float = 300, check: bool = False,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real docker client, as root on this machine."""
    return subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout,
                          check=check, env=env)


def remove_project(project: str) -> None:
    """``down -v`` for a compose project, then whatever still carries its label."""
    label = f"label=com.docker.compose.project={project}"
    docker("compose", "-p", project, "down", "-v", "--remove-orphans", "-t", "5")
    for kind in ("container", "volume", "network"):
        flag = ["-a"] if kind == "container" else []
        ids = docker(kind, "ls", *flag, "-q", "--filter", label).stdout.split()
        if ids:
            rm = ["rm", "-f"] if kind in ("container", "volume") else ["rm"]
            docker(kind, *rm, *ids)


class _VolumeEvents:
    """``docker events`` for volumes, from start() on: how many times a volume came into
    existence is how many times the postgres entrypoint found an empty data directory.

    The engine logs a ``create`` event for every create call, also for a volume that
    already exists (compose calls it on each ``up``: moby volume/service/service.go Create
    logs unconditionally), so only a create with no live volume of that name counts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None

    def start(self) -> None:
        self._out = self.path.open("wb")
        self.proc = subprocess.Popen(
            [DOCKER, "events", "--filter", "type=volume", "--filter", "event=create",
             "--filter", "event=destroy", "--format", "{{json .}}"], stdout=self._out,
            stderr=subprocess.DEVNULL)

    def created(self, name: str) -> int:
        n, exists = 0, False
        for line in self.path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                ev = json.loads(line)
                if ev.get("Actor", {}).get("ID") != name:
                    continue
                if ev.get("Action") == "create" and not exists:
                    n, exists = n + 1, True
                elif ev.get("Action") == "destroy":
                    exists = False
        return n

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        if self._out is not None:
            self._out.close()
            self._out = None


class FakeInstance:
    """A rehearsal instance: real sshd on ``address``, the real Docker engine behind it."""

    def __init__(self, address: str, state_root: Path, *, port: int | None = None,
                 user: str | None = None, aws_env: dict[str, str] | None = None,
                 unit_dir: Path | None = None, cloud_init_markers: bool = True,
                 project: str | None = None, hold_lock: bool = True) -> None:
        """``port=None``: 22 when free on ``address``, else a free port (see :attr:`port`).
        ``aws_env``: AWS_* variables for the session (a moto server); missing ones are taken
        from this process's environment. ``unit_dir``: where the runbook installs its
        systemd units (default ``<state_root>/systemd``). ``project``: the compose project
        name (default ``rer-<hash of state_root>``). ``hold_lock=False``: the caller holds
        ``stack_lock()`` already, for this stack beside its own (the restore drill's second
        instance, its stack on other host ports: an flock taken again by this process on a
        new descriptor would wait for itself)."""
        self.address = address
        self.state_root = Path(state_root).resolve()
        self.requested_port = port
        env = {k: os.environ[k] for k in AWS_VARS if k in os.environ}
        env.update(aws_env or {})
        self.aws_env = env
        self.unit_dir = Path(unit_dir) if unit_dir else self.state_root / "systemd"
        self.sshd = SshServer(bind=address, port=None, user=user)
        self._sudoers = SUDOERS_DIR / f"elematrix-fakehost-{os.getpid()}-{id(self):x}"
        digest = hashlib.sha256(str(self.state_root).encode()).hexdigest()[:10]
        self.project = project or f"{PROJECT_PREFIX}-{digest}"
        self.bin_dir = BIN_DIR
        self.cloud_init_markers = cloud_init_markers
        self._created: list[Path] = []
        self._lock: contextlib.ExitStack | None = None
        self.hold_lock = hold_lock
        self._events = _VolumeEvents(self.state_root / "volume-events.jsonl")
        self.started = False
        self.lock_wait_s = 0.0

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
            "[    1.234567] cloud-init[1]: Cloud-init v. 24.1 running 'init'",
            f"ci-info: | lo | True | {self.address} | 255.0.0.0 | host | . |",
            "#############################################################",
            self.sshd.console_block,
            "-----BEGIN SSH HOST KEY KEYS-----",
            *[" ".join(k) for k in keys],
            "-----END SSH HOST KEY KEYS-----",
            "#############################################################",
            "cloud-init[1]: Cloud-init v. 24.1 finished. Datasource DataSourceEc2.",
            "",
        ])

    def authorize_key(self, public_key: str) -> None:
        """Let another key log in (the runbook's key pair, created in moto or imported)."""
        line = public_key.strip()
        if not line.startswith(("ssh-", "ecdsa-")):
            raise ValueError("not an OpenSSH public key line")
        with open(self.sshd.dir / "authorized_keys", "a") as f:
            f.write(line + "\n")

    def ssh_inputs(self, **extra: object) -> dict[str, object]:
        """The ssh.* action inputs for this instance (host key pinned)."""
        return self.sshd.inputs(**extra)

    # -- the engine's view -----------------------------------------------------------------
    def volume(self, volume: str) -> str:
        """The engine's name of one of the stack's named volumes (``postgres-data``)."""
        return f"{self.project}_{volume}"

    def initdb_count(self) -> int:
        """How many times the postgres data volume was created since start(): the postgres
        entrypoint runs initdb only on an empty data directory, i.e. a new volume."""
        return self._events.created(self.volume("postgres-data"))

    def postgres_init_logged(self) -> int:
        """How often the postgres container's log shows the entrypoint's initdb."""
        out = docker("compose", "-p", self.project, "logs", "--no-log-prefix", "postgres")
        return (out.stdout + out.stderr).count("PostgreSQL init process complete")

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``docker compose -p <project> ARGS`` as root on the instance (no SSH)."""
        return docker("compose", "-p", self.project, *args, timeout=timeout)

    def log(self, service: str) -> str:
        r = self.compose("logs", "--no-log-prefix", service)
        return r.stdout + r.stderr

    def session_path(self) -> str:
        return f"{SHIM_DIR}:{self.bin_dir}:{shims.SYSTEM_PATH}"

    def session_env(self) -> dict[str, str]:
        """Environment every SSH session (and sudo, and the units) get on this instance."""
        return {"PATH": self.session_path(), shims.STATE_ENV: str(self.state_root),
                "COMPOSE_PROJECT_NAME": self.project, **self.aws_env}

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeInstance:
        if os.geteuid() != 0:
            raise RuntimeError("FakeInstance needs root (sshd on 127.x, sudoers, usermod)")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        lock = contextlib.ExitStack()
        t0 = time.monotonic()
        if self.hold_lock:
            lock.enter_context(stack_lock())
        self.lock_wait_s = time.monotonic() - t0  # another stack on the machine (bench)
        self._lock = lock
        remove_project(self.project)  # a killed earlier run of the same test
        self.state_root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_root, 0o755)
        self.unit_dir.mkdir(parents=True, exist_ok=True)
        self.bin_dir.mkdir(mode=0o755, exist_ok=True)
        aws = self.bin_dir / "aws"
        if AWS_CLI.exists() and not (aws.is_symlink() and aws.resolve() == AWS_CLI.resolve()):
            tmp = self.bin_dir / f".aws-{os.getpid()}"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(AWS_CLI)
            tmp.replace(aws)
        env = {k: v for k, v in self.session_env().items() if k != "PATH"}
        cfg = {"unit_dirs": [str(self.unit_dir), "/etc/systemd/system"],
               "env": {k: v for k, v in env.items() if k != shims.STATE_ENV},
               "bin_dir": str(self.bin_dir), "python": sys.executable}
        (self.state_root / "fakehost.json").write_text(json.dumps(cfg, indent=1))
        self._events.start()
        self._remove_stale_sudoers()
        self._write_sudoers()
        if self.cloud_init_markers:
            self._write_markers()
        # SetEnv (OpenSSH >= 8.7) applies after sshd's default PATH: the shims come first.
        setenv = " ".join(f'"{k}={v}"' for k, v in self.session_env().items())
        self.sshd.extra_config = f"SetEnv {setenv}"
        if self.requested_port is not None:
            self.sshd.port = self.requested_port
        elif port_free(self.address, 22):
            self.sshd.port = 22
        self.sshd.start()
        # What user-data does on AL2023: `usermod -aG docker ec2-user` (the login user may
        # then run docker without sudo, through the socket's group).
        if self.sshd.user != "root":
            subprocess.run(["usermod", "-aG", "docker", self.sshd.user], check=True,
                           capture_output=True)
        self.started = True

    @staticmethod
    def _remove_stale_sudoers() -> None:
        # A rehearsal killed before its teardown leaves its drop-in behind; a stale one
        # whose shims are gone overrides secure_path, and the real systemctl then fails
        # with "Failed to connect to bus". The pid in the name says whether its writer lives.
        for path in SUDOERS_DIR.glob("elematrix-fakehost-*"):
            try:
                pid = int(path.name.split("-")[2])
            except (IndexError, ValueError):
                continue
            if not Path(f"/proc/{pid}").exists():
                path.unlink(missing_ok=True)

    def _write_sudoers(self) -> None:
        # sudo resets PATH to secure_path and drops the environment: keep the shims first,
        # the AWS variables (backup.sh) and the project name for the login user.
        keep = " ".join([shims.STATE_ENV, "ELEMATRIX_FAKEHOST_*", "COMPOSE_PROJECT_NAME",
                         *AWS_VARS])
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
        version = docker("compose", "version").stdout.strip()
        for name, text in (("install-path", "preinstalled"), ("compose-version", version),
                           ("cloud-init.done", time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                             time.gmtime()))):
            p = CLOUD_INIT_STATE / name
            if not p.exists():
                p.write_text(text + "\n")
                self._created.insert(0, p)

    def stop(self) -> None:
        """Bring the stack down (``down -v``), stop the sshd, undo the machine edits."""
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            remove_project(self.project)
        self._events.stop()
        self.sshd.close()
        self._sudoers.unlink(missing_ok=True)
        for p in self._created:  # files first, then the directory if we made it
            with contextlib.suppress(OSError):
                p.rmdir() if p.is_dir() else p.unlink()
        self._created.clear()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        self.started = False

    def __enter__(self) -> FakeInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

