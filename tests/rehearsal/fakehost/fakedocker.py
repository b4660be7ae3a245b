"""Test double for the Docker engine on a rehearsal "instance" (see docs/testing-rehearsal.md).

The rehearsal runs the whole ``poc-ec2`` runbook for real except the Docker engine, which
these machines do not have. The runbook talks to the engine only through a handful of
``docker compose`` commands (plus ``cloud-init status`` and ``systemctl``); this module
answers exactly those, by starting the bundled stack's services NATIVELY from the files
the runbook uploaded:

- ``postgres`` image  -> PostgreSQL 15 (``initdb`` with the compose file's
  ``POSTGRES_INITDB_ARGS``, superuser/password/database like the image's entrypoint);
- ``matrixdotorg/synapse`` -> Synapse from the Synapse venv with the uploaded
  ``homeserver.yaml``, only the compose mounts (/config, /data, /media_store) and the
  listener address mapped, in an adapted copy (the uploaded file is never edited);
- ``vectorim/element-web`` -> a static server for the mounted ``config.json`` and a stub
  ``index.html``;
- ``nginx`` -> the system nginx with the uploaded ``default.conf``, mounts mapped, listening
  on its own address (port 80) and where compose publishes it.

Each service gets its own loopback address, and the instance fixture maps the service
names to them in /etc/hosts, so ``host: postgres`` and ``proxy_pass http://synapse:8008``
resolve as on a compose network. Anything the double does not understand exits 1 with
``test double: unsupported: ...`` so that a runbook change is noticed, not papered over.

Invoked by the shims in ``bin/`` as ``fakedocker.py docker|cloud-init|systemctl ARGS...``.
Its only configuration is ``$ELEMATRIX_FAKEHOST_STATE/fakehost.json``, written by
``tests/rehearsal/instance.py``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import pwd
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

STATE_ENV = "ELEMATRIX_FAKEHOST_STATE"
COMPOSE_VERSION = "v2.40.3"
DOUBLE = "elematrix test double"
COMPOSE_VERSION_LINE = f"Docker Compose version {COMPOSE_VERSION} ({DOUBLE})"
COMPOSE_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Unsupported(Exception):
    """Something the double does not emulate: exit 1, loudly."""


class Failed(Exception):
    """A failure docker compose itself would report (message, exit code)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------ host config


@dataclass
class Host:
    """The double's view of the instance, from ``<state>/fakehost.json``."""

    state: Path
    address: str
    services: dict[str, str]
    pg_bin: Path
    nginx_bin: Path
    synapse_python: Path
    python: Path
    # Volumes and PostgreSQL's socket: outside the test's tmp dirs, which pytest keeps 0700
    # (another pytest session re-tightens /tmp/pytest-of-<user> at any time).
    runtime: Path
    unit_dirs: list[Path]
    env: dict[str, str]
    shim_dir: Path
    bin_dir: Path  # the instance's extra programs (the aws CLI)

    @classmethod
    def load(cls) -> Host:
        root = os.environ.get(STATE_ENV)
        if not root:
            raise Failed(f"test double: {STATE_ENV} is not set (the instance fixture sets it "
                         "for ssh sessions and sudo)")
        cfg = json.loads((Path(root) / "fakehost.json").read_text())
        return cls(state=Path(root), address=cfg["address"], services=cfg["services"],
                   pg_bin=Path(cfg["pg_bin"]), nginx_bin=Path(cfg["nginx_bin"]),
                   synapse_python=Path(cfg["synapse_python"]), python=Path(cfg["python"]),
                   runtime=Path(cfg["runtime"]),
                   unit_dirs=[Path(p) for p in cfg["unit_dirs"]], env=dict(cfg["env"]),
                   shim_dir=Path(cfg["shim_dir"]), bin_dir=Path(cfg["bin_dir"]))

    def service_address(self, name: str) -> str:
        try:
            return self.services[name]
        except KeyError:
            raise Unsupported(f"service {name!r} has no loopback address "
                              f"(known: {', '.join(sorted(self.services))})") from None

    def path_env(self, *first: Path) -> str:
        # The instance's own bin dir holds the aws CLI (backup.sh calls it).
        return ":".join([*(str(p) for p in first), str(self.shim_dir), str(self.bin_dir),
                         SYSTEM_PATH])


# ------------------------------------------------------------------------------ processes


def _proc_starttime(pid: int) -> str | None:
    """Start time of pid (clock ticks since boot), or None if gone or a zombie.

    Stored with the pid so a recycled pid is never mistaken for our service (and never
    signalled)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


@dataclass
class Running:
    """A started service: pid file content under ``<state>/run/<project>/<service>.json``."""

    pid: int
    starttime: str
    config_hash: str
    started_at: float
    kind: str

    def alive(self) -> bool:
        return _proc_starttime(self.pid) == self.starttime


def _stop_signal(kind: str) -> int:
    # The images' STOPSIGNALs: postgres SIGINT (fast shutdown), nginx SIGQUIT (graceful).
    return {"postgres": signal.SIGINT, "nginx": signal.SIGQUIT}.get(kind, signal.SIGTERM)


def stop_pid_file(path: Path, timeout: float = 15.0) -> bool:
    """Stop the process group recorded in one pid file (if still ours); remove the file.

    Returns True when something was running. Only the group we started (start_new_session
    made the service its group leader) is signalled, after checking its start time."""
    try:
        r = Running(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        path.unlink(missing_ok=True)
        return False
    was = r.alive()
    if was:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(r.pid, _stop_signal(r.kind))
        deadline = time.monotonic() + timeout
        while r.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if r.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(r.pid, signal.SIGKILL)
            while r.alive() and time.monotonic() < deadline + 5:
                time.sleep(0.05)
    path.unlink(missing_ok=True)
    return was


def stop_all(state: Path) -> list[str]:
    """Stop every service (and port proxy) the double started under ``state``."""
    stopped = []
    for pf in sorted((state / "run").rglob("*.json")):
        if stop_pid_file(pf):
            stopped.append(str(pf.relative_to(state / "run").with_suffix("")))
    return stopped


# ------------------------------------------------------------------------------ compose model


@dataclass
class Mount:
    source: Path
    target: str
    read_only: bool
    volume: str | None  # named volume, or None for a bind mount


@dataclass
class Port:
    host_ip: str | None  # None: all addresses (docker's 0.0.0.0) -> the instance address
    host_port: int
    container_port: int

    def bind_address(self, host: Host) -> str:
        return self.host_ip if self.host_ip not in (None, "", "0.0.0.0") else host.address


def _env_list(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, list):
        out = {}
        for item in value:
            k, sep, v = str(item).partition("=")
            if not sep:
                raise Unsupported(f"{where}: environment entry without '=': {item!r}")
            out[k] = v
        return out
    raise Unsupported(f"{where}: environment of type {type(value).__name__}")


def parse_env_file(path: Path) -> dict[str, str]:
    """A compose ``env_file``: KEY=VALUE lines, # comments, optional quotes."""
    out = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        k, sep, v = line.partition("=")
        if not sep:
            raise Unsupported(f"{path}: line without '=': {raw!r}")
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            v = v[1:-1]
        out[k.strip()] = v
    return out


