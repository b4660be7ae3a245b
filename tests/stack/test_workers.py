"""The worker layout generator: the route table, the shared config and the files it renders.

No engine here (tests/docker/test_workers_on_engine.py runs the rendering for real): the
map is checked with Python's regexes in nginx's first-match order, the Synapse config with
the same rules Synapse's own synapse/config/workers.py applies at start.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest
import yaml

from elematrix_tui.stack.render import RenderError
from elematrix_tui.stack.values import SECRET_NAMES
from elematrix_tui.stack.workers import (
    MAIN,
    MAIN_PROBE,
    ROUTES,
    WORKER_SECRET_NAMES,
    WorkerLayout,
    serving,
    worker_files,
    workers_of,
)

SECRETS = {n: secrets.token_urlsafe(24).replace("-", "x")
           for n in (*SECRET_NAMES, *WORKER_SECRET_NAMES)}
VALUES = {"server_name": "prod.test", "public_address": "matrix.prod.test", "federation": True}


def _nginx_class(conf: str, path: str) -> str:
    """The route class nginx's `map $uri $elematrix_route` gives a path (first match)."""
    block = conf.split("map $uri $elematrix_route {", 1)[1].split("}", 1)[0]
    for line in block.strip().splitlines():
        m = re.fullmatch(r'\s*"~(.+)" (\w+);', line)
        if m and re.search(m.group(1), path):
            return m.group(2)
    return "main"


def test_each_probe_lands_in_its_own_class_of_the_generated_map() -> None:
    conf = worker_files(VALUES, SECRETS)["nginx/default.conf"]
    for route in (*ROUTES, MAIN_PROBE):
        path = route.probe.path.format(server="prod.test")
        assert _nginx_class(conf, path) == route.name, path


def test_shared_config_satisfies_synapse_writer_rules() -> None:
    files = worker_files(VALUES, SECRETS)
    shared = yaml.safe_load(files["synapse/workers.yaml"])
    names = {w.name for w in workers_of(WorkerLayout())}
    for stream, writers in shared["stream_writers"].items():
        for w in writers:
            assert w != MAIN and w in shared["instance_map"], (stream, w)
        if stream in ("typing", "to_device", "account_data", "presence", "push_rules"):
            assert len(writers) == 1
    assert shared["stream_writers"]["events"] == ["persister1"]
    assert shared["federation_sender_instances"] == ["fedsend1"]
    assert shared["enable_media_repo"] is False
    assert shared["redis"]["password"] == SECRETS["redis_password"]
    for name in names:
        cfg = yaml.safe_load(files[f"synapse/workers/{name}.yaml"])
        assert cfg["worker_name"] == name
    compose = yaml.safe_load(files["docker-compose.yml"])
    assert {f"synapse-{n}" for n in names} <= set(compose["services"])
    assert "redis" in compose["services"]


def test_a_role_without_workers_falls_back_to_main() -> None:
    layout = WorkerLayout(sync=0, stream_writer=0, media_repository=0, event_persister=0)
    files = worker_files(VALUES, SECRETS, layout)
    shared = yaml.safe_load(files["synapse/workers.yaml"])
    # Left to Synapse's default (the main process, whose instance name is "master"):
    # naming "main" made main send its events to itself over replication (500, seen).
    assert "stream_writers" not in shared
    assert "enable_media_repo" not in shared
    sync = next(r for r in ROUTES if r.name == "sync")
    assert serving(sync, layout) == [MAIN]
    assert "upstream synapse_sync" not in files["nginx/default.conf"]


def test_sync_is_sticky_per_user() -> None:
    conf = worker_files(VALUES, SECRETS)["nginx/default.conf"]
    block = conf.split("upstream synapse_sync {", 1)[1].split("}", 1)[0]
    assert "hash $elematrix_user consistent;" in block
    assert block.count("server ") == 2


@pytest.mark.parametrize("bad", [{"sync": -1}, {"stream_writer": 2}, {"nope": 1},
                                 {"trusted_proxies": ["x"]}, {"public_baseurl": "http://a/"}])
def test_bad_layout_is_a_render_error(bad: dict[str, object]) -> None:
    with pytest.raises(RenderError, match="invalid worker layout"):
        worker_files(VALUES, SECRETS, bad)


def test_missing_worker_secret_is_refused() -> None:
    with pytest.raises(RenderError, match="redis_password"):
        worker_files(VALUES, {k: v for k, v in SECRETS.items() if k != "redis_password"})


