"""`elematrix practice --headless`.

Where a Docker engine answers (and as root, with the aws CLI): all four phases, the deploy
phase on this machine's real engine through the local host transport, ending with the E2EE
gate passed. Where none answers: infra and configure for real against the embedded
emulator, then it stops before deploy and says why. A second start replays the emulator's
state: every resource is found again, nothing is created twice."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.practice.conftest import NO_ENGINE
from tests.support.docker import engine


def _practice(elematrix: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([elematrix, "practice", "--headless"], env=env, capture_output=True,
                          text=True, timeout=900)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("ELEMATRIX_SECRET_STORE", None)  # practice chooses the file store itself
    env["HOME"] = str(tmp_path / "home")  # never the operator's ~/.ssh or ~/.aws
    return env


def _rows(out: str) -> dict[str, list[list[str]]]:
    rows: dict[str, list[list[str]]] = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] in ("infra", "configure", "deploy", "harden") and len(parts) >= 3:
            rows.setdefault(parts[0], []).append(parts)
    return rows


def test_practice_headless_without_an_engine_stops_before_deploy(elematrix: str,
                                                                 tmp_path: Path) -> None:
    env = _env(tmp_path)
    env["DOCKER_HOST"] = NO_ENGINE
    first = _practice(elematrix, env)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert "AWS is an emulator on 127.0.0.1" in first.stdout
    assert "No Docker engine answers on this machine" in first.stdout
    rows = _rows(first.stdout)
    assert set(rows) == {"infra", "configure"}, set(rows)
    second = _practice(elematrix, env)
    assert second.returncode == 0, second.stdout[-4000:]
    rows = _rows(second.stdout)
    # adapt runs only for an operator's stack_source (practice deploys the bundled stack).
    # Every step in place: the emulator replays what it handled in the order it handled it
    # (practice.OneRequestAtATime; before it, eip_association came back "changed").
    tolerated = {("adapt", "skipped")}
    odd = [r for ph in rows.values() for r in ph
           if not (r[2] == "ok" or (r[1], r[2]) in tolerated)]
    assert rows and not odd, (odd, second.stdout[-3000:])
    # The DLM stand-in kept its policy in the emulator directory: found again, not created.
    again = {r[1]: r[2] for r in rows["infra"]}
    assert again["snapshots"] == "ok" and again["snapshot_schedule"] == "ok", again


def test_practice_headless_runs_every_phase_on_the_engine(elematrix: str, tmp_path: Path,
                                                          practice_project: str) -> None:
    engine()
    env = _env(tmp_path)
    env["COMPOSE_PROJECT_NAME"] = practice_project
    started = time.monotonic()
    res = _practice(elematrix, env)
    elapsed = time.monotonic() - started
    assert res.returncode == 0, res.stdout[-8000:] + res.stderr[-2000:]
    assert "Practice deploys onto THIS machine" in res.stdout
    assert f"compose project '{practice_project}'" in res.stdout
    rows = _rows(res.stdout)
    assert set(rows) == {"infra", "configure", "deploy", "harden"}, set(rows)
    steps = {r[1]: r[2] for ph in rows.values() for r in ph}
    # Never on the operator's machine: systemd units, cloud-init, the SSM/CloudWatch agent.
    for skipped in ("host_ready", "boot_unit", "ssm_ready", "cw_agent_install"):
        assert steps[skipped] == "skipped", (skipped, steps[skipped])
    assert all(v in ("ok", "changed", "skipped") for v in steps.values()), steps
    for gate in ("posture", "doctor_clean", "e2ee", "backup_in_bucket", "hardened"):
        assert steps[gate] in ("ok", "changed"), (gate, steps.get(gate))
    ps = subprocess.run(["docker", "compose", "-p", practice_project, "ps", "--format",
                         "{{.Service}} {{.Health}}"], capture_output=True, text=True)
    assert sorted(ps.stdout.split("\n")[:-1]) == [
        "element healthy", "nginx healthy", "postgres healthy", "synapse healthy"], ps.stdout
    print(f"practice headless (four phases): {elapsed:.1f} s")