def _check_no_interpolation(node: Any, where: str = "") -> None:
    # The rendered file has no ${VAR}: if one appears, the double would have to emulate
    # compose's interpolation and .env lookup. Say so instead of guessing.
    if isinstance(node, dict):
        for k, v in node.items():
            _check_no_interpolation(v, f"{where}.{k}" if where else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_no_interpolation(v, f"{where}[{i}]")
    elif isinstance(node, str) and re.search(r"(?<!\$)\$(\{|[A-Za-z_])", node):
        raise Unsupported(f"variable interpolation in {where}: {node!r}")


# Service keys the double honours or may ignore (they change nothing a runbook can observe
# on a single host: resource limits, labels, the restart policy...). Any other key is
# refused, so that a template change meets a decision instead of silent emulation.
SERVICE_KEYS = {"image", "restart", "env_file", "environment", "volumes", "ports",
                "depends_on", "healthcheck", "logging", "stop_grace_period", "mem_limit",
                "mem_reservation", "memswap_limit", "cpus", "deploy", "ulimits", "labels",
                "expose", "init", "shm_size", "pull_policy"}
KIND_KEYS = {"postgres": {"command"}, "synapse": {"entrypoint"}}
TOP_KEYS = {"name", "services", "volumes"}

KINDS = (("postgres", "postgres"), ("matrixdotorg/synapse", "synapse"),
         ("vectorim/element-web", "element"), ("nginx", "nginx"))


def _literal(text: str) -> Callable[[re.Match[str]], str]:
    return lambda _m: text


@dataclass
class Service:
    name: str
    spec: dict[str, Any]
    project: Project

    @property
    def kind(self) -> str:
        image = str(self.spec.get("image", ""))
        repo = image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image
        repo = repo.removeprefix("docker.io/").removeprefix("library/")
        for prefix, kind in KINDS:
            if repo == prefix:
                return kind
        raise Unsupported(f"service {self.name}: image {image!r} (the double runs postgres, "
                          "matrixdotorg/synapse, vectorim/element-web and nginx natively)")

    @property
    def container(self) -> str:
        return f"{self.project.name}-{self.name}-1"

    def environment(self) -> dict[str, str]:
        env: dict[str, str] = {}
        files = self.spec.get("env_file") or []
        for f in [files] if isinstance(files, str | dict) else files:
            rel = f["path"] if isinstance(f, dict) else f
            path = (self.project.dir / rel).resolve()
            if not path.exists():
                raise Failed(f"env file {path} not found: stat {path}: no such file or directory")
            env.update(parse_env_file(path))
        env.update(_env_list(self.spec.get("environment"), f"service {self.name}"))
        return env

    def mounts(self) -> list[Mount]:
        out = []
        for item in self.spec.get("volumes") or []:
            if isinstance(item, dict):
                typ, src, tgt = item.get("type"), item.get("source"), item.get("target")
                ro = bool(item.get("read_only"))
                if typ not in ("bind", "volume") or not src or not tgt:
                    raise Unsupported(f"service {self.name}: volume {item!r}")
            else:
                parts = str(item).split(":")
                if len(parts) not in (2, 3):
                    raise Unsupported(f"service {self.name}: volume {item!r}")
                src, tgt = parts[0], parts[1]
                opts = parts[2].split(",") if len(parts) == 3 else []
                ro = "ro" in opts
                typ = "bind" if src.startswith((".", "/", "~")) else "volume"
            if typ == "volume":
                if src not in (self.project.data.get("volumes") or {}):
                    raise Failed(f"service {self.name!r} refers to undefined volume {src}")
                out.append(Mount(self.project.volume_dir(src), tgt, ro, src))
            else:
                out.append(Mount((self.project.dir / os.path.expanduser(src)).resolve(),
                                 tgt, ro, None))
        return out

    def ports(self) -> list[Port]:
        out = []
        for item in self.spec.get("ports") or []:
            if isinstance(item, dict):
                out.append(Port(item.get("host_ip"), int(item["published"]),
                                int(item["target"])))
                continue
            parts = str(item).split(":")
            if len(parts) not in (2, 3) or "/" in parts[-1] or "-" in str(item) \
                    or "[" in str(item):
                raise Unsupported(f"service {self.name}: port {item!r} "
                                  "(only '[IP:]HOST:CONTAINER', IPv4)")
            ip = parts[0] if len(parts) == 3 else None
            out.append(Port(ip, int(parts[-2]), int(parts[-1])))
        return out

    def depends_on(self) -> dict[str, str]:
        dep = self.spec.get("depends_on") or {}
        if isinstance(dep, list):
            return {d: "service_started" for d in dep}
        out = {}
        for name, opts in dep.items():
            cond = (opts or {}).get("condition", "service_started")
            if cond not in ("service_started", "service_healthy"):
                raise Unsupported(f"service {self.name}: depends_on condition {cond}")
            out[name] = cond
        return out

    def config_hash(self) -> str:
        # Compose recreates a container when its resolved configuration changes (env_file
        # content included), not when a bind-mounted file changes: same here.
        blob = json.dumps({"spec": self.spec, "env": self.environment()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def map_path(self, text: str) -> str:
        """Container paths in ``text`` -> host paths, through this service's mounts."""
        for m in sorted(self.mounts(), key=lambda m: len(m.target), reverse=True):
            # A replacement function: the host path is literal (no backslash escapes).
            text = re.sub(rf"(?<![\w./-]){re.escape(m.target)}(?=$|[/\s'\";:,)])",
                          _literal(str(m.source)), text)
        return text


@dataclass
class Project:
    dir: Path
    file: Path
    name: str
    data: dict[str, Any]
    host: Host
    services: dict[str, Service] = field(default_factory=dict)

    @classmethod
    def load(cls, host: Host, project_dir: str | None, files: list[str],
             name: str | None) -> Project:
        import yaml

        if files:
            if len(files) > 1:
                raise Unsupported("more than one -f file")
            file = Path(files[0])
            if not file.is_absolute():
                file = Path(project_dir or os.getcwd()) / file
            pdir = Path(project_dir) if project_dir else file.parent
        else:
            pdir = Path(project_dir or os.getcwd())
            found = [pdir / f for f in COMPOSE_FILES if (pdir / f).exists()]
            if not found:
                raise Failed("no configuration file provided: not found")
            file = found[0]
        pdir = pdir.resolve()
        try:
            data = yaml.safe_load(file.read_text())
        except OSError as e:
            raise Failed(f"open {file}: {e.strerror}") from None
        if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
            raise Failed(f"{file}: not a compose file with services")
        _check_no_interpolation({k: v for k, v in data.items() if not k.startswith("x-")})
        for key in data:
            if key not in TOP_KEYS and not key.startswith("x-"):
                raise Unsupported(f"top-level key {key!r}")
        pname = name or data.get("name") or re.sub(r"[^a-z0-9_-]", "", pdir.name.lower())
        proj = cls(pdir, file, str(pname), data, host)
        proj.services = {n: Service(n, s or {}, proj) for n, s in data["services"].items()}
        for svc in proj.services.values():
            allowed = SERVICE_KEYS | KIND_KEYS.get(svc.kind, set())
            for key in svc.spec:
                if key not in allowed and not key.startswith("x-"):
                    raise Unsupported(f"service {svc.name}: key {key!r} for image "
                                      f"{svc.spec.get('image')}")
            svc.ports(), svc.depends_on()  # refuse forms the double cannot emulate, early
        return proj

    def volume_dir(self, volume: str) -> Path:
        d = self.host.runtime / "volumes" / f"{self.name}_{volume}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def run_dir(self) -> Path:
        d = self.host.state / "run" / self.name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def work_dir(self, service: str) -> Path:
        d = self.host.state / "services" / self.name / service
        d.mkdir(parents=True, exist_ok=True)
        return d

    def log_path(self, service: str) -> Path:
        d = self.host.state / "logs" / self.name
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{service}.log"

    def service(self, name: str) -> Service:
        try:
            return self.services[name]
        except KeyError:
            raise Failed(f"no such service: {name}") from None

    def stop_service(self, name: str) -> bool:
        """Stop a service and its published-port proxies; True if it was running."""
        for pf in (self.run_dir / "proxy").glob(f"{name}-*.json"):
            stop_pid_file(pf)
        return stop_pid_file(self.run_dir / f"{name}.json")

    def running(self, name: str) -> Running | None:
        pf = self.run_dir / f"{name}.json"
        try:
            r = Running(**json.loads(pf.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return r if r.alive() else None

    def recorded(self) -> list[str]:
        return sorted(p.stem for p in self.run_dir.glob("*.json"))

    def with_dependencies(self, names: Sequence[str]) -> list[str]:
        """names plus what they depend on, dependencies first (compose's start order)."""
        order: list[str] = []
        visiting: set[str] = set()

        def visit(n: str) -> None:
            if n in order:
                return
            if n in visiting:
                raise Failed(f"dependency cycle involving {n}")
            visiting.add(n)
            for d in self.service(n).depends_on():
                visit(d)
            visiting.discard(n)
            order.append(n)

        for n in names:
            visit(n)
        return order


# ------------------------------------------------------------------------------ output


def err(line: str) -> None:
    # docker compose writes its progress lines to stderr. A client that went away (the
    # runner killed, the SSH connection dropped) must not stop the work: see _detach().
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


def _detach() -> None:
    """Behave like the Docker daemon, which finishes what it started when the client dies.

    In the double the work happens in the CLI process itself: without this, an SSH session
    torn down mid-`up` (SIGHUP/SIGPIPE) would kill it half-way through initdb, a state
    real Docker never produces. Output to a dead client is dropped instead."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


@contextlib.contextmanager
def project_lock(proj: Project) -> Iterator[None]:
    """One state-changing command per project at a time (the daemon serialises them too):
    a resumed run's `up` waits for the one a killed run left going, then finds it done."""
    import fcntl

    with open(proj.run_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def progress(svc: Service, what: str) -> None:
    err(f" Container {svc.container}  {what}")


# ------------------------------------------------------------------------------ health


def _health_argv(svc: Service) -> list[str] | None:
    hc = svc.spec.get("healthcheck")
    if not hc or hc.get("disable"):
        return None
    test = hc.get("test")
    if isinstance(test, str):
        return ["sh", "-c", test]
    if not isinstance(test, list) or not test:
        raise Unsupported(f"service {svc.name}: healthcheck test {test!r}")
    if test[0] == "NONE":
        return None
    if test[0] == "CMD":
        return [str(a) for a in test[1:]]
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", " ".join(str(a) for a in test[1:])]
    raise Unsupported(f"service {svc.name}: healthcheck test {test!r}")


def _duration(value: Any, default: float) -> float:
    if value is None:
        return default
    total = 0.0
    for num, unit in re.findall(r"([\d.]+)(ms|h|m|s)", str(value)):
        total += float(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def health(svc: Service, r: Running | None) -> str:
    """'healthy', 'unhealthy', 'starting' or '' (no healthcheck), like docker's Health.

    The service's own healthcheck command is run natively through the exec mapping, so a
    wrong healthcheck in the compose file shows up here as it would under Docker."""
    if r is None:
        return ""
    argv = _health_argv(svc)
    if argv is None:
        return ""
    hc = svc.spec.get("healthcheck") or {}
    timeout = _duration(hc.get("timeout"), 30)
    try:
        rc = subprocess.run(exec_argv(svc, argv), env=exec_env(svc, {}), cwd="/",
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, timeout=timeout).returncode
    except (subprocess.TimeoutExpired, OSError):
        rc = 1
    if rc == 0:
        return "healthy"
    grace = _duration(hc.get("start_period"), 0) + \
        _duration(hc.get("interval"), 30) * int(hc.get("retries", 3))
    return "starting" if time.time() - r.started_at < grace else "unhealthy"


def _log_tail(svc: Service, lines: int = 5) -> str:
    """The last log lines, as a hint (compose itself only says 'exited')."""
    try:
        text = svc.project.log_path(svc.name).read_text(errors="replace")
    except OSError:
        return ""
    tail = text.splitlines()[-lines:]
    return "\n".join(f"  {svc.container}  | {line}" for line in tail)


def wait_healthy(svc: Service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    progress(svc, "Waiting")
    while True:
        r = svc.project.running(svc.name)
        if r is None:
            raise Failed(f"container {svc.container} exited (1)\n{_log_tail(svc)}")
        h = health(svc, r)
        if h in ("healthy", ""):
            progress(svc, "Healthy" if h else "Started")
            return
        if h == "unhealthy" or time.monotonic() > deadline:
            raise Failed(f"dependency failed to start: container {svc.container} is unhealthy")
        time.sleep(0.1)


# ------------------------------------------------------------------------------ exec mapping


def _service_bin(svc: Service) -> list[Path]:
    host = svc.project.host
    return {"postgres": [host.pg_bin], "synapse": [host.synapse_python.parent]}.get(
        svc.kind, [])


def exec_env(svc: Service, extra: dict[str, str]) -> dict[str, str]:
    host = svc.project.host
    env = {"PATH": host.path_env(*_service_bin(svc)), "HOME": "/root", "LANG": "C.UTF-8",
           STATE_ENV: str(host.state)}
    env.update(svc.environment())
    if svc.kind == "postgres":
        # In the container, psql/pg_dump reach the server on its unix socket (local: trust).
        env["PGHOST"] = str(host.runtime / "pgsock" / svc.project.name)
        env["PGPORT"] = "5432"
    env.update(extra)
    return env


def exec_argv(svc: Service, argv: Sequence[str]) -> list[str]:
    """Map a command meant for the container onto the host.

    Container paths (mount targets) become host paths, in any argument; ``localhost`` and
    ``127.0.0.1`` in URLs become the service's own loopback address (the container's
    loopback is its own network namespace)."""
    host = svc.project.host
    addr = host.service_address(svc.name)
    out: list[str] = []
    loopback = ("localhost", "127.0.0.1")
    for a in argv:
        a = svc.map_path(a)
        a = re.sub(r"(https?://)(localhost|127\.0\.0\.1)(?=[:/]|$)", rf"\g<1>{addr}", a)
        if svc.kind == "postgres":
            # TCP to the container's own loopback (trust in the image's pg_hba) is the unix
            # socket here: the machine's 127.0.0.1 is everyone's.
            sock = str(host.runtime / "pgsock" / svc.project.name)
            if a in loopback and out and out[-1] in ("-h", "--host"):
                a = sock
            elif a in (f"--host={h}" for h in loopback):
                a = f"--host={sock}"
        out.append(a)
    if svc.kind == "nginx" and out and out[0] == "nginx":
        if "-c" in out:
            raise Unsupported("exec nginx nginx -c (the double supplies the main config)")
        out = [str(host.nginx_bin), "-c", str(prepare_nginx(svc)), *out[1:]]
    return out


# ------------------------------------------------------------------------------ starting


def _as_postgres() -> dict[str, Any]:
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def _chown_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _traversable(path: Path) -> None:
    # The state root may sit in a 0700 pytest tmp dir: the postgres user must be able to
    # traverse every ancestor (o+x only, never read).
    for d in [path, *path.parents]:
        st = d.stat()
        if not st.st_mode & 0o001:
            os.chmod(d, st.st_mode | 0o001)


def _mount_for(svc: Service, target: str) -> Mount | None:
    for m in svc.mounts():
        if m.target.rstrip("/") == target.rstrip("/"):
            return m
    return None


def _popen(svc: Service, argv: list[str], cwd: Path, env: dict[str, str],
           **kw: Any) -> subprocess.Popen[bytes]:
    log = open(svc.project.log_path(svc.name), "ab")  # noqa: SIM115 - the child keeps it
    # A new session: the service outlives the SSH session that ran `up -d`, and its
    # process group is what `down`/the fixture stop. No inherited fds: sshd would otherwise
    # keep the channel open until the service exits.
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
                            **kw)
    log.close()
    return proc


def start_postgres(svc: Service) -> subprocess.Popen[bytes]:
    host = svc.project.host
    env = svc.environment()
    pgdata_target = env.get("PGDATA", "/var/lib/postgresql/data")
    m = _mount_for(svc, pgdata_target)
    if m is None:
        raise Unsupported(f"service {svc.name}: no volume on {pgdata_target} (the data would "
                          "be lost with the container)")
    data = m.source
    _traversable(data.parent)
    data.mkdir(parents=True, exist_ok=True)
    _chown_postgres(data)
    os.chmod(data, 0o700)
    sock = host.runtime / "pgsock" / svc.project.name
    sock.mkdir(parents=True, exist_ok=True)
    _chown_postgres(sock)
    _traversable(sock)
    user = env.get("POSTGRES_USER") or "postgres"
    db = env.get("POSTGRES_DB") or user
    if not (data / "PG_VERSION").exists():
        password = env.get("POSTGRES_PASSWORD", "")
        auth = env.get("POSTGRES_HOST_AUTH_METHOD", "scram-sha-256")
        if not password and auth != "trust":
            raise Failed("Error: Database is uninitialized and superuser password is not "
                         "specified. You must specify POSTGRES_PASSWORD to a non-empty value "
                         "for the superuser.")
        initdb_args = shlex.split(env.get("POSTGRES_INITDB_ARGS", ""))
        _initdb(svc, data, user, password, db, auth, initdb_args)
    command = svc.spec.get("command")
    extra: list[str] = []
    if command:
        argv = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
        if argv[0] != "postgres":
            raise Unsupported(f"service {svc.name}: command {argv[0]!r} (only 'postgres ...')")
        extra = argv[1:]
    # fsync off: test speed only, invisible to the runbook (no crash is simulated here).
    return _popen(svc, [str(host.pg_bin / "postgres"), "-D", str(data),
                        "-c", f"listen_addresses={host.service_address(svc.name)}",
                        "-c", "port=5432", "-c", f"unix_socket_directories={sock}",
                        "-c", "fsync=off", *extra],
                  cwd=Path("/"), env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"},
                  **_as_postgres())


def _image_lang(svc: Service) -> str:
    """The locale initdb sees in the image: its ``LANG=en_US.utf8`` unless the service sets
    one. Without the compose file's --lc-collate=C the database then gets a collation
    Synapse refuses, as on the instance (C.UTF-8 where en_US is not installed: refused too)."""
    lang = svc.environment().get("LANG", "en_US.utf8")
    installed = subprocess.run(["locale", "-a"], capture_output=True, text=True).stdout.split()
    norm = {x.lower().replace("-", ""): x for x in installed}
    return norm.get(lang.lower().replace("-", ""), "C.UTF-8")


def _initdb(svc: Service, data: Path, user: str, password: str, db: str, auth: str,
            args: list[str]) -> None:
    """What the postgres image's entrypoint does on an empty data directory."""
    host = svc.project.host
    t0 = time.monotonic()
    with tempfile.NamedTemporaryFile("w", dir=host.runtime, prefix=".pw-", delete=False) as f:
        f.write(password + "\n")
    pwfile = Path(f.name)
    try:
        _chown_postgres(pwfile)
        r = subprocess.run([str(host.pg_bin / "initdb"), "-D", str(data), f"--username={user}",
                            f"--pwfile={pwfile}", "--no-sync", *args],
                           capture_output=True, text=True, cwd="/",
                           env={"PATH": SYSTEM_PATH, "LANG": _image_lang(svc)},
                           **_as_postgres())
    finally:
        pwfile.unlink(missing_ok=True)
    with open(svc.project.log_path(svc.name), "a") as log:
        log.write(r.stdout + r.stderr)
    if r.returncode != 0:
        raise Failed(f"initdb failed for {svc.container} ({r.returncode}):\n{r.stderr[-2000:]}")
    # The image appends this rule: other containers must authenticate (password). initdb's
    # own `host ... 127.0.0.1/32 trust` lines mean "the container itself" there; here every
    # local connection (Synapse's too: the kernel picks 127.0.0.1 as the source address)
    # would match them, so they are disabled: the container's TCP loopback is the unix
    # socket in the double (see exec_argv), and Synapse's password is really checked.
    hba_path = data / "pg_hba.conf"
    lines = []
    for line in hba_path.read_text().splitlines():
        if re.match(r"^host\s+\S+\s+\S+\s+(127\.0\.0\.1/32|::1/128)\s", line):
            line = f"# test double (container loopback = the unix socket): {line}"
        lines.append(line)
    hba_path.write_text("\n".join(lines) + f"\nhost all all all {auth}\n")
    if db != "postgres":
        # Single-user mode: nothing can connect while the database is being created, like
        # the image's socket-only temporary server.
        sql = f'CREATE DATABASE "{db}";\n\n'
        r = subprocess.run([str(host.pg_bin / "postgres"), "--single", "-j", "-D", str(data),
                            "-c", "fsync=off", "postgres"], input=sql, capture_output=True,
                           text=True, cwd="/", **_as_postgres())
        if r.returncode != 0 or "ERROR" in r.stderr:
            raise Failed(f"creating database {db} failed:\n{r.stderr[-2000:]}")
    with open(host.state / "initdb.log", "a") as logf:
        logf.write(f"{_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')} "
                f"{svc.container} {data} user={user} db={db} args={shlex.join(args)} "
                f"took={time.monotonic() - t0:.2f}s\n")


def _adapt_synapse(svc: Service, cfg: Any) -> Any:
    addr = svc.project.host.service_address(svc.name)
    if isinstance(cfg, dict):
        out = {k: _adapt_synapse(svc, v) for k, v in cfg.items()}
        if "bind_addresses" in out and "port" in out:
            # A listener: inside the container it binds 0.0.0.0; here, its own address.
            out["bind_addresses"] = [addr if a in ("0.0.0.0", "::") else a
                                     for a in out["bind_addresses"]]
        return out
    if isinstance(cfg, list):
        return [_adapt_synapse(svc, v) for v in cfg]
    if isinstance(cfg, str) and cfg.startswith("/"):
        return svc.map_path(cfg)
    return cfg


SYNAPSE_UID = 991  # the image's default UID/GID (start.py drops to it with gosu)


def _readable_by(path: Path, uid: int, gid: int, bit: int = 4) -> bool:
    """Would uid:gid get permission ``bit`` (4 read, 1 search) on path, by its own mode?"""
    st = path.stat()
    if st.st_uid == uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid == gid:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def _entrypoint_prelude(svc: Service) -> str | None:
    """The shell commands an entrypoint runs before ``exec /start.py`` (None: no entrypoint).

    Only ``sh -c "...  && exec /start.py"`` is understood: the prelude runs natively with
    container paths mapped (e.g. the template's chown of the media volume)."""
    ep = svc.spec.get("entrypoint")
    if ep is None:
        return None
    argv = shlex.split(ep) if isinstance(ep, str) else [str(a) for a in ep]
    m = re.fullmatch(r"\s*(?P<pre>.*?)\s*&&\s*exec\s+/start\.py\s*", argv[-1], re.S) \
        if len(argv) == 3 and argv[0] in ("/bin/sh", "sh", "/bin/bash", "bash") \
        and argv[1] == "-c" else None
    if m is None:
        raise Unsupported(f"service {svc.name}: entrypoint {ep!r} (only "
                          "sh -c '... && exec /start.py')")
    return m.group("pre")


def _synapse_exits(svc: Service, message: str) -> subprocess.Popen[bytes]:
    # The container starts and its process exits at once: `up -d` says Started, `--wait`
    # and `ps -a` show it exited, `logs` shows why (as with Docker).
    return _popen(svc, ["/bin/sh", "-c", 'printf "%s\\n" "$1" >&2; exit 1', "synapse", message],
                  cwd=Path("/"), env={"PATH": SYSTEM_PATH})


def start_synapse(svc: Service) -> subprocess.Popen[bytes]:
    import yaml

    host = svc.project.host
    env = svc.environment()
    prelude = _entrypoint_prelude(svc)
    if prelude:
        r = subprocess.run(["/bin/sh", "-c", svc.map_path(prelude)], cwd="/",
                           env=exec_env(svc, {}), capture_output=True, text=True)
        if r.returncode != 0:
            return _synapse_exits(svc, r.stderr.strip() or f"entrypoint exited {r.returncode}")
    # start.py chowns /data (not recursively) to Synapse's uid before dropping to it.
    data_mount = _mount_for(svc, "/data")
    if data_mount is not None:
        os.chown(data_mount.source, SYNAPSE_UID, SYNAPSE_UID)
    cfg_target = env.get("SYNAPSE_CONFIG_PATH", "/data/homeserver.yaml")
    cfg_path = Path(svc.map_path(cfg_target))
    if not cfg_path.is_absolute() or cfg_path.as_posix() == cfg_target:
        raise Failed(f"{svc.container}: config file {cfg_target} is not on a mount")
    if not cfg_path.exists():
        raise Failed(f"{svc.container}: Config file '{cfg_target}' does not exist.")
    # Synapse runs as uid 991 in the container; natively it runs as root (the test's
    # directories' ancestors are not the container's), so check what 991 could read,
    # by the files' own modes, as Synapse would find out at start.
    raw_cfg = yaml.safe_load(cfg_path.read_text())
    needed = [cfg_path]
    log_cfg = raw_cfg.get("log_config") if isinstance(raw_cfg, dict) else None
    if isinstance(log_cfg, str) and svc.map_path(log_cfg) != log_cfg:
        needed.append(Path(svc.map_path(log_cfg)))
    for path in needed:
        if not path.exists():
            continue
        if not (_readable_by(path, SYNAPSE_UID, SYNAPSE_UID)
                and _readable_by(path.parent, SYNAPSE_UID, SYNAPSE_UID, 1)):
            target = next(t for t in (cfg_target, log_cfg) if t and svc.map_path(t) == str(path))
            return _synapse_exits(svc, f"PermissionError: [Errno 13] Permission denied: "
                                       f"'{target}' (test double: Synapse runs as uid "
                                       f"{SYNAPSE_UID}; {path} is "
                                       f"{path.stat().st_uid}:{path.stat().st_gid} "
                                       f"mode {oct(path.stat().st_mode & 0o777)})")
    work = svc.project.work_dir(svc.name)
    adapted = work / "homeserver.yaml"
    cfg = _adapt_synapse(svc, raw_cfg)
    fd = os.open(adapted, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"# Adapted by the elematrix test double from {cfg_path}: only the compose\n"
                "# mounts and the listener address are mapped. Never edit: regenerated.\n")
        yaml.safe_dump(cfg, f, sort_keys=False)
    data = _mount_for(svc, "/data")
    cwd = data.source if data else work
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    run_env.update(env)
    run_env["PATH"] = host.path_env(host.synapse_python.parent)
    return _popen(svc, [str(host.synapse_python), "-m", "synapse.app.homeserver",
                        "--config-path", str(adapted)], cwd=cwd, env=run_env)


INDEX_HTML = ("<!doctype html><html><head><title>Element (elematrix test double)</title>"
              "</head><body>Element Web stand-in: the real app is not served by the test "
              "double; /config.json is the uploaded one.</body></html>\n")


def start_element(svc: Service) -> subprocess.Popen[bytes]:
    host = svc.project.host
    www = svc.project.work_dir(svc.name) / "www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text(INDEX_HTML)
    for m in svc.mounts():
        if not m.target.startswith("/app/"):
            raise Unsupported(f"service {svc.name}: mount on {m.target} (only /app/...)")
        link = www / m.target.removeprefix("/app/")
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(m.source)
    port = int(svc.environment().get("ELEMENT_WEB_PORT", "80"))
    return _popen(svc, [str(host.python), "-m", "http.server", str(port), "--bind",
                        host.service_address(svc.name), "--directory", str(www)],
                  cwd=www, env={"PATH": SYSTEM_PATH, "LANG": "C.UTF-8"})


_LISTEN = re.compile(r"^(?P<indent>[ \t]*)listen[ \t]+(?P<addr>\S+)(?P<rest>[^;]*);[ \t]*$",
                     re.M)


def _adapt_nginx(svc: Service, text: str) -> str:
    host = svc.project.host
    addr = host.service_address(svc.name)
    published = svc.ports()

    def listen(m: re.Match[str]) -> str:
        where, rest, ind = m.group("addr"), m.group("rest"), m.group("indent")
        if where.startswith("["):
            # IPv6: there is no per-container v6 address on loopback; dropped (documented).
            return f"{ind}# test double: dropped IPv6 listener: listen {where}{rest};"
        port = int(where.rsplit(":", 1)[-1])
        lines = [f"{ind}listen {addr}:{port}{rest};"]
        lines += [f"{ind}listen {p.bind_address(host)}:{p.host_port}{rest};"
                  for p in published if p.container_port == port]
        return "\n".join(lines)

    text = _LISTEN.sub(listen, text)
    return svc.map_path(text)


def prepare_nginx(svc: Service) -> Path:
    """Write the adapted server configs and the main config from the mounts (as they are
    now: `exec nginx nginx -t` / `-s reload` must see a newly uploaded default.conf)."""
    work = svc.project.work_dir(svc.name)
    confd = work / "conf.d"
    confd.mkdir(exist_ok=True)
    for old in confd.glob("*.conf"):
        old.unlink()
    found = False
    for m in svc.mounts():
        if m.target.startswith("/etc/nginx/conf.d"):
            srcs = sorted(m.source.glob("*.conf")) if m.source.is_dir() else [m.source]
            for src in srcs:
                (confd / src.name).write_text(_adapt_nginx(svc, src.read_text()))
                found = True
        elif m.target.startswith("/etc/nginx"):
            raise Unsupported(f"service {svc.name}: mount on {m.target}")
    if not found:
        raise Unsupported(f"service {svc.name}: no server config mounted in /etc/nginx/conf.d")
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / "tmp" / d).mkdir(parents=True, exist_ok=True)
    # The image's nginx.conf, reduced: user root because the uploaded files may sit in a
    # 0700 directory of the test (the container's nginx user reads them through the mount).
    main = work / "nginx.conf"
    main.write_text(f"""# Generated by the elematrix test double (the image's main config).
user root;
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 512; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /dev/stdout;
    sendfile on;
    keepalive_timeout 65;
    client_body_temp_path {work}/tmp/client_body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    include {confd}/*.conf;
}}
""")
    return main


def start_nginx(svc: Service) -> subprocess.Popen[bytes]:
    host = svc.project.host
    work = svc.project.work_dir(svc.name)
    main = prepare_nginx(svc)
    t = subprocess.run([str(host.nginx_bin), "-t", "-q", "-c", str(main)], capture_output=True,
                       text=True)
    if t.returncode != 0:
        with open(svc.project.log_path(svc.name), "a") as log:
            log.write(t.stderr)
        raise Failed(f"{svc.container}: nginx refused the configuration:\n{t.stderr.strip()}")
    return _popen(svc, [str(host.nginx_bin), "-c", str(main)], cwd=work,
                  env={"PATH": SYSTEM_PATH})


STARTERS = {"postgres": start_postgres, "synapse": start_synapse, "element": start_element,
            "nginx": start_nginx}


def start_service(svc: Service) -> None:
    # Ports first, like docker: a port that cannot be published means no container at all.
    if svc.kind != "nginx":  # nginx listens on its published ports itself
        for p in svc.ports():
            try:
                start_proxy(svc, p)
            except Failed:
                for pf in (svc.project.run_dir / "proxy").glob(f"{svc.name}-*.json"):
                    stop_pid_file(pf)
                raise
    try:
        proc = STARTERS[svc.kind](svc)
    except BaseException:
        for pf in (svc.project.run_dir / "proxy").glob(f"{svc.name}-*.json"):
            stop_pid_file(pf)
        raise
    starttime = None
    for _ in range(100):
        starttime = _proc_starttime(proc.pid)
        if starttime:
            break
        time.sleep(0.01)
    if starttime is None:
        raise Failed(f"container {svc.container} exited (1)\n{_log_tail(svc)}")
    r = Running(pid=proc.pid, starttime=starttime, config_hash=svc.config_hash(),
                started_at=time.time(), kind=svc.kind)
    (svc.project.run_dir / f"{svc.name}.json").write_text(json.dumps(r.__dict__))


def start_proxy(svc: Service, port: Port) -> None:
    """docker-proxy's job: forward a published port to the service's own address."""
    host = svc.project.host
    where = port.bind_address(host)
    target = host.service_address(svc.name)
    import select

    # The forwarder says "bound" on a pipe: probing the port could find someone else's.
    ready_r, ready_w = os.pipe()
    try:
        proc = _popen(svc, [str(host.python), "-I", os.path.abspath(__file__), "_proxy",
                            where, str(port.host_port), target, str(port.container_port),
                            str(ready_w)],
                      cwd=Path("/"), env={"PATH": SYSTEM_PATH}, pass_fds=(ready_w,))
        os.close(ready_w)
        ok = bool(select.select([ready_r], [], [], 10)[0]) and os.read(ready_r, 1) == b"1"
    finally:
        os.close(ready_r)
    if not ok:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise Failed(f"Error response from daemon: driver failed programming external "
                     f"connectivity on endpoint {svc.container}: Bind for "
                     f"{where}:{port.host_port} failed: port is already allocated")
    st = _proc_starttime(proc.pid) or ""
    d = svc.project.run_dir / "proxy"
    d.mkdir(exist_ok=True)
    r = Running(pid=proc.pid, starttime=st, config_hash="", started_at=time.time(),
                kind="proxy")
    (d / f"{svc.name}-{port.host_port}.json").write_text(json.dumps(r.__dict__))


def run_proxy(listen: str, port: int, target: str, target_port: int, ready_fd: int) -> int:
    """A userland TCP forwarder (what docker-proxy does for a published port)."""
    import asyncio

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            tr, tw = await asyncio.open_connection(target, target_port)
        except OSError:
            w.close()
            return
        await asyncio.gather(pipe(r, tw), pipe(tr, w))

    async def serve() -> None:
        server = await asyncio.start_server(handle, listen, port, reuse_address=True)
        os.write(ready_fd, b"1")
        os.close(ready_fd)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())
    return 0


# ------------------------------------------------------------------------------ compose CLI


@dataclass
class Args:
    """A tiny flag parser: compose's flags are few and must be exact (unknown -> fail)."""

    argv: list[str]
    where: str

    def __post_init__(self) -> None:
        self.pos = 0

    def peek(self) -> str | None:
        return self.argv[self.pos] if self.pos < len(self.argv) else None

    def take(self) -> str:
        if self.pos >= len(self.argv):
            raise Unsupported(f"{self.where}: missing argument")
        a = self.argv[self.pos]
        self.pos += 1
        return a

    def value(self, flag: str) -> str:
        a = self.argv[self.pos - 1]
        if "=" in a:
            return a.split("=", 1)[1]
        if self.pos >= len(self.argv):
            raise Failed(f"flag needs an argument: {flag}")
        return self.take()

    def rest(self) -> list[str]:
        out = self.argv[self.pos:]
        self.pos = len(self.argv)
        return out

    def flags(self, spec: dict[str, bool]) -> tuple[dict[str, list[str]], list[str]]:
        """Parse flags (name -> takes a value) until the positionals; returns (flags, positionals).

        Flags and positionals may mix, like cobra's parser; ``--`` ends flags."""
        got: dict[str, list[str]] = {}
        pos: list[str] = []
        while (a := self.peek()) is not None:
            if a == "--":
                self.take()
                pos.extend(self.rest())
                break
            if not a.startswith("-") or a == "-":
                pos.append(self.take())
                continue
            self.take()
            name = a.split("=", 1)[0]
            if name not in spec:
                # Combined short flags (-dT) are not used by the runbook: refuse them too.
                raise Unsupported(f"{self.where} {name}")
            got.setdefault(name, []).append(self.value(name) if spec[name] else "")
        return got, pos


def _uptime(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s} second{'s' if s != 1 else ''}"
    if s < 3600:
        return f"{s // 60} minute{'s' if s // 60 != 1 else ''}"
    return f"{s // 3600} hour{'s' if s // 3600 != 1 else ''}"


def cmd_up(proj: Project, a: Args) -> int:
    fl, names = a.flags({"-d": False, "--detach": False, "--wait": False,
                         "--wait-timeout": True, "--remove-orphans": False,
                         "--no-deps": False, "--force-recreate": False, "--quiet-pull": False,
                         "--no-build": False, "--pull": True})
    if "-d" not in fl and "--detach" not in fl and "--wait" not in fl:
        raise Unsupported("up without -d (attached mode)")
    if "--pull" in fl and fl["--pull"][-1] not in ("missing", "never"):
        raise Unsupported(f"up --pull {fl['--pull'][-1]}")
    wait_timeout = float(fl.get("--wait-timeout", ["300"])[-1])
    for n in names:
        proj.service(n)
    wanted = names or list(proj.services)
    order = wanted if "--no-deps" in fl else proj.with_dependencies(wanted)
    if "--remove-orphans" in fl:
        for orphan in set(proj.recorded()) - set(proj.services):
            err(f" Container {proj.name}-{orphan}-1  Removing")
            proj.stop_service(orphan)
            err(f" Container {proj.name}-{orphan}-1  Removed")
    else:
        orphans = sorted(set(proj.recorded()) - set(proj.services))
        if orphans:
            err(f"WARN[0000] Found orphan containers ({', '.join(orphans)}) for this project.")
    for name in order:
        svc = proj.service(name)
        for dep, cond in svc.depends_on().items():
            if cond == "service_healthy":
                wait_healthy(proj.service(dep), wait_timeout)
        r = proj.running(name)
        if r is not None and r.config_hash == svc.config_hash() and \
                "--force-recreate" not in fl:
            progress(svc, "Running")
            continue
        if r is not None:
            progress(svc, "Recreate")
            proj.stop_service(name)
            progress(svc, "Recreated")
        else:
            proj.stop_service(name)  # a dead one's stale record
            progress(svc, "Created")
        progress(svc, "Starting")
        start_service(svc)
        progress(svc, "Started")
    if "--wait" in fl:
        for name in order:
            wait_healthy(proj.service(name), wait_timeout)
    return 0


def _ps_rows(proj: Project, all_: bool) -> list[dict[str, Any]]:
    rows = []
    for name, svc in proj.services.items():
        r = proj.running(name)
        recorded = (proj.run_dir / f"{name}.json").exists()
        if r is None and not (all_ and recorded):
            continue
        h = health(svc, r)
        if r is not None:
            status = f"Up {_uptime(time.time() - r.started_at)}" + (f" ({h})" if h else "")
        else:
            status = "Exited (1)"
        pubs = [{"URL": p.bind_address(proj.host), "TargetPort": p.container_port,
                 "PublishedPort": p.host_port, "Protocol": "tcp"} for p in svc.ports()]
        rows.append({"Name": svc.container, "Service": name, "Project": proj.name,
                     "Image": svc.spec.get("image", ""), "State": "running" if r else "exited",
                     "Health": h, "Status": status, "ExitCode": 0 if r else 1,
                     "Publishers": pubs, "Command": "(native: elematrix test double)",
                     "Ports": ", ".join(f"{p['URL']}:{p['PublishedPort']}->{p['TargetPort']}/tcp"
                                        for p in pubs),
                     "RunningFor": f"{_uptime(time.time() - r.started_at)} ago" if r else "",
                     "ID": (r and f"{r.pid:012d}") or "", "CreatedAt": ""})
    return rows


def cmd_ps(proj: Project, a: Args) -> int:
    fl, names = a.flags({"--format": True, "-a": False, "--all": False, "-q": False,
                         "--quiet": False, "--services": False, "--status": True})
    rows = _ps_rows(proj, "-a" in fl or "--all" in fl)
    if names:
        for n in names:
            proj.service(n)
        rows = [r for r in rows if r["Service"] in names]
    if "--status" in fl:
        rows = [r for r in rows if r["State"] in fl["--status"]]
    if "--services" in fl:
        for r in rows:
            print(r["Service"])
        return 0
    if "-q" in fl or "--quiet" in fl:
        for r in rows:
            print(r["ID"])
        return 0
    fmt = fl.get("--format", ["table"])[-1]
    if fmt == "json":
        # Compose v2.21+ prints one JSON object per line.
        for r in rows:
            print(json.dumps(r))
        return 0
    if fmt != "table":
        raise Unsupported(f"ps --format {fmt}")
    table = [("NAME", "IMAGE", "SERVICE", "STATUS", "PORTS")]
    for r in rows:
        table.append((r["Name"], r["Image"], r["Service"], r["Status"], r["Ports"]))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        print("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_exec(proj: Project, a: Args) -> NoReturn:
    spec = {"-T": False, "--no-TTY": False, "-u": True, "--user": True, "-e": True,
            "--env": True, "-w": True, "--workdir": True, "-i": False, "--interactive": False}
    got: dict[str, list[str]] = {}
    # Flags come before the service; everything after the service is the command.
    while (x := a.peek()) is not None and x.startswith("-"):
        a.take()
        name = x.split("=", 1)[0]
        if name not in spec:
            raise Unsupported(f"compose exec {name}")
        got.setdefault(name, []).append(a.value(name) if spec[name] else "")
    service = a.take()
    cmd = a.rest()
    if not cmd:
        raise Failed("exec: requires at least 2 arguments")
    svc = proj.service(service)
    if proj.running(service) is None:
        raise Failed(f"service \"{service}\" is not running")
    extra = {}
    for e in got.get("-e", []) + got.get("--env", []):
        k, _, v = e.partition("=")
        extra[k] = v
    env = exec_env(svc, extra)
    argv = exec_argv(svc, cmd)
    workdir = (got.get("-w") or got.get("--workdir") or [""])[-1]
    os.chdir(svc.map_path(workdir) if workdir else "/")
    user = (got.get("-u") or got.get("--user") or [""])[-1]
    if user and user not in ("root", "0"):
        pw = pwd.getpwnam(user.split(":")[0]) if not user.isdigit() else pwd.getpwuid(int(user))
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
        env["HOME"] = pw.pw_dir
    sys.stdout.flush()
    try:
        # Replace this process: stdin/stdout/stderr and the exit status pass straight through
        # (backup.sh pipes pg_dump's output into gzip).
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        print(f"OCI runtime exec failed: exec: \"{cmd[0]}\": executable file not found in "
              "$PATH: unknown", file=sys.stderr)
        sys.exit(126)


def cmd_logs(proj: Project, a: Args) -> int:
    fl, names = a.flags({"--tail": True, "-n": True, "--no-log-prefix": False,
                         "--no-color": False, "-t": False, "--timestamps": False})
    if "-f" in a.argv or "--follow" in a.argv:
        raise Unsupported("logs --follow")
    tail = (fl.get("--tail") or fl.get("-n") or ["all"])[-1]
    for n in names or list(proj.services):
        svc = proj.service(n)
        path = proj.log_path(n)
        lines = path.read_text(errors="replace").splitlines() if path.exists() else []
        if tail != "all":
            lines = lines[-int(tail):] if int(tail) > 0 else []
        for line in lines:
            print(line if "--no-log-prefix" in fl else f"{svc.container}  | {line}")
    return 0


def _stop(proj: Project, names: list[str], verb: str) -> None:
    # Reverse dependency order, like compose.
    for n in reversed(proj.with_dependencies(names) if names else list(proj.services)):
        if names and n not in names:
            continue
        svc = proj.service(n)
        pf = proj.run_dir / f"{n}.json"
        if pf.exists():
            progress(svc, f"{verb}ping")
            proj.stop_service(n)
            progress(svc, f"{verb}ped")


def cmd_down(proj: Project, a: Args) -> int:
    fl, names = a.flags({"-v": False, "--volumes": False, "--remove-orphans": False,
                         "-t": True, "--timeout": True})
    if names:
        raise Unsupported("down SERVICE")
    _stop(proj, [], "Stop")
    for orphan in proj.recorded():
        proj.stop_service(orphan)
    err(f" Network {proj.name}_default  Removed")
    if "-v" in fl or "--volumes" in fl:
        for v in proj.data.get("volumes") or {}:
            d = proj.host.runtime / "volumes" / f"{proj.name}_{v}"
            if d.exists():
                import shutil

                shutil.rmtree(d)
                err(f" Volume {proj.name}_{v}  Removed")
    return 0


def cmd_stop(proj: Project, a: Args) -> int:
    _, names = a.flags({"-t": True, "--timeout": True})
    for n in names:
        proj.service(n)
    _stop(proj, names, "Stop")
    return 0


def cmd_start(proj: Project, a: Args) -> int:
    _, names = a.flags({})
    for n in names or list(proj.services):
        svc = proj.service(n)
        if proj.running(n) is None and (proj.run_dir / f"{n}.json").exists():
            progress(svc, "Starting")
            start_service(svc)
            progress(svc, "Started")
    return 0


def cmd_restart(proj: Project, a: Args) -> int:
    _, names = a.flags({"-t": True, "--timeout": True, "--no-deps": False})
    for n in names or list(proj.services):
        svc = proj.service(n)
        if not (proj.run_dir / f"{n}.json").exists():
            continue
        progress(svc, "Restarting")
        proj.stop_service(n)
        start_service(svc)
        progress(svc, "Started")
    return 0


def cmd_pull(proj: Project, a: Args) -> int:
    a.flags({"-q": False, "--quiet": False, "--ignore-pull-failures": False})
    for svc in proj.services.values():
        _ = svc.kind  # an image the double cannot run natively fails here, not at up
        err(f" {svc.name} Pulled (test double: {svc.spec.get('image')} runs natively)")
    return 0


def cmd_config(proj: Project, a: Args) -> int:
    fl, _ = a.flags({"-q": False, "--quiet": False, "--services": False})
    for svc in proj.services.values():
        svc.environment(), svc.mounts(), svc.ports(), svc.depends_on()
    if "--services" in fl:
        print("\n".join(proj.services))
    elif "-q" not in fl and "--quiet" not in fl:
        print(proj.file.read_text(), end="")
    return 0


COMPOSE_CMDS = {"up": cmd_up, "ps": cmd_ps, "exec": cmd_exec, "logs": cmd_logs,
                "down": cmd_down, "stop": cmd_stop, "start": cmd_start,
                "restart": cmd_restart, "pull": cmd_pull, "config": cmd_config}


def compose(argv: list[str]) -> int:
    a = Args(argv, "compose")
    project_dir: str | None = None
    files: list[str] = []
    name: str | None = None
    while (x := a.peek()) is not None and x.startswith("-"):
        a.take()
        flag = x.split("=", 1)[0]
        if flag == "--project-directory":
            project_dir = a.value(flag)
        elif flag in ("-f", "--file"):
            files.append(a.value(flag))
        elif flag in ("-p", "--project-name"):
            name = a.value(flag)
        elif flag in ("--ansi", "--progress"):
            a.value(flag)
        elif flag in ("-v", "--version"):
            print(COMPOSE_VERSION_LINE)
            return 0
        else:
            raise Unsupported(f"compose {flag}")
    sub = a.peek()
    if sub is None:
        raise Unsupported("compose without a subcommand")
    a.take()
    if sub == "version":
        fl, _ = a.flags({"--short": False, "--format": True})
        if "--short" in fl:
            print(COMPOSE_VERSION.lstrip("v"))
        else:
            print(COMPOSE_VERSION_LINE)
        return 0
    if sub not in COMPOSE_CMDS:
        raise Unsupported(f"compose {sub}")
    a.where = f"compose {sub}"
    host = Host.load()
    proj = Project.load(host, project_dir, files, name)
    if sub in ("up", "down", "stop", "start", "restart"):
        _detach()
        with project_lock(proj):
            return COMPOSE_CMDS[sub](proj, a)
    return COMPOSE_CMDS[sub](proj, a)


def docker(argv: list[str]) -> int:
    if not argv:
        raise Unsupported("docker without arguments")
    if argv[0] == "compose":
        return compose(argv[1:])
    if argv[0] in ("--version", "-v"):
        print(f"Docker version 0.0.0 ({DOUBLE}: no Docker engine; services run natively)")
        return 0
    if argv[0] in ("version", "info"):
        print(f"This is the {DOUBLE}, not Docker: there is no Docker engine on this host.\n"
              "It emulates the docker compose commands of the poc-ec2 runbook by running\n"
              "PostgreSQL, Synapse, Element (static) and nginx natively.\n"
              f"Compose: {COMPOSE_VERSION} (emulated)\n"
              "See docs/testing-rehearsal.md in the elematrix-tui repository.")
        return 0
    raise Unsupported(f"docker {argv[0]}")


# ------------------------------------------------------------------------------ cloud-init


def cloud_init(argv: list[str]) -> int:
    a = Args(argv, "cloud-init")
    if a.peek() != "status":
        raise Unsupported(f"cloud-init {' '.join(argv)}")
    a.take()
    fl, pos = a.flags({"--wait": False, "-w": False, "--long": False, "-l": False,
                       "--format": True})
    if pos:
        raise Unsupported(f"cloud-init status {' '.join(pos)}")
    fmt = fl.get("--format", ["tabular"])[-1]
    if fmt == "json":
        print(json.dumps({"status": "done", "extended_status": "done", "errors": [],
                          "detail": DOUBLE}))
    elif fmt in ("tabular", "yaml"):
        print("status: done")
        if "--long" in fl or "-l" in fl:
            print("extended_status: done\nboot_status_code: enabled-by-test-double\n"
                  f"detail: {DOUBLE} (user-data is not run on the rehearsal host)")
    else:
        raise Unsupported(f"cloud-init status --format {fmt}")
    return 0


# ------------------------------------------------------------------------------ systemctl


BUILTIN_UNITS = {"docker.service", "containerd.service"}  # "the engine" is always up


def _systemd_state(host: Host) -> dict[str, dict[str, Any]]:
    p = host.state / "systemd.json"
    try:
        data: dict[str, dict[str, Any]] = json.loads(p.read_text())
        return data
    except (OSError, ValueError):
        return {}


def _save_systemd_state(host: Host, st: dict[str, dict[str, Any]]) -> None:
    p = host.state / "systemd.json"
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(st, indent=1, sort_keys=True))
    tmp.replace(p)


def _unit_name(u: str) -> str:
    return u if "." in u else f"{u}.service"


def _find_unit(host: Host, unit: str) -> Path | None:
    for d in host.unit_dirs:
        if (d / unit).exists():
            return d / unit
    return None


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """An INI-like unit file: {section: {key: [values]}} (repeated keys kept in order)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, {})
            continue
        k, _, v = line.partition("=")
        out.setdefault(section, {}).setdefault(k.strip(), []).append(v.strip())
    return out


def _start_unit(host: Host, st: dict[str, dict[str, Any]], unit: str,
                restart: bool = False, depth: int = 0) -> None:
    """Start a unit: its Requires= first, then (a .service) its commands.

    A oneshot service without RemainAfterExit=yes is inactive again once it has run (like
    the backup service); a failed one is recorded as failed and fails the command."""
    rec = st.setdefault(unit, {"enabled": False, "active": False})
    if unit in BUILTIN_UNITS:
        rec.update(enabled=True, active=True)
        return
    path = _find_unit(host, unit)
    if path is None:
        raise Failed(f"Failed to start {unit}: Unit {unit} not found.", 5)
    if rec["active"] and not restart:
        return
    parsed = parse_unit(path)
    if depth < 5:
        for req in " ".join(parsed.get("Unit", {}).get("Requires", [])).split():
            _start_unit(host, st, _unit_name(req), depth=depth + 1)
    if unit.endswith(".service"):
        try:
            _run_unit(host, unit, path)
        except Failed:
            rec.update(active=False, failed=True)
            _save_systemd_state(host, st)
            raise
        remain = (parsed.get("Service", {}).get("RemainAfterExit") or ["no"])[-1]
        rec.update(active=remain in ("yes", "true", "1"), failed=False, last_run=time.time())
    else:
        # Timers never fire here: a test starts the service a timer would start.
        rec.update(active=True, since=time.time())


def _run_unit(host: Host, unit: str, path: Path,
              keys: tuple[str, ...] = ("ExecStartPre", "ExecStart")) -> None:
    """Run a oneshot service's commands natively (``/usr/bin/docker`` -> the double)."""
    u = parse_unit(path)
    svc = u.get("Service", {})
    typ = (svc.get("Type") or ["simple"])[-1]
    if typ != "oneshot":
        raise Unsupported(f"systemctl: {unit} has Type={typ} (only oneshot units are run)")
    cwd = (svc.get("WorkingDirectory") or ["/"])[-1]
    env = {"PATH": host.path_env(), "LANG": "C.UTF-8", STATE_ENV: str(host.state), **host.env}
    for key in keys:
        for line in svc.get(key, []):
            ignore = line.startswith("-")
            argv = shlex.split(line.lstrip("-@+!"))
            if argv and argv[0] in ("/usr/bin/docker", "/bin/docker", "docker"):
                argv = [str(host.shim_dir / "docker"), *argv[1:]]
            r = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL)
            if r.returncode != 0 and not ignore:
                raise Failed(f"Job for {unit} failed because the control process exited with "
                             f"error code (status={r.returncode}).\nSee \"systemctl status "
                             f"{unit}\" for details.")


def systemctl(argv: list[str]) -> int:
    a = Args(argv, "systemctl")
    fl, pos = a.flags({"--now": False, "--quiet": False, "-q": False, "--no-pager": False,
                       "--no-block": False, "-l": False, "--full": False})
    if not pos:
        raise Unsupported("systemctl without a command")
    verb, units = pos[0], [_unit_name(u) for u in pos[1:]]
    quiet = "--quiet" in fl or "-q" in fl
    host = Host.load()
    st = _systemd_state(host)
    mutating = {"daemon-reload", "enable", "disable", "start", "stop", "restart"}
    if verb in mutating and caller_uid() != 0:
        print(f"Failed to {verb}: Access denied (test double: use sudo)", file=sys.stderr)
        return 1
    if verb in mutating:
        _detach()  # systemd finishes a job whose client went away
    if verb == "daemon-reload":
        st.setdefault("_", {})["reloads"] = int(st.get("_", {}).get("reloads", 0)) + 1
        _save_systemd_state(host, st)
        return 0
    if not units:
        raise Unsupported(f"systemctl {verb} without a unit")
    rc = 0
    for unit in units:
        builtin = unit in BUILTIN_UNITS
        path = _find_unit(host, unit)
        rec = st.setdefault(unit, {"enabled": False, "active": False})
        if builtin:
            rec.update(enabled=True, active=True)
        elif path is None and verb in mutating | {"status"}:
            print(f"Failed to {verb} {unit}: Unit {unit} not found.", file=sys.stderr)
            return 5 if verb != "status" else 4
        if verb in ("enable", "disable"):
            if verb == "enable" and not builtin and path is not None:
                wanted = parse_unit(path).get("Install", {}).get("WantedBy")
                if not wanted:
                    raise Unsupported(f"systemctl enable {unit}: no [Install] WantedBy")
                err(f"Created symlink /etc/systemd/system/{wanted[-1]}.wants/{unit} -> {path}.")
            rec["enabled"] = verb == "enable"
        if (verb == "start" or (verb == "enable" and "--now" in fl) or verb == "restart") \
                and not builtin:
            _start_unit(host, st, unit, restart=verb == "restart")
        if (verb == "stop" or (verb == "disable" and "--now" in fl)) and not builtin:
            if rec["active"] and path is not None and unit.endswith(".service"):
                _run_unit(host, unit, path, ("ExecStop",))
            rec["active"] = False
        if verb == "is-active":
            state = "active" if rec["active"] else \
                ("failed" if rec.get("failed") else "inactive")
            if not quiet:
                print(state)
            rc = rc or (0 if rec["active"] else 3)
        elif verb == "is-enabled":
            state = "enabled" if rec["enabled"] else ("disabled" if path or builtin
                                                      else "not-found")
            if not quiet:
                print(state)
            rc = rc or (0 if rec["enabled"] else 1)
        elif verb == "status":
            active = "active (exited)" if rec["active"] else "inactive (dead)"
            print(f"* {unit} - {DOUBLE}\n     Loaded: loaded ({path or 'builtin'}; "
                  f"{'enabled' if rec['enabled'] else 'disabled'})\n     Active: {active}")
            rc = rc or (0 if rec["active"] else 3)
        elif verb not in mutating:
            raise Unsupported(f"systemctl {verb}")
    if verb in mutating:
        _save_systemd_state(host, st)
    return rc


# ------------------------------------------------------------------------------ entry point


def caller_uid() -> int:
    """The uid that ran the shim (the shim re-runs non-root callers under sudo)."""
    return int(os.environ.get("ELEMATRIX_FAKEHOST_CALLER_UID", os.geteuid()))


def main(args: Sequence[str] | None = None) -> int:
    """``fakedocker.py docker|cloud-init|systemctl ARGS...``"""
    argv = list(sys.argv[1:] if args is None else args)
    if not argv:
        print("usage: fakedocker.py docker|cloud-init|systemctl ARGS...", file=sys.stderr)
        return 2
    tool, rest = argv[0], argv[1:]
    if tool == "_proxy":
        return run_proxy(rest[0], int(rest[1]), rest[2], int(rest[3]), int(rest[4]))
    tools = {"docker": docker, "cloud-init": cloud_init, "systemctl": systemctl}
    try:
        if tool not in tools:
            raise Unsupported(f"tool {tool}")
        return tools[tool](rest)
    except Unsupported as e:
        err(f"test double: unsupported: {e} (command: {tool} {shlex.join(rest)}; see "
            "docs/testing-rehearsal.md)")
        return 1
    except Failed as e:
        err(str(e))
        return e.code


if __name__ == "__main__":
    sys.exit(main())
