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

Then, on the same deployment, the restore drill (``--set drill=true``, elematrix_tui/drill.py):
a second FakeInstance on another 127.x address (its sshd, its compose project, its stack on
other host ports: Synapse's admin API and nginx; this test holds stack_lock() for both, so
the second one takes no lock), moto's next Elastic IP and console output pointing at it.
The drill deploys ``rehearsal-drill``, copies the latest backup server-side into its
bucket, restores it with every gate (the source's canary), tears it down (moto: nothing
tagged with it is left, its keyring entries are gone) and prints RPO and RTO; the source's
journal, state directory, AWS resources and backups are unchanged.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.engine.secrets import SecretStore
from tests.aws.helpers import count_tagged
from tests.rehearsal.conftest import pick_address
from tests.rehearsal.instance import FakeInstance, moto_points_at
from tests.rehearsal.test_rehearsal import _env, _params, _report
from tests.support.moto_session import MotoSession

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

    _drill(elematrix, env, instance, aws_env, tmp_path)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _source_view(elematrix: str, env: dict[str, str], aws: MotoSession,
                 state_dir: Path) -> dict[str, Any]:
    from elematrix_tui.drill import source_fingerprint

    s3 = aws.client("s3")
    bucket = next(b["Name"] for b in s3.list_buckets()["Buckets"]
                  if b["Name"].startswith("elematrix-rehearsal-")
                  and not b["Name"].startswith("elematrix-rehearsal-drill-"))
    runs = subprocess.run([elematrix, "runs", "--deployment", "rehearsal"], env=env,
                          capture_output=True, text=True, check=True).stdout
    return {"tagged": count_tagged(aws, "rehearsal"), "runs": runs,
            "backups": sorted((o["Key"], o["ETag"]) for o in
                              s3.list_objects_v2(Bucket=bucket).get("Contents", [])),
            "state": source_fingerprint(state_dir, "rehearsal")}


def _drill(elematrix: str, env: dict[str, str], source: FakeInstance,
           aws_env: dict[str, str], tmp_path: Path) -> None:
    from elematrix_tui.engine.paths import state_dir as state_dir_of

    aws = MotoSession(aws_env["AWS_ENDPOINT_URL"], aws_env)
    state_dir = state_dir_of()
    before = _source_view(elematrix, env, aws, state_dir)
    assert before["tagged"]["instance"] == 1
    # The second instance: this test already holds stack_lock() (the source's instance).
    drill = FakeInstance(pick_address(), tmp_path / "drill-instance", aws_env=aws_env,
                         unit_dir=tmp_path / "drill-systemd", hold_lock=False)
    assert drill.project != source.project
    overrides = {
        # The drill's own host: its login, its key, its directories, its host ports.
        "ssh_public_key_path": f"{drill.key_path}.pub",
        "ssh_private_key_path": str(drill.key_path),
        "ssh_user": drill.user,
        "remote_dir": str(tmp_path / "drill-opt" / "elematrix"),
        "systemd_dir": str(drill.unit_dir),
        "http_port": str(_free_port("0.0.0.0")),
        "admin_port": str(_free_port("127.0.0.1")),
    }
    started = time.monotonic()
    with drill, moto_points_at(drill):
        overrides["ssh_port"] = str(drill.port)
        res = subprocess.run(
            [elematrix, "run", "restore", "--deployment", "rehearsal", "--set", "drill=true",
             "--yes", "--quiet", *[x for k, v in overrides.items() for x in ("--set", f"{k}={v}")]],
            env=env, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - started
    assert res.returncode == 0, res.stdout[-8000:] + res.stderr[-3000:]
    out = res.stdout
    assert "drill: deploy passed restore passed teardown passed" in out, out[-3000:]
    assert "drill: source rehearsal: unchanged" in out, out[-3000:]
    m = re.search(r"drill: backup (rehearsal/\S+): RPO (\d+) s, RTO ([\d.]+) s", out)
    assert m, out[-3000:]

    # The drill's restore: the source's canary, every gate (its report stays in its journal).
    report = _report(elematrix, env, "rehearsal-drill")
    assert report["runbook"] == "teardown"
    runs = subprocess.run([elematrix, "runs", "--deployment", "rehearsal-drill"], env=env,
                          capture_output=True, text=True, check=True).stdout.splitlines()
    restore_run = next(ln.split()[0] for ln in runs[1:] if " restore " in f" {ln} ")
    import json

    restore = json.loads(subprocess.run(
        [elematrix, "report", restore_run, "--format", "json"], env=env,
        capture_output=True, text=True, check=True).stdout)
    gates = {g["gate_id"]: g["passed"] for g in restore["gates"]}
    assert gates == {"synapse_health": True, "admin_login": True, "canary_back": True,
                     "e2ee": True}, gates
    steps = {s["step"]: s for s in restore["steps"]}
    assert steps["canary_back"]["outputs"]["proven"] == [
        "both users log in", "event", "media byte-identical", "thumbnail", "same signing key"]
    assert steps["copy_backup"]["outputs"]["source_prefix"] == m.group(1)
    assert steps["report"]["outputs"]["backup"].startswith("rehearsal-drill/")

    # Nothing of the drill is left (moto), nor its keyring entries.
    left = count_tagged(aws, "rehearsal-drill")
    assert sum(left.values()) == 0, left
    assert not [b for b in aws.client("s3").list_buckets()["Buckets"]
                if b["Name"].startswith("elematrix-rehearsal-drill-")]
    assert SecretStore().names("rehearsal-drill") == []
    # The source: the same journal, state directory, resources and backups.
    assert _source_view(elematrix, env, aws, state_dir) == before
    print(f"drill: rpo {m.group(2)} s, rto {float(m.group(3)):.1f} s, drill {wall:.1f} s")

