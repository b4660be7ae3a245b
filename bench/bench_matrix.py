"""matrix.validate_s: wall time of the whole matrix validation against a local real stack.

The stack (PostgreSQL with C collation, Synapse from .venv-synapse, nginx, configured from
the project's own templates) is started before the timing and stopped after. Timed: one
``matrix.validate`` apply in this process, as an operator's run does it (the first run
includes importing matrix-nio, which the gate overlaps with its first checks); then
the median of further runs with everything imported. Loopback only.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_S = 3.0
WARM_RUNS = 3


def run() -> list[tuple[str, float, str]]:
    from tests.support.services import MatrixStack, missing_binaries

    missing = missing_binaries()
    if missing:
        raise RuntimeError("no local Matrix stack: " + "; ".join(missing))
    from elematrix_tui.actions.matrix import Validate
    from elematrix_tui.engine.standalone import StandaloneContext

    with tempfile.TemporaryDirectory(prefix="bench-matrix-") as tmp:
        t0 = time.perf_counter()
        stack = MatrixStack(Path(tmp) / "stack").start()
        started = time.perf_counter() - t0
        try:
            inputs = {"base_url": stack.base_url, "server_name": stack.server_name,
                      "admin_url": stack.admin_url,
                      "registration_shared_secret": stack.registration_shared_secret,
                      "timeout": 10, "total_timeout": 60}
            times: list[float] = []
            per_check: dict[str, list[float]] = {}
            for i in range(1 + WARM_RUNS):
                ctx = StandaloneContext(deployment_dir=Path(tmp) / f"ctx{i}")
                t0 = time.perf_counter()
                res = ctx.run(Validate(), inputs)
                times.append(time.perf_counter() - t0)
                if not res.outputs.get("passed"):
                    raise RuntimeError(f"validation failed: {res.outputs}")
                for name, d in res.outputs["durations"].items():
                    per_check.setdefault(name, []).append(d)
        finally:
            stack.stop()
    figures = [
        ("matrix.validate_s", times[0], f"s (target < {TARGET_S:g} s; first run in a process)"),
        ("matrix.validate_warm_s", statistics.median(times[1:]), "s (median, nio imported)"),
        ("matrix.stack_start_s", started, "s (PostgreSQL + Synapse + nginx, not timed above)"),
    ]
    figures += [(f"matrix.check.{name}_s", statistics.median(v), "s (median)")
                for name, v in per_check.items()]
    return figures


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name}: {value:.3f} {unit}")
