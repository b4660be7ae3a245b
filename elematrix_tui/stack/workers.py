"""Synapse with workers: the layout, the route table and the files they generate.

Everything here follows Synapse's worker documentation, ``docs/workers.md`` of
element-hq/synapse at commit 047001383d3f01f15c859a2b0af19b0fd0304efe (read for Synapse
1.163; the endpoint regexes below are copied from its lists), and the checks Synapse's own
``synapse/config/workers.py`` makes at start (one writer each for typing, to_device,
account_data, presence and push_rules; every writer named in ``instance_map``).

- :class:`WorkerLayout` is the layout parameter: how many processes of each role.
- :data:`ROUTES` is the **one** route table: the nginx ``map`` is generated from it and
  the route-map gate (``actions/matrix_routes.py``) probes it, so the map and the gate
  cannot disagree about which worker a path belongs to.
- :func:`worker_files` renders the bundled stack (``render.render_files``) and replaces
  or adds what a worker deployment changes: the shared ``synapse/workers.yaml`` (main's
  replication listener, Redis, ``instance_map``, ``stream_writers``, the federation
  sender and media instances), one ``synapse/workers/<name>.yaml`` per worker, the
  compose file with one service per process plus Redis, and nginx's routing map.

Each worker listens on a port of its own (:attr:`Worker.http_port`), so nginx can name the
process that really answered from ``$upstream_addr`` (``X-Elematrix-Worker``) without
exposing any address.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jinja2 import FunctionLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from ..bundled import assets_dir
from .render import (
    EXECUTABLE_FILES,
    SECRET_FILES,
    Database,
    RenderError,
    element_config,
    render_files,
)
from .values import BUCKET_RE, DB_POOL_MAX, REGION_RE, StackValues

# Secrets a worker deployment adds to the bundled stack's (values.SECRET_NAMES): Redis's
# AUTH token (ElastiCache's, in production) and the replication secret between processes.
WORKER_SECRET_NAMES: tuple[str, ...] = ("redis_password", "worker_replication_secret")

# The response header nginx sets to the worker that answered (the route gate reads it).
WORKER_HEADER = "X-Elematrix-Worker"
# The main process: its name in instance_map (Synapse's MAIN_PROCESS_INSTANCE_MAP_NAME).
MAIN = "main"
MAIN_HOST = "synapse"
MAIN_HTTP_PORT = 8008
MAIN_REPLICATION_PORT = 9093
# Worker n (1-based, in layout order) listens on WORKER_HTTP_BASE + n; a stream writer's
# replication listener on WORKER_REPLICATION_BASE + n.
WORKER_HTTP_BASE = 8100
WORKER_REPLICATION_BASE = 9100
# The files the local Redis container serves TLS with (redis_tls with redis_host "redis"),
# relative to the stack directory; not rendered: the operator's (or the test CA's).
REDIS_TLS_FILES: tuple[str, str] = ("redis/tls/server.crt", "redis/tls/server.key")
# The Redis stand-in image the engine tests build (scripts/images/redis; docs/test-images.md).
REDIS_IMAGE = "elematrix-local/redis:7.0"
# Our Synapse image plus Synapse's [redis] extra, which upstream's image has ([all]), and
# the S3 storage provider module (its own tag: other worktrees keep building the old one).
SYNAPSE_WORKERS_IMAGE = "elematrix-local/synapse-workers:v1.163.2-s3"
# matrix-org/synapse-s3-storage-provider, installed into that image (PyPI). 1.7.0 imports
# synapse.rest.media.v1._base/storage_provider, which Synapse 1.163.2 still ships, and
# needs boto3 >= 1.36 (AWS_ENDPOINT_URL_S3 is honoured); checked at build and on the engine.
S3_STORAGE_PROVIDER = "synapse-s3-storage-provider==1.7.0"
# The module's provider class (its README).
S3_PROVIDER_MODULE = "s3_storage_provider.S3StorageProviderBackend"

Role = Literal["sync", "client_reader", "federation_inbound", "federation_sender",
               "event_persister", "media_repository", "stream_writer"]

# The streams the one stream_writer worker writes (each allows exactly one writer, or
# more than one for receipts; events go to the event persisters).
STREAM_WRITER_STREAMS: tuple[str, ...] = ("typing", "to_device", "account_data", "receipts",
                                          "presence", "push_rules")


@dataclass(frozen=True)
class RoleSpec:
    """What a role is in Synapse's terms: its app, its listener resources, its name."""

    app: str
    resources: tuple[str, ...]
    prefix: str
    # Written to instance_map (a stream writer must be; workers.md "Stream writers").
    replication: bool = False


