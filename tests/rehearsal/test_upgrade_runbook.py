"""The upgrade runbook on the rehearsal: one upgrade that passes, one that rolls back.

The same parts as tests/rehearsal/test_rehearsal.py (a moto server on 127.0.0.1 reached by
the real `elematrix` command, the FakeInstance's real sshd, the real Docker engine with the
stack; the instance holds stack_lock() while it runs). One deployment serves both
upgrades (CI time): poc-ec2's infra, configure and deploy phases run once.

No registry answers here, so the "new" images are local ones (docs/day-two.md says what
that proves):
- element and nginx: the other locally built releases (vectorim/element-web:v1.11.85,
  nginx:1.27.3-alpine; scripts/build_images.py builds them from the same contexts);
- Synapse: ``elematrix-day-two/synapse:v1.163.2-same-schema``, the pinned image with one
  label (tests/rehearsal/images/synapse-same-schema): another image id and tag with the same
  Synapse, so the same database schema: the upgrade's mechanics, not a schema migration;
- the failing upgrade: ``elematrix-day-two/synapse:v1.163.2-refuses-to-start``, the pinned
  image whose real Synapse raises ConfigError at start (tests/rehearsal/images/
  synapse-refuses): "Error in configuration", exit 1, restarted by compose, /health never
  answers, as a release that rejects the deployment's homeserver.yaml does.

First upgrade: every gate passes, the host runs the new images, a backup and an EBS snapshot
(moto) were taken first. Second upgrade: Synapse's restart fails, the rollback puts the
first upgrade's images back (the schema did not move: no database restore) and passes the
gates again; the run exits 1 (the upgrade did not happen) and the report says so.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.stack.values import IMAGES
from tests.rehearsal.instance import FakeInstance
from tests.rehearsal.test_rehearsal import _env, _params, _report
from tests.support.docker import builder

# The instance fixture may wait for stack_lock() (another stack on the engine) before the
# deploy even starts: more than the suite's default 300 s in all.
pytestmark = pytest.mark.timeout(1200)

DEPLOY = runbooks_dir() / "poc-ec2.yaml"
UPGRADE = runbooks_dir() / "upgrade.yaml"
IMAGES_DIR = Path(__file__).parent / "images"
SAME_SCHEMA = "elematrix-day-two/synapse:v1.163.2-same-schema"
REFUSES = "elematrix-day-two/synapse:v1.163.2-refuses-to-start"
OLDER = {"element": "vectorim/element-web:v1.11.85", "nginx": "nginx:1.27.3-alpine"}


def build_test_images() -> None:
    """The two Synapse test images (FROM the pinned one: seconds) and the older releases."""
    builder().ensure_images(images={**IMAGES, **OLDER})
    for ref, ctx in ((SAME_SCHEMA, "synapse-same-schema"), (REFUSES, "synapse-refuses")):
        subprocess.run(["docker", "build", "-q", "-t", ref, "--build-arg",
                        f"BASE={IMAGES['synapse']}", str(IMAGES_DIR / ctx)],
                       check=True, capture_output=True, timeout=600)


def _running(inst: FakeInstance) -> dict[str, str]:
    out = inst.compose("ps", "--format", "{{.Service}} {{.Image}}").stdout
    return dict(line.split(None, 1) for line in out.splitlines() if line.strip())


def _upgrade(elematrix: str, env: dict[str, str], images: dict[str, str]
             ) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    res = subprocess.run(
        [elematrix, "run", str(UPGRADE), "--deployment", "rehearsal", "--yes",
         "--set", "images=" + ",".join(f"{k}={v}" for k, v in images.items())],
        env=env, capture_output=True, text=True, timeout=1200)
    return res, time.monotonic() - started


def _steps(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["step"]: s for s in report["steps"]}


def test_upgrade_passes_then_a_failed_one_rolls_back(elematrix: str, instance: FakeInstance,
                                                     aws_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    build_test_images()
    env = _env(aws_env)
    deploy = subprocess.run(
        [elematrix, "run", str(DEPLOY), "--deployment", "rehearsal", "--yes", "--quiet",
         "--phase", "infra", "--phase", "configure", "--phase", "deploy",
         *_params(instance, tmp_path)], env=env, capture_output=True, text=True, timeout=900)
    assert deploy.returncode == 0, deploy.stdout[-6000:] + deploy.stderr[-3000:]
    assert _running(instance) == IMAGES

    # The plan shows each image old -> new and changes nothing.
    new = {**OLDER, "synapse": SAME_SCHEMA}
    plan = subprocess.run([elematrix, "plan", str(UPGRADE), "--deployment", "rehearsal",
                           "--set", "images=" + ",".join(f"{k}={v}" for k, v in new.items())],
                          env=env, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stdout[-4000:] + plan.stderr[-2000:]
    for key, ref in new.items():
        assert f"{key}: {IMAGES[key]} -> {ref}" in plan.stdout, plan.stdout[:6000]
    assert _running(instance) == IMAGES

    time.sleep(1.1)  # backup prefixes have one-second resolution
    ok, ok_wall = _upgrade(elematrix, env, new)
    assert ok.returncode == 0, ok.stdout[-8000:] + ok.stderr[-3000:]
    assert _running(instance) == {**IMAGES, **new}
    report = _report(elematrix, env, "rehearsal")
    assert report["runbook"] == "upgrade"
    gates = {g["gate_id"]: g["passed"] for g in report["gates"]}
    assert gates == {"synapse_health": True, "admin_login": True, "canary_intact": True,
                     "e2ee": True}, gates
    steps = _steps(report)
    assert steps["upgrade_snapshot"]["outputs"]["snapshot_id"].startswith("snap-")
    assert steps["pre_upgrade"]["outputs"]["prefix"].startswith("rehearsal/")
    assert steps["upgrade_schema"]["outputs"]["schema_moves"] is False
    assert "upgrade_rollback" not in steps

    import boto3

    ec2 = boto3.client("ec2", endpoint_url=aws_env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                       aws_access_key_id="x", aws_secret_access_key="x")
    snaps = ec2.describe_snapshots(Filters=[{"Name": "tag:elematrix:deployment",
                                             "Values": ["rehearsal"]}])["Snapshots"]
    assert [s["SnapshotId"] for s in snaps] == [steps["upgrade_snapshot"]["outputs"][
        "snapshot_id"]]

    # The failing upgrade: Synapse refuses to start on its new image.
    time.sleep(1.1)
    bad, bad_wall = _upgrade(elematrix, env, {**new, "synapse": REFUSES})
    assert bad.returncode == 1, bad.stdout[-8000:] + bad.stderr[-3000:]
    report = _report(elematrix, env, "rehearsal")
    steps = _steps(report)
    assert steps["upgrade_synapse"]["status"] == "failed", steps["upgrade_synapse"]
    rollback = steps["upgrade_rollback"]
    assert rollback["status"] in ("ok", "changed"), rollback
    assert rollback["outputs"]["proven"] == ["synapse_health", "admin_login", "canary_intact",
                                             "e2ee"]
    assert rollback["outputs"]["db_restored"] is False
    assert _running(instance) == {**IMAGES, **new}
    health = instance.compose("exec", "-T", "synapse", "curl", "-fsS",
                              "http://localhost:8008/health")
    assert health.stdout.strip() == "OK"
    print(f"upgrade: passed in {ok_wall:.1f} s; failed and rolled back in {bad_wall:.1f} s "
          f"(rollback_s {rollback['outputs']['rollback_s']})")
