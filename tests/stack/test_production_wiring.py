"""The production runbook's synapse/render step, rendered as the runner renders it (the
step's ``with`` through the expression engine) and run through the real action: Synapse
gets ElastiCache's AUTH token over TLS, and the data phase's media bucket."""

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


def _render_inputs(**params: Any) -> dict[str, Any]:
    rb = load_runbook(runbooks_dir() / "production.yaml", default_registry())
    values = {p.name: p.default for p in rb.params}
    values.update({"domain": "matrix.example.com", "redis_auth_token": TOKEN, **params})
    step = next(s for ph in rb.phases if ph.id == "synapse" for s in ph.steps
                if s.id == "render")
    out = render_value(step.with_, {"params": values, "deployment": "prod", "steps": {
        "media_bucket": {"bucket": BUCKET}, "preflight": {"region": "eu-west-1"},
        "redis_endpoint": {"address": ENDPOINT, "port": 6380}}})
    assert isinstance(out, dict)
    return out


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
