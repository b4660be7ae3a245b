"""engine.step_overhead_ms: the engine's own cost per step (1,000 local.noop, journal on)."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

STEPS = 1000


def _runbook(path: Path) -> None:
    lines = ["runbook: overhead", "phases:", "  - id: one", "    steps:"]
    lines += [f"      - {{id: s{i}, action: local.noop}}" for i in range(STEPS)]
    path.write_text("\n".join(lines) + "\n")


def run() -> list[tuple[str, float, str]]:
    from elematrix_tui.actions import default_registry
    from elematrix_tui.engine.loader import load_runbook
    from elematrix_tui.engine.runner import Runner, RunOptions
    from elematrix_tui.engine.standalone import AutoQuestions

    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("ELEMATRIX_SECRET_STORE", "file")
        os.environ["ELEMATRIX_CONFIG_DIR"] = tmp
        rb_path = Path(tmp) / "rb.yaml"
        _runbook(rb_path)
        rb = load_runbook(rb_path, default_registry())
        for i in range(3):
            runner = Runner(rb, deployment=f"bench-{i}", state_dir=Path(tmp) / "state",
                            questions=AutoQuestions(), registry=default_registry(),
                            options=RunOptions(), runbook_path=rb_path)
            t0 = time.perf_counter()
            code = runner.run()
            elapsed = time.perf_counter() - t0
            assert code == 0
            samples.append(elapsed / STEPS * 1000)
    return [("engine.step_overhead_ms", statistics.median(samples), "ms")]
