"""The restore runbook on the rehearsal: deploy, back up, change, restore, the change gone.

The same parts as tests/rehearsal/test_rehearsal.py (a moto server on 127.0.0.1 reached by
the real `elematrix` command, the FakeInstance's real sshd, the real Docker engine with the
stack; the instance holds stack_lock() while it runs). poc-ec2's infra, configure and
deploy phases run first (deploy ends with backup.sh's first backup into moto's S3). Then a
change is planted after that backup, in the database and in the media store; the restore
runbook lists the backups, picks the latest, restores it with the host's restore.sh, and
its gates (Synapse healthy, the admin logs in, the canary, two-user E2EE) pass; the change
is gone. The canary (poc-ec2's deploy step, before the first backup) is proven back: both
its users log in, its event, its media byte-identical (the media store was emptied after
the backup) and a thumbnail, the same signing key.
RPO and RTO are step outputs of the run's report, and printed.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from elematrix_tui.bundled import runbooks_dir
from tests.rehearsal.instance import FakeInstance
from tests.rehearsal.test_rehearsal import _env, _params, _report

# The instance fixture may wait for stack_lock() (another stack on the engine) before the
# deploy even starts: more than the suite's default 300 s in all.
pytestmark = pytest.mark.timeout(1200)

DEPLOY = runbooks_dir() / "poc-ec2.yaml"
RESTORE = runbooks_dir() / "restore.yaml"
PLANTED = "planted_after_backup"


def _psql(inst: FakeInstance, sql: str) -> str:
    return inst.compose("exec", "-T", "postgres", "psql", "-U", "synapse", "-d", "synapse",
                        "-tAc", sql).stdout.strip()


def test_restore_runbook_brings_the_backup_back(elematrix: str, instance: FakeInstance,
                                                aws_env: dict[str, str],
                                                tmp_path: Path) -> None:
    env = _env(aws_env)
    deploy = subprocess.run(
        [elematrix, "run", str(DEPLOY), "--deployment", "rehearsal", "--yes", "--quiet",
         "--phase", "infra", "--phase", "configure", "--phase", "deploy",
         *_params(instance, tmp_path)], env=env, capture_output=True, text=True, timeout=900)
    assert deploy.returncode == 0, deploy.stdout[-6000:] + deploy.stderr[-3000:]

    # After the backup: a table in Synapse's database and a file in its media store.
    time.sleep(1.1)  # backup prefixes have one-second resolution
    assert instance.compose("exec", "-T", "postgres", "psql", "-U", "synapse", "-d", "synapse",
                            "-c", f"CREATE TABLE {PLANTED} (x int)").returncode == 0
    assert instance.compose("exec", "-T", "-u", "0", "synapse", "sh", "-c",
                            f"echo planted > /media_store/{PLANTED}").returncode == 0
    assert _psql(instance, f"SELECT to_regclass('{PLANTED}') IS NOT NULL") == "t"
    # And the canary's media and thumbnails lost: the restore must bring them back.
    assert instance.compose("exec", "-T", "-u", "0", "synapse", "sh", "-c",
                            "rm -rf /media_store/local_content /media_store/local_thumbnails"
                            ).returncode == 0

    started = time.monotonic()
    res = subprocess.run([elematrix, "run", str(RESTORE), "--deployment", "rehearsal", "--yes"],
                         env=env, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - started
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]

    report = _report(elematrix, env, "rehearsal")
    assert report["runbook"] == "restore", report.get("runbook")
    gates = {g["gate_id"]: g["passed"] for g in report["gates"]}
    assert gates == {"synapse_health": True, "admin_login": True, "canary_back": True,
                     "e2ee": True}, gates
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["canary_back"]["outputs"]["proven"] == [
        "both users log in", "event", "media byte-identical", "thumbnail", "same signing key"]
    out = steps["report"]["outputs"]
    assert out["backup"].startswith("rehearsal/") and out["backup"] == steps["choose"][
        "outputs"]["prefix"]
    assert 0 < float(out["rpo_s"]) < 3600 and 0 < float(out["rto_s"]) < wall

    # The change made after the backup is gone; the stack is the backup's.
    assert _psql(instance, f"SELECT to_regclass('{PLANTED}') IS NULL") == "t"
    gone = instance.compose("exec", "-T", "synapse", "test", "-e", f"/media_store/{PLANTED}")
    assert gone.returncode == 1
    print(f"restore: rpo {out['rpo_s']} s, rto {float(out['rto_s']):.1f} s, "
          f"runbook {wall:.1f} s")