def test_render_workers_action_generates_secrets_and_is_idempotent(tmp_path: Path) -> None:
    import stat

    from elematrix_tui.actions.stack_workers import RenderWorkers
    from elematrix_tui.engine.standalone import StandaloneContext

    ctx = StandaloneContext(deployment_dir=tmp_path / "dep", deployment="prod")
    inputs = {**VALUES, "layout": {"sync": 3}}
    res = ctx.run(RenderWorkers(), inputs)
    assert res.status == "changed"
    assert set(ctx.secrets) == {*SECRET_NAMES, *WORKER_SECRET_NAMES}
    out = ctx.deployment_dir / "stack"
    assert (out / "synapse/workers/sync3.yaml").is_file()
    for rel in ("synapse/workers.yaml", "redis/redis.conf", "synapse/homeserver.yaml"):
        assert stat.S_IMODE((out / rel).stat().st_mode) == 0o600, rel
    logged = "\n".join(line for _s, line in ctx.logs)
    for value in ctx.secrets.values():
        assert value not in logged, "secrets never reach the log (the diff is masked)"
    assert ctx.check(RenderWorkers(), inputs).in_sync is True
    assert ctx.run(RenderWorkers(), inputs).status == "ok"
    # A layout change is a reviewed diff of the map and the compose file.
    chk = ctx.check(RenderWorkers(), {**VALUES, "layout": {"sync": 2}})
    assert "update nginx/default.conf" in chk.changes
    assert "update docker-compose.yml" in chk.changes


def test_redis_tls_renders_a_tls_only_server_and_synapse_uses_it() -> None:
    layout = WorkerLayout(redis_tls=True, redis_ca_file="/config/tls/redis-ca.pem")
    files = worker_files(VALUES, SECRETS, layout)
    conf = files["redis/redis.conf"].splitlines()
    # ElastiCache with in-transit encryption has no plaintext port: neither has the stand-in.
    assert "port 0" in conf and "tls-port 6379" in conf
    assert "tls-cert-file /usr/local/etc/redis/tls/server.crt" in conf
    redis = yaml.safe_load(files["synapse/workers.yaml"])["redis"]
    assert redis["use_tls"] is True and redis["ca_file"] == "/config/tls/redis-ca.pem"
    svc = yaml.safe_load(files["docker-compose.yml"])["services"]["redis"]
    assert "./redis/tls:/usr/local/etc/redis/tls:ro" in svc["volumes"]
    assert "--tls" in svc["healthcheck"]["test"][1]
    plain = worker_files(VALUES, SECRETS)["redis/redis.conf"].splitlines()
    assert "port 6379" in plain and not any(x.startswith("tls-") for x in plain)


def test_redis_ca_file_must_be_under_config() -> None:
    with pytest.raises(RenderError, match="redis_ca_file"):
        worker_files(VALUES, SECRETS, {"redis_ca_file": "/etc/ca.pem"})


def test_elasticache_auth_token_is_synapses_redis_password(tmp_path: Path) -> None:
    """The token ElastiCache was created with (a runbook secret) is the one Synapse
    presents; before, Synapse had the keyring's generated redis_password: AUTH failed."""
    from elematrix_tui.actions.stack_workers import RenderWorkers
    from elematrix_tui.engine.standalone import StandaloneContext

    token = "Tok3n" + secrets.token_hex(20)
    ctx = StandaloneContext(deployment_dir=tmp_path / "dep", deployment="prod")
    inputs = {**VALUES, "redis_auth_token": token,
              "layout": {"redis_host": "em-prod-redis.abc.use1.cache.amazonaws.com",
                         "redis_tls": True}}
    ctx.run(RenderWorkers(), inputs)
    out = ctx.deployment_dir / "stack"
    shared = yaml.safe_load((out / "synapse/workers.yaml").read_text())
    assert shared["redis"]["password"] == token and shared["redis"]["use_tls"] is True
    assert not (out / "redis").exists()  # no local Redis with an external one
    assert token not in "\n".join(line for _s, line in ctx.logs)
    assert ctx.check(RenderWorkers(), inputs).in_sync is True


RDS = "elematrix-prod.c1x2y3.us-east-1.rds.amazonaws.com"


