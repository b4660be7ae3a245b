"""Real PostgreSQL, Synapse and nginx processes on loopback, for tests and benchmarks.

Plain classes (no pytest in here) so a fixture, a benchmark or a docker-compose test
double can drive them. Every service binds 127.0.0.1 on a free port, writes only
inside the directory it is given, and is stopped by ``stop()`` (also on a failed start).

Measured facts these rely on (``/work/shared/FACTS.md``):
- ``initdb`` refuses to run as root: as root we run PostgreSQL as the ``postgres`` user
  with ``Popen(user=, group=, extra_groups=[])`` (``runuser`` leaves orphans).
- Synapse accepts only a database with encoding UTF8 and collation/ctype exactly ``C``.
- ``nginx -t`` prints "syntax is ok" on stderr even on success: judge by exit code.

Typical use::

    stack = MatrixStack(tmp_path / "stack")
    stack.start()            # PostgreSQL + Synapse + nginx, ~4-6 s
    stack.base_url           # http://127.0.0.1:<nginx port>   (the public address)
    stack.admin_url          # http://127.0.0.1:<synapse port> (stands for the SSH forward)
    stack.stop()
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("ELEMATRIX_PG_BIN", "/usr/lib/postgresql/15/bin"))
NGINX_BIN = Path(os.environ.get("ELEMATRIX_NGINX_BIN", "/usr/sbin/nginx"))
SYNAPSE_VENV = Path(os.environ.get("ELEMATRIX_SYNAPSE_VENV", str(REPO / ".venv-synapse")))

LOOPBACK = "127.0.0.1"


class ServiceError(RuntimeError):
    """A service did not start (or stop); the message carries the tail of its log."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None,
              ) -> bool:
    """Wait until something accepts TCP connections on host:port (or ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _stop_process(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM,
                  timeout: float = 10.0) -> None:
    """Stop one process we started (never anything else), escalating to SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=5)


def missing_binaries() -> list[str]:
    """What this machine lacks to run a Matrix stack (empty when everything is there)."""
    missing = []
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "postgres").exists():
        missing.append(f"PostgreSQL 15 binaries ({PG_BIN}/initdb, postgres)")
    if not (PG_BIN / "psql").exists() and shutil.which("psql") is None:
        missing.append("psql")
    if not NGINX_BIN.exists():
        missing.append(f"nginx ({NGINX_BIN})")
    py = SYNAPSE_VENV / "bin" / "python"
    if not py.exists():
        missing.append(f"Synapse venv ({SYNAPSE_VENV})")
    else:
        r = subprocess.run([str(py), "-c", "import synapse, psycopg2"], capture_output=True,
                           timeout=60)
        if r.returncode != 0:
            missing.append(f"synapse with psycopg2 in {SYNAPSE_VENV}")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing.append("a 'postgres' system user (initdb refuses to run as root)")
    return missing