ROLES: dict[str, RoleSpec] = {
    "sync": RoleSpec("synapse.app.generic_worker", ("client",), "sync"),
    "client_reader": RoleSpec("synapse.app.generic_worker", ("client",), "client"),
    "federation_inbound": RoleSpec("synapse.app.generic_worker", ("federation",), "fedin"),
    "federation_sender": RoleSpec("synapse.app.generic_worker", (), "fedsend"),
    "event_persister": RoleSpec("synapse.app.generic_worker", (), "persister",
                                replication=True),
    # workers.md "synapse.app.media_repository": the media resource; main gets
    # enable_media_repo: false (synapse/config/repository.py loads the media repo on a
    # worker only when its worker_app is this one).
    "media_repository": RoleSpec("synapse.app.media_repository", ("media",), "media"),
    "stream_writer": RoleSpec("synapse.app.generic_worker", ("client",), "writer",
                              replication=True),
}


class WorkerLayout(BaseModel):
    """The layout parameter: processes per role (0 leaves the role to the main process)."""

    model_config = ConfigDict(extra="forbid")

    sync: int = Field(default=2, ge=0, le=16)
    client_reader: int = Field(default=1, ge=0, le=16)
    federation_inbound: int = Field(default=1, ge=0, le=16)
    federation_sender: int = Field(default=1, ge=0, le=16)
    event_persister: int = Field(default=1, ge=0, le=16)
    # More than one media repository needs them on one host sharing the store.
    media_repository: int = Field(default=1, ge=0, le=1)
    # typing/to_device/account_data/presence/push_rules allow a single writer.
    stream_writer: int = Field(default=1, ge=0, le=1)
    # PostgreSQL: the stack's own container by default ("postgres"); in production RDS's
    # endpoint, and then no container is rendered (render.Database, external). Synapse's
    # password is then the one postgres.create_database gave its role (the keyring's
    # synapse_db_password, through stack.render_workers' db_password).
    db_host: str = "postgres"
    db_port: int = Field(default=5432, ge=1, le=65535)
    # TLS to that server: RDS PostgreSQL 15+ refuses plain connections (rds.force_ssl=1).
    # Ignored for the container (the project's network only).
    db_sslmode: Literal["require", "disable"] = "require"
    # Redis: the stand-in container by default; ElastiCache's endpoint in production.
    redis_host: str = "redis"
    redis_port: int = Field(default=6379, ge=1, le=65535)
    # TLS to Redis (ElastiCache with in-transit encryption refuses plaintext). With the
    # local container, it then serves TLS only (no plaintext port) with the certificate
    # and key the operator puts in redis/tls/ (REDIS_TLS_FILES; the rehearsal's test CA).
    redis_tls: bool = False
    # Synapse's redis.ca_file, a path inside the Synapse containers (./synapse is
    # /config): the CA of a private Redis certificate; empty for ElastiCache's.
    # Note: Synapse 1.163 loads it but never turns on peer verification
    # (synapse/replication/tcp/context.py: twisted's ClientContextFactory, VERIFY_NONE):
    # TLS encrypts, it does not authenticate Redis (docs/production-workers.md).
    redis_ca_file: str = ""
    # S3 media (matrix-org's storage provider module, on the media repository worker or,
    # without one, the main process): the bucket phase data made; empty: local disk only.
    # No keys in the config: boto3's default chain finds the instance role (IMDSv2).
    media_bucket: str = ""
    # The bucket's region (boto3 does not read it from the instance); empty: boto3's own.
    media_region: str = ""
    # The addresses nginx trusts for X-Forwarded-For (the ALB's subnets in production).
    trusted_proxies: tuple[str, ...] = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    # https public address (the ALB's name); empty: the stack's public_address over https.
    public_baseurl: str = ""
    # Host loopback port of the main process's listener (the admin API, through an SSH
    # port forward as in the POC); 0: not published.
    admin_port: int = Field(default=8008, ge=0, le=65535)
    # Publish nginx on values.http_port of the host (the ALB's target); off when the
    # TLS edge runs on the same project network (the rehearsal's ALB stand-in).
    publish_router: bool = True

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for c in v:
            try:
                ipaddress.ip_network(c)
            except ValueError as e:
                raise ValueError(f"trusted_proxies: {c!r} is not a CIDR block") from e
        return v

    @field_validator("redis_host", "db_host")
    @classmethod
    def _host(cls, v: str, info: ValidationInfo) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", v):
            raise ValueError(f"{info.field_name} {v!r} is not a host name")
        return v

    def database(self) -> Database:
        """What Synapse's ``database:`` names under this layout."""
        if self.db_host == "postgres":
            return Database()
        return Database(self.db_host, self.db_port, self.db_sslmode, external=True)

    @field_validator("redis_ca_file")
    @classmethod
    def _ca(cls, v: str) -> str:
        if v and not v.startswith("/config/"):
            raise ValueError(f"redis_ca_file {v!r} must be a path under /config/ "
                             "(the stack's synapse/ directory in the containers)")
        return v

    @field_validator("media_bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not BUCKET_RE.fullmatch(v):
            raise ValueError(f"media_bucket {v!r} is not an S3 bucket name")
        return v

    @field_validator("media_region")
    @classmethod
    def _region(cls, v: str) -> str:
        if v and not REGION_RE.fullmatch(v):
            raise ValueError(f"media_region {v!r} is not an AWS region")
        return v

    @field_validator("public_baseurl")
    @classmethod
    def _baseurl(cls, v: str) -> str:
        if v and not (v.startswith("https://") and v.endswith("/")):
            raise ValueError(f"public_baseurl {v!r} must be https://<name>[:port]/")
        return v


@dataclass(frozen=True)
class Worker:
    """One worker process of a layout."""

    name: str
    role: str
    index: int

    @property
    def spec(self) -> RoleSpec:
        return ROLES[self.role]

    @property
    def service(self) -> str:
        """Its compose service, which is also its host name on the stack's network."""
        return f"synapse-{self.name}"

    @property
    def http_port(self) -> int:
        return WORKER_HTTP_BASE + self.index

    @property
    def replication_port(self) -> int:
        return WORKER_REPLICATION_BASE + self.index


def db_connections(layout: WorkerLayout) -> int:
    """What every Synapse process of the layout may hold on the database at once."""
    return (1 + len(workers_of(layout))) * DB_POOL_MAX


def workers_of(layout: WorkerLayout) -> list[Worker]:
    """The layout's workers in a stable order (ports follow that order)."""
    out: list[Worker] = []
    for role, spec in ROLES.items():
        for n in range(1, int(getattr(layout, role)) + 1):
            out.append(Worker(f"{spec.prefix}{n}", role, len(out) + 1))
    return out


# --- the route table ---------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One request the route gate sends for a route class (``{server}``: server name)."""

    method: str
    path: str
    # Send a well-formed (not valid) access token: the sync map hashes on its localpart.
    auth: bool = False


@dataclass(frozen=True)
class RouteClass:
    """A class of paths served by one role (or the main process); regexes from workers.md."""

    name: str
    role: str  # a key of ROLES, or MAIN
    patterns: tuple[str, ...]
    probe: Probe
    # How nginx spreads the class over its workers: per user (sticky sync), per source
    # address (inbound federation transactions), or round robin.
    balance: Literal["user", "ip", "round_robin"] = "round_robin"


_C = "(api/v1|r0|v3|unstable)"
_C3 = "(r0|v3|unstable)"

# In the order nginx must try them: the first matching regex of a map wins, so the more
# specific classes (media under /_matrix/federation, the stream writers' endpoints among
# the client API) come first. Anything unmatched goes to the main process.
ROUTES: tuple[RouteClass, ...] = (
    RouteClass("media", "media_repository", (
        "^/_matrix/media/", "^/_matrix/client/v1/media/", "^/_matrix/federation/v1/media/",
        "^/_synapse/media/",
    ), Probe("GET", "/_matrix/client/v1/media/config", auth=True)),
    RouteClass("typing", "stream_writer", (
        f"^/_matrix/client/{_C}/rooms/.*/typing",
    ), Probe("PUT", "/_matrix/client/v3/rooms/!probe:{server}/typing/@probe:{server}",
             auth=True)),
    RouteClass("to_device", "stream_writer", (
        f"^/_matrix/client/{_C3}/sendToDevice/",
    ), Probe("PUT", "/_matrix/client/v3/sendToDevice/m.probe/1", auth=True)),
    RouteClass("account_data", "stream_writer", (
        f"^/_matrix/client/{_C3}/.*/tags", f"^/_matrix/client/{_C3}/.*/account_data",
    ), Probe("GET", "/_matrix/client/v3/user/@probe:{server}/account_data/m.probe",
             auth=True)),
    RouteClass("receipts", "stream_writer", (
        f"^/_matrix/client/{_C3}/rooms/.*/receipt", f"^/_matrix/client/{_C3}/rooms/.*/read_markers",
    ), Probe("POST", "/_matrix/client/v3/rooms/!probe:{server}/read_markers", auth=True)),
    RouteClass("presence", "stream_writer", (
        f"^/_matrix/client/{_C}/presence/",
    ), Probe("GET", "/_matrix/client/v3/presence/@probe:{server}/status", auth=True)),
    RouteClass("push_rules", "stream_writer", (
        f"^/_matrix/client/{_C}/pushrules/",
    ), Probe("GET", "/_matrix/client/v3/pushrules/", auth=True)),
    RouteClass("sync", "sync", (
        "^/_matrix/client/(r0|v3)/sync$", "^/_matrix/client/(api/v1|r0|v3)/events$",
        "^/_matrix/client/(api/v1|r0|v3)/initialSync$",
        "^/_matrix/client/(api/v1|r0|v3)/rooms/[^/]+/initialSync$",
    ), Probe("GET", "/_matrix/client/v3/sync", auth=True), balance="user"),
    # The device_lists stream stays on the main process (its default writer): workers.md
    # asks its endpoints to go to that writer.
    RouteClass("device_lists", MAIN, (
        "^/_matrix/client/(r0|v3)/delete_devices$", f"^/_matrix/client/{_C}/devices(/|$)",
        f"^/_matrix/client/{_C3}/keys/upload", f"^/_matrix/client/{_C}/keys/device_signing/upload$",
        f"^/_matrix/client/{_C}/keys/signatures/upload$",
    ), Probe("POST", "/_matrix/client/v3/keys/upload", auth=True)),
    RouteClass("federation_transactions", "federation_inbound", (
        "^/_matrix/federation/v1/send/",
    ), Probe("PUT", "/_matrix/federation/v1/send/probe"), balance="ip"),
    RouteClass("federation", "federation_inbound", (
        "^/_matrix/federation/v1/version$", "^/_matrix/federation/v1/event/",
        "^/_matrix/federation/v1/state/", "^/_matrix/federation/v1/state_ids/",
        "^/_matrix/federation/v1/backfill/", "^/_matrix/federation/v1/get_missing_events/",
        "^/_matrix/federation/v1/publicRooms", "^/_matrix/federation/v1/query/",
        "^/_matrix/federation/v1/make_join/", "^/_matrix/federation/v1/make_leave/",
        "^/_matrix/federation/(v1|v2)/send_join/", "^/_matrix/federation/(v1|v2)/send_leave/",
        "^/_matrix/federation/v1/make_knock/", "^/_matrix/federation/v1/send_knock/",
        "^/_matrix/federation/(v1|v2)/invite/", "^/_matrix/federation/v1/event_auth/",
        "^/_matrix/federation/v1/timestamp_to_event/",
        "^/_matrix/federation/v1/exchange_third_party_invite/",
        "^/_matrix/federation/v1/user/devices/", "^/_matrix/key/v2/query",
        "^/_matrix/federation/v1/hierarchy/",
    ), Probe("GET", "/_matrix/federation/v1/version")),
    RouteClass("client", "client_reader", (
        f"^/_matrix/client/{_C}/createRoom$", f"^/_matrix/client/{_C}/publicRooms$",
        f"^/_matrix/client/{_C}/rooms/.*/joined_members$",
        f"^/_matrix/client/{_C}/rooms/.*/context/.*$", f"^/_matrix/client/{_C}/rooms/.*/members$",
        f"^/_matrix/client/{_C}/rooms/.*/state$", "^/_matrix/client/v1/rooms/.*/hierarchy$",
        "^/_matrix/client/(v1|unstable)/rooms/.*/relations/",
        "^/_matrix/client/v1/rooms/.*/threads$",
        f"^/_matrix/client/{_C3}/account/3pid$", f"^/_matrix/client/{_C3}/account/whoami$",
        f"^/_matrix/client/{_C3}/account/deactivate$",
        "^/_matrix/client/versions$",
        f"^/_matrix/client/{_C}/voip/turnServer$", f"^/_matrix/client/{_C}/rooms/.*/event/",
        f"^/_matrix/client/{_C}/joined_rooms$", "^/_matrix/client/v1/rooms/.*/timestamp_to_event$",
        f"^/_matrix/client/{_C}/search$", f"^/_matrix/client/{_C3}/user/.*/filter(/|$)",
        f"^/_matrix/client/{_C}/directory/room/.*$", f"^/_matrix/client/{_C3}/capabilities$",
        f"^/_matrix/client/{_C3}/notifications$",
        # Encryption (the device_lists endpoints above are the writer's).
        f"^/_matrix/client/{_C3}/keys/query$", f"^/_matrix/client/{_C3}/keys/changes$",
        f"^/_matrix/client/{_C3}/keys/claim$", f"^/_matrix/client/{_C3}/room_keys/",
        # Registration and login.
        f"^/_matrix/client/{_C}/login$", f"^/_matrix/client/{_C3}/register$",
        f"^/_matrix/client/{_C3}/register/available$",
        "^/_matrix/client/v1/register/m.login.registration_token/validity$",
        f"^/_matrix/client/{_C3}/password_policy$",
        # Event sending (an event creator; the persisters write them).
        f"^/_matrix/client/{_C}/rooms/.*/redact", f"^/_matrix/client/{_C}/rooms/.*/send",
        f"^/_matrix/client/{_C}/rooms/.*/state/",
        f"^/_matrix/client/{_C}/rooms/.*/(join|invite|leave|ban|unban|kick)$",
        f"^/_matrix/client/{_C}/join/", f"^/_matrix/client/{_C}/knock/",
        f"^/_matrix/client/{_C}/profile/", f"^/_matrix/client/{_C3}/user_directory/search$",
    ), Probe("GET", "/_matrix/client/versions")),
)
# What the main process keeps (everything unmatched); probed too.
MAIN_PROBE = RouteClass("main", MAIN, (), Probe("GET", "/_matrix/key/v2/server"))


def upstream_name(role: str) -> str:
    """The nginx upstream block of a role (``synapse_main`` for the main process)."""
    return f"synapse_{role}"


def serving(route: RouteClass, layout: WorkerLayout) -> list[str]:
    """The process names that may answer a route class under this layout."""
    names = [w.name for w in workers_of(layout) if w.role == route.role]
    return names or [MAIN]


def route_upstream(route: RouteClass, layout: WorkerLayout) -> str:
    """The upstream a class is sent to: its role's, or main's when the role has none."""
    if route.role == MAIN or not any(w.role == route.role for w in workers_of(layout)):
        return upstream_name(MAIN)
    return upstream_name(route.role) + ("_by_ip" if route.balance == "ip" else "")


# --- rendering ---------------------------------------------------------------------------


def _env() -> SandboxedEnvironment:
    # The loader serves {% include %} of the bundled worker templates (s3.yaml.j2).
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                               keep_trailing_newline=True,
                               loader=FunctionLoader(_template))
    env.filters["q"] = lambda v: json.dumps(str(v), ensure_ascii=False)
    return env