def test_rds_is_synapses_database_and_the_stack_has_no_postgres(tmp_path: Path) -> None:
    """With db_host naming RDS's endpoint, every Synapse process reads a database: block
    for it over TLS with the password postgres.create_database gave the role (one value:
    the runbook's synapse_db_password); no PostgreSQL container, volume, env file or
    restore.sh is rendered, and backup.sh leaves the database to RDS's backups."""
    from elematrix_tui.actions.stack_workers import RenderWorkers
    from elematrix_tui.engine.standalone import StandaloneContext

    password = "Pw" + secrets.token_hex(16)
    ctx = StandaloneContext(deployment_dir=tmp_path / "dep", deployment="prod")
    inputs = {**VALUES, "db_password": password,
              "layout": {"db_host": RDS, "db_port": 5432, "db_sslmode": "require"}}
    res = ctx.run(RenderWorkers(), inputs)
    out = ctx.deployment_dir / "stack"
    db = yaml.safe_load((out / "synapse/homeserver.yaml").read_text())["database"]["args"]
    assert (db["host"], db["port"], db["sslmode"], db["password"], db["dbname"], db["user"]) \
        == (RDS, 5432, "require", password, "synapse", "synapse")
    assert "database" not in yaml.safe_load((out / "synapse/workers.yaml").read_text())
    compose = yaml.safe_load((out / "docker-compose.yml").read_text())
    assert "postgres" not in compose["services"] and "postgres-data" not in compose["volumes"]
    for name, svc in compose["services"].items():
        assert "postgres" not in (svc.get("depends_on") or {}), name
    assert not (out / "postgres.env").exists() and not (out / "restore.sh").exists()
    backup = (out / "backup.sh").read_text()
    assert "pg_dump -U" not in backup and f"database on {RDS}" in backup
    assert password not in "\n".join(line for _s, line in ctx.logs)
    assert res.outputs["postgres_image"].startswith("postgres:")
    assert ctx.check(RenderWorkers(), inputs).in_sync is True
    # The default (the container) is the rendering it always was: host postgres, no sslmode.
    local = yaml.safe_load(worker_files(VALUES, SECRETS)["synapse/homeserver.yaml"])
    assert local["database"]["args"]["host"] == "postgres"
    assert "sslmode" not in local["database"]["args"]


@pytest.mark.parametrize("bad", [{"db_host": "rds; rm -rf /"}, {"db_sslmode": "verify-full"},
                                 {"db_port": 0}])
def test_bad_database_settings_are_render_errors(bad: dict[str, object]) -> None:
    with pytest.raises(RenderError, match="invalid worker layout"):
        worker_files(VALUES, SECRETS, bad)


def test_federation_delegates_on_443_through_synapse() -> None:
    files = worker_files(VALUES, SECRETS)
    assert yaml.safe_load(files["synapse/workers.yaml"])["serve_server_wellknown"] is True
    conf = files["nginx/default.conf"]
    block = conf.split("location = /.well-known/matrix/server {", 1)[1].split("}", 1)[0]
    assert "proxy_pass http://synapse_main;" in block
    off = worker_files({**VALUES, "federation": False}, SECRETS)
    assert "serve_server_wellknown" not in off["synapse/workers.yaml"]
    assert "/.well-known/matrix/server" not in off["nginx/default.conf"]


def test_s3_media_is_configured_on_the_media_worker_without_keys() -> None:
    from elematrix_tui.stack.workers import S3_PROVIDER_MODULE

    layout = {"media_bucket": "elematrix-prod-media-123456789012", "media_region": "eu-west-1"}
    files = worker_files(VALUES, SECRETS, layout)
    media = yaml.safe_load(files["synapse/workers/media1.yaml"])
    (prov,) = media["media_storage_providers"]
    assert prov["module"] == S3_PROVIDER_MODULE
    assert prov["store_local"] and prov["store_remote"] and prov["store_synchronous"]
    assert prov["config"] == {"bucket": "elematrix-prod-media-123456789012",
                              "region_name": "eu-west-1"}  # no keys: the instance role
    assert "media_storage_providers" not in yaml.safe_load(files["synapse/workers.yaml"])
    # Without a media worker, the main process (which then runs the media repo) has it.
    main = yaml.safe_load(worker_files(VALUES, SECRETS, {**layout, "media_repository": 0})
                          ["synapse/workers.yaml"])
    assert main["media_storage_providers"][0]["config"]["bucket"] == layout["media_bucket"]
    off = worker_files(VALUES, SECRETS)
    assert "media_storage_providers" not in off["synapse/workers/media1.yaml"]


@pytest.mark.parametrize("bad", [{"media_bucket": "Bad_Bucket"}, {"media_region": "mars"}])
def test_bad_media_settings_are_render_errors(bad: dict[str, object]) -> None:
    with pytest.raises(RenderError, match="invalid worker layout"):
        worker_files(VALUES, SECRETS, bad)