# ---------------------------------------------------------------------------- PostgreSQL


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1, TCP only, trust auth, fsync off."""

    def __init__(self, data_dir: Path | None = None, host: str = LOOPBACK,
                 port: int | None = None,
                 initdb_args: Sequence[str] = ("--encoding=UTF8", "--lc-collate=C",
                                               "--lc-ctype=C")) -> None:
        self._own_tmp: Path | None = None
        if data_dir is None:
            # Not under pytest's basetemp: every pytest session that starts (another
            # terminal, a teammate) resets /tmp/pytest-of-<user> to 0700, which would lock
            # the postgres user out of a running cluster. Our own dir in the system tmp.
            self._own_tmp = Path(tempfile.mkdtemp(prefix="elematrix-pg-"))
            data_dir = self._own_tmp / "data"
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self.initdb_args = list(initdb_args)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._user = self._run_as()

    @staticmethod
    def _run_as() -> dict[str, Any]:
        """Popen keywords to drop root to ``postgres`` (initdb and postgres refuse root)."""
        if os.geteuid() != 0:
            return {}
        return {"user": "postgres", "group": "postgres", "extra_groups": []}

    def _prepare_dirs(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not self._user:
            return
        pw = pwd.getpwnam("postgres")
        if self._own_tmp is not None:
            os.chown(self._own_tmp, pw.pw_uid, pw.pw_gid)
        # The postgres user must be able to traverse every ancestor of the data dir.
        # Changing modes of directories we do not own would not last (pytest resets its
        # basetemp to 0700 at each session start): refuse with a clear message instead.
        for d in self.data_dir.parent.parents if self._own_tmp else [
                self.data_dir.parent, *self.data_dir.parent.parents]:
            st = d.stat()
            if st.st_uid != pw.pw_uid and not st.st_mode & 0o001:
                raise ServiceError(f"the postgres user cannot enter {d} (mode "
                                   f"{st.st_mode & 0o777:o}); use Postgres(data_dir=None) "
                                   "for a directory of its own")
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(self.data_dir, pw.pw_uid, pw.pw_gid)
        self.log_path.touch()
        os.chown(self.log_path, pw.pw_uid, pw.pw_gid)

    def _run(self, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              cwd="/", **self._user)

    def start(self, timeout: float = 30) -> Postgres:
        """initdb (first time only) and start the server; returns when it accepts queries."""
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            r = self._run([str(PG_BIN / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                           "--auth=trust", "--no-sync", *self.initdb_args])
            if r.returncode != 0:
                raise ServiceError(f"initdb failed ({r.returncode}):\n{r.stderr[-3000:]}")
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        # No unix socket (its default dir /var/run/postgresql may not exist, and a path
        # under pytest's tmp can exceed the 107-byte limit): TCP on loopback only.
        self.proc = subprocess.Popen(
            [str(PG_BIN / "postgres"), "-D", str(self.data_dir), "-h", self.host,
             "-p", str(self.port), "-c", "unix_socket_directories=",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=100"],
            stdout=log, stderr=subprocess.STDOUT, cwd="/", start_new_session=True, **self._user)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"postgres exited {self.proc.returncode}:\n"
                                   f"{_tail(self.log_path)}")
            ready = subprocess.run([str(PG_BIN / "pg_isready"), "-h", self.host, "-p",
                                    str(self.port), "-U", "postgres"], capture_output=True,
                                   timeout=10)
            if ready.returncode == 0:
                return self
            time.sleep(0.1)
        self.stop()
        raise ServiceError(f"postgres not ready after {timeout}s:\n{_tail(self.log_path)}")

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run SQL as the superuser over TCP; returns unaligned tuples-only output."""
        r = subprocess.run(
            [str(PG_BIN / "psql"), "-h", self.host, "-p", str(self.port), "-U", "postgres",
             "-d", db, "-v", "ON_ERROR_STOP=1", "-A", "-t", "-c", sql],
            capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise ServiceError(f"psql failed: {r.stderr.strip()}")
        return r.stdout.strip()

    def create_db(self, name: str, owner: str, password: str) -> None:
        """Create a role and a UTF8 / C-collation database it owns (what Synapse demands)."""
        pw = password.replace("'", "''")
        exists = self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{owner}'")
        verb = "ALTER" if exists == "1" else "CREATE"
        self.psql(f"{verb} ROLE \"{owner}\" LOGIN PASSWORD '{pw}'")
        if self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'") != "1":
            self.psql(f"CREATE DATABASE \"{name}\" OWNER \"{owner}\" ENCODING 'UTF8' "
                      "LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
        got = self.psql("SELECT pg_encoding_to_char(encoding) || '/' || datcollate || '/' || "
                        "datctype FROM pg_database WHERE datname = current_database()", db=name)
        if got != "UTF8/C/C":
            raise ServiceError(f"database {name} is {got}, Synapse needs UTF8/C/C")

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back, disconnect everyone)."""
        _stop_process(self.proc, signal.SIGINT)
        self.proc = None
        if self._own_tmp is not None:
            shutil.rmtree(self._own_tmp, ignore_errors=True)
            self._own_tmp = None


# ---------------------------------------------------------------------------- Synapse


def write_signing_key(path: Path) -> None:
    """An ed25519 signing key in Synapse's file format, without booting Synapse for it.

    The format is ``ed25519 <version> <unpadded base64 of the 32-byte seed>`` (what
    ``signedjson.key.write_signing_keys`` writes and ``generate_signing_key`` produces).
    """
    import base64

    seed = base64.b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    path.write_text(f"ed25519 a_{secrets.token_hex(2)} {seed}\n")
    path.chmod(0o600)


class Synapse:
    """A Synapse homeserver from the separate Synapse venv, on the config's first listener."""

    def __init__(self, config_path: Path, workdir: Path, venv: Path = SYNAPSE_VENV) -> None:
        self.config_path = Path(config_path)
        self.workdir = Path(workdir)
        self.venv = Path(venv)
        self.log_path = self.workdir / "synapse.stdout.log"
        self.proc: subprocess.Popen[bytes] | None = None
        cfg = yaml.safe_load(self.config_path.read_text())
        self.config: dict[str, Any] = cfg
        listener = next(li for li in cfg["listeners"] if li.get("type") == "http")
        self.host = (listener.get("bind_addresses") or [LOOPBACK])[0]
        self.port = int(listener["port"])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        """The last lines Synapse wrote (stdout/stderr and homeserver.log if configured)."""
        out = _tail(self.log_path, lines)
        hs_log = self.workdir / "homeserver.log"
        if hs_log.exists():
            out += "\n--- homeserver.log ---\n" + _tail(hs_log, lines)
        return out

    def start(self, timeout: float = 60) -> Synapse:
        """Start Synapse and wait for ``/health`` to answer 200."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        key = self.config.get("signing_key_path")
        if key and not Path(key).exists():
            write_signing_key(Path(key))
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        self.proc = subprocess.Popen(
            [str(self.venv / "bin" / "python"), "-m", "synapse.app.homeserver",
             "-c", str(self.config_path)],
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServiceError(f"synapse exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise ServiceError(f"synapse /health not 200 after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        _stop_process(self.proc, signal.SIGTERM)
        self.proc = None


# ---------------------------------------------------------------------------- nginx


def nginx_main_conf(prefix: Path, server_conf: Path) -> str:
    """A complete nginx.conf around one ``server {}`` file, everything inside ``prefix``."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers read files in 0700 tmp dirs
    p = prefix
    return f"""{user}worker_processes 1;
daemon off;
pid {p}/nginx.pid;
error_log {p}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {p}/access.log;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    default_type application/octet-stream;
    types {{ text/html html; application/json json; application/javascript js; }}
    include {server_conf};
}}
"""


@dataclass
class NginxTest:
    ok: bool
    output: str


class Nginx:
    """The system nginx on a config of ours, in the foreground, with its own pid and logs."""

    def __init__(self, conf_path: Path, prefix: Path, port: int | None = None) -> None:
        self.conf_path = Path(conf_path)
        self.prefix = Path(prefix)
        self.port = port  # only used to wait for the listener
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    def _argv(self, *extra: str) -> list[str]:
        return [str(NGINX_BIN), "-p", str(self.prefix), "-c", str(self.conf_path),
                "-e", str(self.error_log), *extra]

    def _prepare(self) -> None:
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)

    def test(self) -> NginxTest:
        """``nginx -t``: ok is the exit code (stderr says 'syntax is ok' either way)."""
        self._prepare()
        r = subprocess.run(self._argv("-t"), capture_output=True, text=True, timeout=30)
        return NginxTest(r.returncode == 0, (r.stdout + r.stderr).strip())

    def start(self, timeout: float = 15) -> Nginx:
        t = self.test()
        if not t.ok:
            raise ServiceError(f"nginx -t failed:\n{t.output}")
        out = open(self.prefix / "stdout.log", "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(self._argv(), stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        out.close()
        if self.port is not None and not wait_port(LOOPBACK, self.port, timeout, self.proc):
            tail = _tail(self.error_log)
            self.stop()
            raise ServiceError(f"nginx did not listen on {self.port}:\n{tail}")
        return self

    def stop(self) -> None:
        # SIGQUIT: graceful shutdown of master and workers (SIGTERM is fast shutdown).
        _stop_process(self.proc, signal.SIGQUIT)
        self.proc = None


# ---------------------------------------------------------------------------- the stack


@dataclass
class StackPorts:
    postgres: int
    synapse: int
    nginx: int


@dataclass
class StackFiles:
    """What the stack needs on disk, adapted to run natively on loopback."""

    homeserver_yaml: Path
    nginx_server_conf: Path
    # Which templates made them: "project" (assets/stack) or "test".
    source: str
    # Synapse's config as a dict (after adaptation), for tests that want to read it.
    homeserver: dict[str, Any] = field(default_factory=dict)


@dataclass
class StackSettings:
    server_name: str = "elematrix.test"
    max_upload_size_mb: int = 4
    registration_shared_secret: str = field(default_factory=lambda: secrets.token_hex(24))
    macaroon_secret_key: str = field(default_factory=lambda: secrets.token_hex(24))
    form_secret: str = field(default_factory=lambda: secrets.token_hex(24))
    postgres_password: str = field(default_factory=lambda: secrets.token_hex(16))
    enable_registration: bool = True
    registration_requires_token: bool = True
    brand: str = "Elematrix Test"
    # The address of the public base URL. nginx always listens on 127.0.0.1 and also on
    # this one (an address of a network namespace's veth, for the shaped-link tests).
    public_host: str = LOOPBACK
    # True: Synapse's own rate limits (no rc_* overrides), as on a real deployment.
    synapse_default_rate_limits: bool = False


# Settings that make a test homeserver fast and self-contained, merged over whatever the
# templates produced. None of them changes what the validation checks.
FAST_TEST_OVERRIDES: dict[str, Any] = {
    "bcrypt_rounds": 4,
    "trusted_key_servers": [],
    "suppress_key_server_warning": True,
    "report_stats": False,
}
# Tests register and log in many users from 127.0.0.1 within seconds. Not applied with
# StackSettings(synapse_default_rate_limits=True): then Synapse's defaults hold.
GENEROUS_RATE_LIMITS: dict[str, Any] = {
    "rc_registration": {"per_second": 1000, "burst_count": 1000},
    "rc_login": {"address": {"per_second": 1000, "burst_count": 1000},
                 "account": {"per_second": 1000, "burst_count": 1000},
                 "failed_attempts": {"per_second": 1000, "burst_count": 1000}},
    "rc_message": {"per_second": 1000, "burst_count": 1000},
    "rc_joins": {"local": {"per_second": 1000, "burst_count": 1000},
                 "remote": {"per_second": 1000, "burst_count": 1000}},
    "rc_invites": {"per_room": {"per_second": 1000, "burst_count": 1000},
                   "per_user": {"per_second": 1000, "burst_count": 1000}},
    "rc_registration_token_validity": {"per_second": 1000, "burst_count": 1000},
    "rc_key_requests": {"per_second": 1000, "burst_count": 1000},
    "rc_admin_redaction": {"per_second": 1000, "burst_count": 1000},
}


def element_config(base_url: str, server_name: str, brand: str) -> dict[str, Any]:
    """A minimal white-label Element ``config.json`` (used when no project template exists)."""
    return {
        "default_server_config": {"m.homeserver": {"base_url": base_url,
                                                   "server_name": server_name}},
        "brand": brand,
        "disable_guests": True,
        "disable_custom_urls": True,
        "default_theme": "light",
    }


def test_homeserver(settings: StackSettings, ports: StackPorts, workdir: Path,
                    base_url: str) -> dict[str, Any]:
    """Our own minimal homeserver.yaml (the shape the project's template must also have)."""
    return {
        "server_name": settings.server_name,
        "public_baseurl": base_url + "/",
        "pid_file": str(workdir / "homeserver.pid"),
        "listeners": [{
            "port": ports.synapse, "bind_addresses": [LOOPBACK], "type": "http",
            "tls": False, "x_forwarded": True,
            "resources": [{"names": ["client"], "compress": False}],
        }],
        "database": {"name": "psycopg2", "args": {
            "user": "synapse", "password": settings.postgres_password, "dbname": "synapse",
            "host": LOOPBACK, "port": ports.postgres, "cp_min": 1, "cp_max": 5}},
        "media_store_path": str(workdir / "media"),
        "signing_key_path": str(workdir / "signing.key"),
        "registration_shared_secret": settings.registration_shared_secret,
        "macaroon_secret_key": settings.macaroon_secret_key,
        "form_secret": settings.form_secret,
        "enable_registration": settings.enable_registration,
        "registration_requires_token": settings.registration_requires_token,
        "max_upload_size": f"{settings.max_upload_size_mb}M",
        "federation_domain_whitelist": [],
        **FAST_TEST_OVERRIDES,
        **({} if settings.synapse_default_rate_limits else GENEROUS_RATE_LIMITS),
    }


def test_nginx_server(settings: StackSettings, ports: StackPorts, web_root: Path,
                      base_url: str, *, matrix_location: str | None = None,
                      extra: str = "", body_size: str | None = None,
                      server_well_known: str | None = "", spa_fallback: bool = False) -> str:
    """Our own HTTP-only nginx ``server {}`` (the correct shape: proxy_pass with no path).

    ``matrix_location`` replaces the Matrix proxy locations, ``extra`` is inserted in the
    server block, ``body_size`` replaces ``client_max_body_size`` ("" drops it: nginx's
    1 MB default): the broken variants the validation must diagnose are built from these.
    ``server_well_known``: the body served as /.well-known/matrix/server ("" the default
    JSON, None: not served). ``spa_fallback``: ``location /`` answers index.html for any
    unknown path (how single-page apps are often served).
    """
    upstream = f"http://{LOOPBACK}:{ports.synapse}"
    size = f"{settings.max_upload_size_mb}M" if body_size is None else body_size
    size_line = f"client_max_body_size {size};" if size else ""
    client_wk = json.dumps({"m.homeserver": {"base_url": base_url}})
    server_wk = (json.dumps({"m.server": f"{settings.server_name}:443"})
                 if server_well_known == "" else server_well_known)
    server_loc = "" if server_wk is None else f"""location = /.well-known/matrix/server {{
        default_type application/json;
        add_header Access-Control-Allow-Origin *;
        return 200 '{server_wk}';
    }}"""
    fallback = "try_files $uri /index.html;" if spa_fallback else ""
    proxy_headers = """
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header Host $host:$server_port;
        proxy_http_version 1.1;"""
    matrix = matrix_location if matrix_location is not None else f"""
    location ~ ^(/_matrix|/_synapse/client) {{
        proxy_pass {upstream};{proxy_headers}
    }}"""
    return f"""server {{
    listen {LOOPBACK}:{ports.nginx};
    server_name _;
    {size_line}
    {extra}
    location = /.well-known/matrix/client {{
        default_type application/json;
        add_header Access-Control-Allow-Origin *;
        return 200 '{client_wk}';
    }}
    {server_loc}
    {matrix}
    location / {{
        root {web_root};
        index index.html;
        {fallback}
    }}
}}
"""


def _project_renderer() -> Callable[..., Any] | None:
    try:
        from elematrix_tui.stack.render import render_stack
    except ImportError:
        return None
    return render_stack


def adapt_stack(settings: StackSettings, ports: StackPorts, root: Path,
                use_project_templates: bool = True) -> StackFiles:
    """Produce homeserver.yaml, the nginx server config and Element's web root for loopback.

    This is the ONE place where the deployment's configuration is adapted to run natively.
    When the project's templates exist (``elematrix_tui.stack.render.render_stack``), they
    are rendered and only what a compose network would map is changed:
    - hostnames ``postgres``/``synapse``/``element`` -> 127.0.0.1 and the chosen ports
      (nginx's ``listen 80`` -> ``listen 127.0.0.1:<port>``);
    - ``/data/...`` (Synapse's volume) -> directories under ``root``;
    - Element's container (nginx proxies ``/`` to ``element:80``) -> one more server block
      of the same nginx on its own loopback port, serving the rendered ``config.json``;
    - the fast test settings of :data:`FAST_TEST_OVERRIDES` (bcrypt rounds, no key servers,
      rate limits that allow a test suite's worth of logins from one address).
    Without the templates, :func:`test_homeserver` and :func:`test_nginx_server` are used.
    """
    base_url = f"http://{settings.public_host}:{ports.nginx}"
    synapse_dir = root / "synapse"
    web_root = root / "www"
    for d in (synapse_dir, synapse_dir / "media", web_root):
        d.mkdir(parents=True, exist_ok=True)
    renderer = _project_renderer() if use_project_templates else None
    hs: dict[str, Any]
    if renderer is not None:
        hs, server_conf, element_cfg = _adapt_project(renderer, settings, ports, root,
                                                      base_url, synapse_dir, web_root)
        source = "project"
    else:
        hs = test_homeserver(settings, ports, synapse_dir, base_url)
        server_conf = test_nginx_server(settings, ports, web_root, base_url)
        element_cfg = element_config(base_url, settings.server_name, settings.brand)
        source = "test"
    (web_root / "config.json").write_text(json.dumps(element_cfg, indent=2))
    (web_root / "index.html").write_text("<!doctype html><title>Element</title>\n")
    hs_path = synapse_dir / "homeserver.yaml"
    hs_path.write_text(yaml.safe_dump(hs, sort_keys=False))
    hs_path.chmod(0o600)
    nginx_dir = root / "nginx"
    nginx_dir.mkdir(parents=True, exist_ok=True)
    conf = nginx_dir / "server.conf"
    conf.write_text(server_conf)
    return StackFiles(hs_path, conf, source, hs)


def _adapt_project(renderer: Callable[..., Any], settings: StackSettings, ports: StackPorts,
                   root: Path, base_url: str, synapse_dir: Path, web_root: Path,
                   ) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """Render the project's stack and map compose names/paths to loopback (see adapt_stack)."""
    import re

    from elematrix_tui.stack.values import StackValues

    out = root / "rendered"
    values = StackValues(server_name=settings.server_name,
                         public_address=f"{settings.public_host}:{ports.nginx}",
                         max_upload_size_mb=settings.max_upload_size_mb, brand=settings.brand)
    secret_values = {
        "registration_shared_secret": settings.registration_shared_secret,
        "macaroon_secret_key": settings.macaroon_secret_key,
        "form_secret": settings.form_secret,
        "postgres_password": settings.postgres_password,
    }
    renderer(values, secret_values, out)
    hs = yaml.safe_load((out / "synapse" / "homeserver.yaml").read_text())
    # Compose network: the listener binds 0.0.0.0:8008 inside the container.
    http = [li for li in hs.get("listeners", []) if li.get("type") == "http"][:1]
    for li in http:
        li["port"] = ports.synapse
        li["bind_addresses"] = [LOOPBACK]
    hs["listeners"] = http
    # Compose network: the database is the `postgres` service on 5432.
    args = hs.setdefault("database", {}).setdefault("args", {})
    args["host"], args["port"] = LOOPBACK, ports.postgres
    # Compose volumes: /data (synapse-data: signing key, pid) and /media_store.
    text = yaml.safe_dump(hs, sort_keys=False)
    text = re.sub(r"(?<![\w/])/data(?=/)", str(synapse_dir), text)
    hs = yaml.safe_load(text)
    hs["media_store_path"] = str(synapse_dir / "media")
    # /config/log.config logs to the container's stdout: without it Synapse logs to stderr,
    # which the Synapse launcher collects anyway.
    hs.pop("log_config", None)
    hs.update(FAST_TEST_OVERRIDES)
    if not settings.synapse_default_rate_limits:
        hs.update(GENEROUS_RATE_LIMITS)
    # Test knobs (the registration-disabled variant); the template's values by default.
    hs["enable_registration"] = settings.enable_registration
    hs["registration_requires_token"] = settings.registration_requires_token
    # nginx: port 80 (v4 and v6) -> one loopback port; service names -> loopback.
    conf = (out / "nginx" / "default.conf").read_text()
    conf = re.sub(r"^\s*listen\s+\[::\]:80\b[^;]*;\s*$", "", conf, flags=re.M)
    listen = f"listen {LOOPBACK}:{ports.nginx};"
    if settings.public_host != LOOPBACK:
        listen += f" listen {settings.public_host}:{ports.nginx};"
    conf = re.sub(r"listen\s+80\b[^;]*;", listen, conf)
    conf = re.sub(r"\bsynapse:8008\b", f"{LOOPBACK}:{ports.synapse}", conf)
    conf = conf.replace("/var/www/well-known", str(out / "nginx" / "well-known"))
    # The element container is a static web server on :80 of the compose network: here
    # one more server block of this nginx, on its own loopback port, serving the rendered
    # config.json. proxy_pass/upstream lines keep their shape; only the address changes.
    element_port = free_port()
    conf = re.sub(r"\belement:80\b", f"{LOOPBACK}:{element_port}", conf)
    conf = re.sub(r"(proxy_pass\s+http://)element(?=[/;])",
                  rf"\g<1>{LOOPBACK}:{element_port}", conf)
    conf += (f"\n# The element container, natively.\nserver {{\n    listen {LOOPBACK}:"
             f"{element_port};\n    root {web_root};\n    index index.html;\n}}\n")
    element_cfg = json.loads((out / "element" / "config.json").read_text())
    return hs, conf, element_cfg


class MatrixStack:
    """PostgreSQL + Synapse + nginx on loopback, configured like a deployment.

    ``base_url`` goes through nginx (the public address); ``admin_url`` is Synapse
    directly (what the SSH port forward gives the operator on a real deployment).
    ``add_nginx()`` starts more nginx front ends on the same Synapse (broken variants).
    """

    def __init__(self, root: Path, settings: StackSettings | None = None,
                 use_project_templates: bool = True, postgres: Postgres | None = None,
                 database: str = "synapse") -> None:
        self.root = Path(root)
        self.settings = settings or StackSettings()
        self.use_project_templates = use_project_templates
        self._shared_pg = postgres
        self.database = database
        self.postgres: Postgres | None = postgres
        self.synapse: Synapse | None = None
        self.nginx: Nginx | None = None
        self.extra_nginx: list[Nginx] = []
        self.files: StackFiles | None = None
        self.ports = StackPorts(postgres=postgres.port if postgres else free_port(),
                                synapse=free_port(), nginx=free_port())
        self.timings: dict[str, float] = {}

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.public_host}:{self.ports.nginx}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.synapse}"

    @property
    def server_name(self) -> str:
        return self.settings.server_name

    @property
    def registration_shared_secret(self) -> str:
        return self.settings.registration_shared_secret

    def start(self) -> MatrixStack:
        """Start everything (stopping what did start if a later service fails)."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        if self.postgres is None:
            self.postgres = Postgres(None, port=self.ports.postgres).start()
        self.postgres.create_db(self.database, "synapse", self.settings.postgres_password)
        self.timings["postgres_s"] = time.monotonic() - t0
        self.files = adapt_stack(self.settings, self.ports, self.root, self.use_project_templates)
        if self.database != "synapse":
            hs = dict(self.files.homeserver)
            hs["database"]["args"]["dbname"] = self.database
            self.files.homeserver_yaml.write_text(yaml.safe_dump(hs, sort_keys=False))
        t0 = time.monotonic()
        self.synapse = Synapse(self.files.homeserver_yaml, self.root / "synapse").start()
        self.timings["synapse_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        self.nginx = self._nginx(self.files.nginx_server_conf, "nginx", self.ports.nginx).start()
        self.timings["nginx_s"] = time.monotonic() - t0

    def _nginx(self, server_conf: Path, name: str, port: int) -> Nginx:
        prefix = self.root / name
        prefix.mkdir(parents=True, exist_ok=True)
        main = prefix / "nginx.conf"
        main.write_text(nginx_main_conf(prefix, server_conf))
        return Nginx(main, prefix, port)

    def nginx_variant(self, name: str, **kwargs: Any) -> tuple[str, Nginx]:
        """Start another nginx in front of the same Synapse with a (broken) server config.

        kwargs go to :func:`test_nginx_server` (matrix_location, extra, body_size). Returns
        (base_url, Nginx). Stopped by :meth:`stop`.
        """
        port = free_port()
        base_url = f"http://{LOOPBACK}:{port}"
        ports = StackPorts(self.ports.postgres, self.ports.synapse, port)
        web_root = self.root / f"www-{name}"
        web_root.mkdir(parents=True, exist_ok=True)
        (web_root / "config.json").write_text(json.dumps(
            element_config(base_url, self.server_name, self.settings.brand)))
        (web_root / "index.html").write_text("<!doctype html><title>Element</title>\n")
        conf = self.root / f"nginx-{name}" / "server.conf"
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(test_nginx_server(self.settings, ports, web_root, base_url, **kwargs))
        ng = self._nginx(conf, f"nginx-{name}", port).start()
        self.extra_nginx.append(ng)
        return base_url, ng

    def stop(self) -> None:
        """Stop everything this stack started (a shared PostgreSQL is left running)."""
        for ng in [*self.extra_nginx, self.nginx]:
            if ng is not None:
                ng.stop()
        self.extra_nginx.clear()
        self.nginx = None
        if self.synapse is not None:
            self.synapse.stop()
            self.synapse = None
        if self.postgres is not None and self._shared_pg is None:
            self.postgres.stop()
            self.postgres = None

    def __enter__(self) -> MatrixStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":  # manual smoke test: python tests/support/services.py
    with tempfile.TemporaryDirectory() as d, MatrixStack(Path(d)) as st:
        print(json.dumps({"base_url": st.base_url, "admin_url": st.admin_url,
                          "source": st.files.source if st.files else None,
                          **st.timings}))
        sys.exit(0)


def reset_moto(url: str) -> None:
    """Empty every moto backend of this process through the moto server at ``url``
    (moto's own ``/moto-api/reset``): the backends are the process's, shared by every
    in-process ``mock_aws`` and server a worker ran before (CI once found another test's
    target group, with its own instance, first in a listing)."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"),
                           timeout=30).close()
