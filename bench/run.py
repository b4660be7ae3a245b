"""Run the benchmarks and print one line per figure: ``figure: value unit``.

    python bench/run.py [NAME...]      # engine cli aws ssh matrix tui e2e images restore upgrade capacity (default: all)

Each ``bench/bench_<name>.py`` exposes ``run() -> list[(figure, value, unit)]``. Only
loopback addresses are contacted. A benchmark whose prerequisites are missing prints
``<name>: skipped (<reason>)`` and the others still run.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
# capacity (issue 16: monolith against workers) is last: it brings two full stacks up, one
# after the other (minutes); name the others to leave it out.
ORDER = ["engine", "cli", "aws", "ssh", "matrix", "tui", "e2e", "images", "restore", "upgrade",
         "capacity"]


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    names = argv or [n for n in ORDER if (HERE / f"bench_{n}.py").exists()]
    failed = 0
    for name in names:
        if not (HERE / f"bench_{name}.py").exists():
            print(f"{name}: unknown benchmark (have: {', '.join(ORDER)})", file=sys.stderr)
            failed += 1
            continue
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"bench_{name}")
            figures = module.run()
        except Exception as e:  # one broken benchmark must not hide the others' figures
            print(f"{name}: failed ({type(e).__name__}: {e})")
            if os.environ.get("BENCH_DEBUG"):
                traceback.print_exc()
            failed += 1
            continue
        for figure, value, unit in figures:
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            print(f"{figure}: {shown} {unit}".rstrip(), flush=True)
        print(f"# {name} took {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
