"""The production runbook's synapse/render step, rendered as the runner renders it (the
step's ``with`` through the expression engine) and run through the real action: Synapse
gets ElastiCache's AUTH token over TLS, RDS as its database with the role's password, and
the data phase's media bucket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from elematrix_tui.actions import default_registry
from elematrix_tui.actions.stack_workers import RenderWorkers
from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.engine.expressions import render_value
from elematrix_tui.engine.loader import load_runbook
from elematrix_tui.engine.standalone import StandaloneContext

TOKEN = "Elasticache0Auth0Token0" + "x" * 25
BUCKET = "elematrix-prod-media-123456789012"
ENDPOINT = "master.em-prod-redis.abc123.euw1.cache.amazonaws.com"
RDS = "elematrix-prod.abc123.eu-west-1.rds.amazonaws.com"
DB_PASSWORD = "Synapse0Db0Password" + "y" * 13


def _render_inputs(**params: Any) -> dict[str, Any]:
    rb = load_runbook(runbooks_dir() / "production.yaml", default_registry())
    values = {p.name: p.default for p in rb.params}
    values.update({"domain": "matrix.example.com", "redis_auth_token": TOKEN,
                   "synapse_db_password": DB_PASSWORD, **params})
    return _step_with(rb, "render", values)


def _step_with(rb: Any, step_id: str, values: dict[str, Any]) -> dict[str, Any]:
    step = next(s for ph in rb.phases for s in ph.steps if s.id == step_id)
    out = render_value(step.with_, {"params": values, "deployment": "prod", "steps": {
        "media_bucket": {"bucket": BUCKET}, "preflight": {"region": "eu-west-1"},
        "redis_endpoint": {"address": ENDPOINT, "port": 6380},
        "database_endpoint": {"address": RDS, "port": 5432},
        "render": {"postgres_image": "postgres:15.8-bookworm", "db_connections": 90},
        "address": {"public_ip": "203.0.113.7"},
        "key_pair": {"private_key_path": "/k"}, "host_keys": {"fingerprints": ["SHA256:x"]}}})
    assert isinstance(out, dict)
    return out


def test_synapse_uses_rds_with_the_password_the_database_step_gave_its_role(
        tmp_path: Path) -> None:
    """One value for the role's password: what postgres.create_database sets (from the
    instance, in the pinned postgres image) is what Synapse presents, over TLS, to the
    endpoint the data phase read; and the stack has no PostgreSQL of its own."""
    inputs = _render_inputs()
    ctx = StandaloneContext(deployment_dir=tmp_path / "dep", deployment="prod")
    ctx.run(RenderWorkers(), inputs)
    out = ctx.deployment_dir / "stack"
    db = yaml.safe_load((out / "synapse/homeserver.yaml").read_text())["database"]["args"]
    assert (db["host"], db["port"], db["sslmode"], db["password"]) == (
        RDS, 5432, "require", DB_PASSWORD)
    assert "postgres" not in yaml.safe_load((out / "docker-compose.yml").read_text())[
        "services"]
    rb = load_runbook(runbooks_dir() / "production.yaml", default_registry())
    values = {p.name: p.default for p in rb.params}
    values.update({"domain": "matrix.example.com", "synapse_db_password": DB_PASSWORD,
                   "db_admin_password": "A" * 24})
    create = _step_with(rb, "synapse_database_from_instance", values)
    assert (create["db_host"], create["db_port"], create["owner"], create["owner_password"],
            create["database"]) == (RDS, 5432, "synapse", DB_PASSWORD, "synapse")
    assert create["psql_image"] == "postgres:15.8-bookworm" and create["sudo"] is True
    assert create["need_connections"] == 90
    assert RenderWorkers().extra_outputs(RenderWorkers.Inputs.model_validate(inputs)) == {
        "db_connections": 90}  # main + the default layout's 8 workers, 10 each
    assert create["host"] == "203.0.113.7"
    # The data phase's variant (db_admin_host) reads the same shared fields.
    admin = _step_with(rb, "synapse_database", {**values, "db_admin_host": "local"})
    assert {k: admin[k] for k in ("db_host", "owner", "owner_password", "sslmode")} == {
        k: create[k] for k in ("db_host", "owner", "owner_password", "sslmode")}


def test_elasticache_gets_its_auth_token_over_tls_and_media_its_bucket(tmp_path: Path) -> None:
    inputs = _render_inputs(redis_host="master.em-prod-redis.abc123.euw1.cache.amazonaws.com")
    ctx = StandaloneContext(deployment_dir=tmp_path / "dep", deployment="prod")
    ctx.run(RenderWorkers(), inputs)
    out = ctx.deployment_dir / "stack"
    redis = yaml.safe_load((out / "synapse/workers.yaml").read_text())["redis"]
    assert redis["password"] == TOKEN and redis["use_tls"] is True
    assert redis["host"].endswith(".cache.amazonaws.com")
    media = yaml.safe_load((out / "synapse/workers/media1.yaml").read_text())
    assert media["media_storage_providers"][0]["config"] == {"bucket": BUCKET,
                                                             "region_name": "eu-west-1"}


def test_by_default_synapse_uses_the_elasticache_group_the_data_phase_made(
        tmp_path: Path) -> None:
    """The default was redis_host 'redis' with redis_tls on: a TLS-only local Redis whose
    certificate no step makes. Now empty means the data phase's endpoint and port."""
    inputs = _render_inputs()
    assert inputs["layout"]["redis_host"] == ENDPOINT and inputs["layout"]["redis_port"] == 6380
    ctx = StandaloneContext(deployment_dir=tmp_path / "dep", deployment="prod")
    ctx.run(RenderWorkers(), inputs)
    out = ctx.deployment_dir / "stack"
    redis = yaml.safe_load((out / "synapse/workers.yaml").read_text())["redis"]
    assert (redis["host"], redis["port"], redis["use_tls"], redis["password"]) == (
        ENDPOINT, 6380, True, TOKEN)
    # No Redis container on the instance when ElastiCache serves.
    compose = yaml.safe_load((out / "docker-compose.yml").read_text())
    assert "redis" not in compose["services"]


def test_the_local_redis_container_keeps_its_generated_password(tmp_path: Path) -> None:
    inputs = _render_inputs(redis_host="redis", redis_tls=False)
    assert inputs["redis_auth_token"] == ""
    ctx = StandaloneContext(deployment_dir=tmp_path / "dep", deployment="prod")
    ctx.run(RenderWorkers(), inputs)
    redis = yaml.safe_load((ctx.deployment_dir / "stack/synapse/workers.yaml").read_text())
    assert redis["redis"]["password"] == ctx.secrets["redis_password"] != TOKEN
