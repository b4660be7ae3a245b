"""What the real engine found (issue 11), each pinned on the rendered stack so a template
change cannot quietly undo it; the rehearsal on the engine is the end-to-end proof."""

from __future__ import annotations

from pathlib import Path

import yaml

from elematrix_tui.stack.render import render_stack
from tests.stack.conftest import PARAM_SETS, SECRETS


def _compose(tmp_path: Path) -> dict:  # type: ignore[type-arg]
    res = render_stack(PARAM_SETS["default"], SECRETS, tmp_path / "stack")
    return yaml.safe_load((res.path / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def test_synapse_data_volume_is_chowned_before_start_py(tmp_path: Path) -> None:
    """Named volumes start root-owned and matrixdotorg/synapse's start.py does not chown in
    run mode (docker/start.py: only `generate` and `migrate_config` do), so Synapse (uid 991)
    could not write its signing key to /data: the entrypoint must chown it first."""
    svc = _compose(tmp_path)["services"]["synapse"]
    volumes = {v.split(":")[1]: v.split(":")[0] for v in svc["volumes"]}
    assert volumes["/data"] == "synapse-data" and volumes["/media_store"] == "synapse-media"
    entry = svc["entrypoint"]
    assert entry[:2] == ["/bin/sh", "-c"]
    assert entry[2] == "chown 991:991 /data /media_store && exec /start.py"


def _seconds(d: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    num = d.rstrip("mshd")
    return float(num) * units[d[len(num):]]


def test_the_web_tier_is_healthy_soon_after_synapse(tmp_path: Path) -> None:
    """Docker runs a container's first healthcheck one `interval` after it starts
    (start_period only forgives failures; start_interval needs Engine 25 / API 1.44, not
    what AL2023 or this machine's 20.10 guarantee), and `depends_on: service_healthy` starts
    a dependent only then. With 30 s on element and nginx, `up -d --wait` of the web tier
    took 62.7 s on the real engine, waiting on nothing. The chain of first checks along
    depends_on must stay short."""
    services = _compose(tmp_path)["services"]

    def ready_after(name: str) -> float:
        svc = services[name]
        deps = [d for d, c in (svc.get("depends_on") or {}).items()
                if c.get("condition") == "service_healthy"]
        return max((ready_after(d) for d in deps), default=0.0) + _seconds(
            svc["healthcheck"]["interval"])

    assert ready_after("nginx") <= 40, {n: ready_after(n) for n in services}