def _template(rel: str) -> str:
    return (assets_dir() / "stack-workers" / rel).read_text(encoding="utf-8")


def public_baseurl(v: StackValues, layout: WorkerLayout) -> str:
    """The https base URL clients use (the ALB's name, or the public address)."""
    return layout.public_baseurl or f"https://{v.public_address}/"


def _context(v: StackValues, layout: WorkerLayout,
             secrets: Mapping[str, str]) -> dict[str, Any]:
    workers = workers_of(layout)
    by_role: dict[str, list[Worker]] = {}
    for w in workers:
        by_role.setdefault(w.role, []).append(w)
    writers = [w.name for w in by_role.get("stream_writer", [])]
    # A stream without a worker is left out (its default writer is the main process).
    # Never "main" here: that is main's instance_map key, but its instance name is
    # "master" (synapse/config/workers.py), so main would send its own events to itself
    # over replication and fail (500 on createRoom, seen on the engine).
    stream_writers: dict[str, list[str]] = {}
    persisters = [w.name for w in by_role.get("event_persister", [])]
    if persisters:
        stream_writers["events"] = persisters
    if writers:
        for stream in STREAM_WRITER_STREAMS:
            stream_writers[stream] = writers
    instance_map: dict[str, dict[str, object]] = {
        MAIN: {"host": MAIN_HOST, "port": MAIN_REPLICATION_PORT}}
    for w in workers:
        if w.spec.replication:
            instance_map[w.name] = {"host": w.service, "port": w.replication_port}
    upstreams: dict[str, tuple[str, list[Worker]]] = {}
    for route in ROUTES:
        name = route_upstream(route, layout)
        if name != upstream_name(MAIN):
            upstreams[name] = (route.balance, by_role[route.role])
    return {
        "v": v, "l": layout, "s": dict(secrets), "workers": workers, "by_role": by_role,
        "instance_map": instance_map, "stream_writers": stream_writers,
        "routes": [(r, route_upstream(r, layout)) for r in ROUTES],
        "upstreams": upstreams, "main": MAIN, "main_host": MAIN_HOST,
        "main_http_port": MAIN_HTTP_PORT, "main_replication_port": MAIN_REPLICATION_PORT,
        "header": WORKER_HEADER, "baseurl": public_baseurl(v, layout),
        "redis_image": REDIS_IMAGE, "synapse_image": SYNAPSE_WORKERS_IMAGE,
        "redis_tls_files": REDIS_TLS_FILES, "s3_module": S3_PROVIDER_MODULE,
        "db_pool_max": DB_POOL_MAX,
    }


