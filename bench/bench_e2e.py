"""e2e.modelled_*: poc-ec2 under the latency model, before and after the critical-path work,
and the limit (bench/e2e_model.py, docs/latency-model.md); needs nothing but this tree.

e2e.rehearsal_s: the whole poc-ec2 rehearsal (every phase), with the wall time per phase
and the share spent in the engine itself versus waiting on AWS, SSH and services.

Same environment as tests/rehearsal/test_rehearsal.py: moto on 127.0.0.1 in this process,
a real sshd on a 127.x address as the instance, the REAL Docker engine running the stack's
images (e2e.phase.<id>_s are the phases on the real engine). Needs root, a Docker engine
with the stack's images, and what `scripts/setup.sh --test` installs. Holds the machine's
stack lock while the stack is up (the FakeInstance does).
The engine's share is the run's wall time minus the time spent inside actions (from the
journal's step attempts), over the wall time.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run() -> list[tuple[str, float, str]]:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "bench"))
    import e2e_model

    modelled = e2e_model.run()
    for figure, value, unit in modelled:  # print now: the rehearsal takes minutes
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        print(f"{figure}: {shown} {unit}".rstrip(), flush=True)
    if os.environ.get("BENCH_E2E_MODEL_ONLY"):
        return []
    try:
        return rehearsal()
    except RuntimeError as e:
        if "needs " not in str(e):
            raise
        print(f"e2e.rehearsal: skipped ({e})", flush=True)
        return []


def rehearsal() -> list[tuple[str, float, str]]:
    import pytest

    from elematrix_tui.practice import docker_answers
    from elematrix_tui.stack.values import IMAGES
    from tests.rehearsal import conftest as fixtures
    from tests.rehearsal import test_rehearsal as rehearsal
    from tests.rehearsal.instance import FakeInstance, missing_binaries, moto_points_at

    missing = missing_binaries()
    if missing or os.geteuid() != 0:
        raise RuntimeError(f"needs root and {', '.join(missing) or 'nothing else'}")
    if not docker_answers():
        raise RuntimeError("needs a Docker engine ('docker info' does not answer)")
    absent = [i for i in sorted(IMAGES.values()) if subprocess.run(
        ["docker", "image", "inspect", i], capture_output=True).returncode != 0]
    if absent:
        raise RuntimeError(f"needs the stack's images in the engine: {', '.join(absent)}")
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    from elematrix_tui.practice import default_vpc_like_aws

    default_vpc_like_aws()  # AWS's default VPC (an internet gateway), as in the tests
    mp = pytest.MonkeyPatch()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env_keep = {k: os.environ.get(k) for k in ("ELEMATRIX_STATE_DIR", "ELEMATRIX_CONFIG_DIR",
                                                   "ELEMATRIX_SECRET_STORE")}
        os.environ.update(ELEMATRIX_STATE_DIR=str(tmp / "state"),
                          ELEMATRIX_CONFIG_DIR=str(tmp / "config"),
                          ELEMATRIX_SECRET_STORE="file")
        server_gen = fixtures.moto_server.__wrapped__(mp)  # type: ignore[attr-defined]
        url = next(server_gen)
        try:
            aws_env = fixtures.aws_env.__wrapped__(url)  # type: ignore[attr-defined]
            inst = FakeInstance("127.0.0.78", tmp / "instance", aws_env=aws_env,
                                unit_dir=tmp / "systemd")
            t_up = time.perf_counter()
            inst.start()
            up_s = time.perf_counter() - t_up
            try:
                with moto_points_at(inst):
                    elematrix = str(ROOT / ".venv" / "bin" / "elematrix")
                    t0 = time.perf_counter()
                    res = subprocess.run(
                        [elematrix, "run", str(rehearsal.RUNBOOK), "--deployment", "bench", "--yes",
                         "--quiet", *rehearsal._params(inst, tmp)],
                        env={**os.environ, **aws_env}, capture_output=True, text=True, timeout=900)
                    total = time.perf_counter() - t0
                    if res.returncode != 0:
                        raise RuntimeError(f"rehearsal failed: {res.stdout[-6000:]}")
                    figures = _figures(tmp / "state" / "deployments" / "bench" / "journal.sqlite",
                                       total)
                t_down = time.perf_counter()
                inst.stop()  # docker compose down -v, the project's volumes removed
                figures += [("e2e.stack_lock_wait_s", inst.lock_wait_s, "s"),
                            ("e2e.instance_up_s", up_s - inst.lock_wait_s, "s"),
                            ("e2e.stack_down_s", time.perf_counter() - t_down, "s")]
            finally:
                if inst.started:  # the rehearsal failed: still bring the stack down
                    inst.stop()
        finally:
            next(server_gen, None)
            mp.undo()
            for k, v in env_keep.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return figures


def _figures(journal: Path, total: float) -> list[tuple[str, float, str]]:
    db = sqlite3.connect(journal)
    (run_id, started, finished), = db.execute("SELECT id, started, finished FROM runs")
    # Time inside actions: the union of the step attempts' spans, from the event log (the
    # one record). A union, not a sum: steps of a phase may run side by side (needs:).
    spans = sorted((ts - float(json.loads(data).get("duration") or 0.0), ts)
                   for data, ts in db.execute(
                       "SELECT data, ts FROM events WHERE run_id=? AND kind='step.finished'",
                       (run_id,)))
    in_actions, reach = 0.0, float("-inf")
    for a, b in spans:
        if b > reach:
            in_actions += b - max(a, reach)
            reach = b
    phases: dict[str, list[float]] = {}
    for _kind, data, ts in db.execute(
            "SELECT kind, data, ts FROM events WHERE run_id=? AND kind IN "
            "('phase.started','phase.finished') ORDER BY seq", (run_id,)):
        phase = json.loads(data)["phase_id"]
        phases.setdefault(phase, []).append(ts)
    db.close()
    wall = finished - started
    out: list[tuple[str, float, Any]] = [("e2e.rehearsal_s", total, "s")]
    for phase, (a, b) in phases.items():
        out.append((f"e2e.phase.{phase}_s", b - a, "s"))
    out.append(("e2e.engine_share_pct", 100 * max(0.0, wall - in_actions) / wall, "%"))
    out.append(("e2e.waiting_share_pct", 100 * min(in_actions, wall) / wall, "%"))
    return out