def worker_files(values: Mapping[str, Any] | StackValues, secrets: Mapping[str, str],
                 layout: WorkerLayout | Mapping[str, Any] | None = None) -> dict[str, str]:
    """The bundled stack's files as a worker deployment has them, keyed by path."""
    try:
        lay = layout if isinstance(layout, WorkerLayout) else WorkerLayout.model_validate(
            layout or {})
    except ValueError as e:
        raise RenderError(f"invalid worker layout: {e}") from e
    missing = [n for n in WORKER_SECRET_NAMES if not secrets.get(n)]
    if missing:
        raise RenderError(f"missing secrets: {', '.join(missing)}")
    files = render_files(values, secrets, lay.database())
    v = values if isinstance(values, StackValues) else StackValues.model_validate(values)
    for name in WORKER_SECRET_NAMES:
        if not all(c.isalnum() or c in "-_." for c in secrets[name]) or len(secrets[name]) < 16:
            raise RenderError(f"secret {name} must be >= 16 characters of [A-Za-z0-9._-]")
    env = _env()
    ctx = _context(v, lay, secrets)
    files["docker-compose.yml"] = env.from_string(_template("docker-compose.yml.j2")).render(ctx)
    files["nginx/default.conf"] = env.from_string(_template("nginx.conf.j2")).render(ctx)
    files["synapse/workers.yaml"] = env.from_string(_template("workers.yaml.j2")).render(ctx)
    worker_t = env.from_string(_template("worker.yaml.j2"))
    for w in ctx["workers"]:
        files[f"synapse/workers/{w.name}.yaml"] = worker_t.render({**ctx, "w": w})
    # Clients are sent to the https name: Element's config and the client well-known.
    base = ctx["baseurl"].rstrip("/")
    cfg = element_config(v)
    cfg["default_server_config"]["m.homeserver"]["base_url"] = base
    files["element/config.json"] = json.dumps(cfg, indent=2, ensure_ascii=False) + "\n"
    files["nginx/well-known/matrix/client"] = json.dumps(
        {"m.homeserver": {"base_url": base}}, indent=2) + "\n"
    if lay.redis_host == "redis":
        files["redis/redis.conf"] = env.from_string(_template("redis.conf.j2")).render(ctx)
    return files


def write_worker_stack(files: Mapping[str, str], out_dir: Path) -> Path:
    """Write a rendering of :func:`worker_files` into a fresh ``out_dir``; returns it.

    Secret files get mode 0600, scripts 0755, the rest 0644. ``out_dir`` must not exist
    or be empty: this never replaces anything (``stack.render`` owns re-rendering).
    """
    if out_dir.exists() and any(out_dir.iterdir()):
        raise RenderError(f"{out_dir} is not empty")
    for rel, text in sorted(files.items()):
        dest = out_dir / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")
        if rel in SECRET_FILES:
            mode = 0o600
        elif rel in EXECUTABLE_FILES:
            mode = 0o755
        else:
            mode = 0o644
        dest.chmod(mode)
    return out_dir
