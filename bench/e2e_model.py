"""e2e.modelled_*: poc-ec2 under the latency model (tests/support/latency.py), through the
real engine (Runner, journal, scheduler), the actions replaced by modelled ones that sleep
what each step costs on real AWS on a scaled clock (ELEMATRIX_LATENCY_SCALE, default 0.05:
one modelled second sleeps 50 ms).

- ``before``: the runbook and user-data as they were before the critical-path work
  (bench/baseline/, copied from git BASE and frozen: a CI checkout may be shallow): every
  step in sequence, SSH work after the status checks, images pulled when compose starts
  each service.
- ``after``: the runbook and user-data of this tree, at most 4 steps at once.
- ``limit``: the critical path of the after runbook's dependency graph under the same
  model, with no bound on concurrency and no engine time: the sum of the waits on its
  longest chain (printed as e2e.limit_path).

Figures are modelled seconds: the model's own clock (wall / scale), so they include the
engine's own time scaled up by 1/scale (small: it is printed as e2e.engine_overhead_*).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
# The tree before the critical-path work (main when branch critical-path started).
BASE = "f9b3bcc"
RUNBOOK = "runbooks/poc-ec2.yaml"
USER_DATA = "assets/cloud-init/user-data.yaml"


def baseline(path: str) -> str:
    """The file as it was at BASE (kept in bench/baseline/ under its own name)."""
    return (ROOT / "bench" / "baseline" / Path(path).name).read_text()


def _wanted(tree: Any) -> dict[str, set[str]]:
    """steps.<id>.<output> read anywhere in the runbook: what modelled steps must output."""
    from elematrix_tui.engine.expressions import ExpressionError, analyse, has_expression

    out: dict[str, set[str]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, str) and has_expression(node):
            try:
                refs, _ = analyse(node)
            except ExpressionError:
                return
            for r in refs:
                if r.root == "steps" and r.attr:
                    out.setdefault(r.name, set()).add(r.attr)
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(tree)
    return out


def _prepulls(user_data: str) -> bool:
    return "docker pull" in user_data or "elematrix-prepull" in user_data


PARAMS = {"operator_cidr": "203.0.113.7/32", "alert_email": "operator@example.org",
          "server_name": "matrix.example.org", "ssh_host_key": "SHA256:modelled"}


def run_variant(text: str, user_data: str, *, parallel: int, scale: float,
                tmp: Path) -> tuple[float, dict[str, tuple[float, float]]]:
    """Run the runbook under the model; modelled seconds and each step's (start, end)."""
    from elematrix_tui.engine import events as ev
    from elematrix_tui.engine.model import Runbook
    from elematrix_tui.engine.runner import Runner, RunOptions
    from elematrix_tui.engine.standalone import AutoQuestions
    from tests.support import latency

    tree = yaml.safe_load(text)
    rb = Runbook.model_validate(tree)
    latency.WANTED.clear()
    latency.WANTED.update(_wanted(tree))
    clock = latency.Clock(scale)
    world = latency.World(clock, prepull=_prepulls(user_data))
    names = sorted({s.action for _, s, _ in rb.all_steps()})
    registry = latency.modelled_registry(world, names)
    key = tmp / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm0dGVzdGtleWZvcm1vZGVsbGVkYmVuY2g "
                   "bench\n")
    spans: dict[str, tuple[float, float]] = {}
    starts: dict[str, float] = {}

    def sink(e: Any) -> None:
        if isinstance(e, ev.StepStarted):
            starts[e.step_id] = clock.now()
        elif isinstance(e, ev.StepFinished) and e.step_id in starts:
            spans[e.step_id] = (starts[e.step_id], clock.now())

    runner = Runner(rb, deployment="modelled", state_dir=tmp / f"state-{parallel}",
                    params={**PARAMS, "ssh_public_key_path": str(key)},
                    questions=AutoQuestions(answer=True), sinks=[sink], registry=registry,
                    options=RunOptions(assume_yes=True, parallel=parallel),
                    runbook_path=tmp / "poc-ec2.yaml")
    clock.t0 = time.monotonic()
    code = runner.run()
    total = clock.now()
    if code != 0:
        raise RuntimeError(f"modelled run exited {code}: "
                           f"{[(k, v.status, v.message) for k, v in runner.state.steps().items() if v.status == 'failed']}")
    return total, spans


class _VirtualClock:
    """The latency model's clock without sleeping: the simulation sets ``t``."""

    def __init__(self) -> None:
        self.t = 0.0
        self.scale = 1.0

    def now(self) -> float:
        return self.t


def limit(text: str, user_data: str) -> tuple[float, list[tuple[str, float]]]:
    """The critical path of the runbook's dependency graph under the model: unbounded
    concurrency, no engine time. Returns its length and the chain (step, cost)."""
    from elematrix_tui.engine.expressions import is_truthy, render_string
    from elematrix_tui.engine.model import Runbook
    from elematrix_tui.engine.schedule import dependencies
    from tests.support import latency

    tree = yaml.safe_load(text)
    rb = Runbook.model_validate(tree)
    wanted = _wanted(tree)
    clock = _VirtualClock()
    world = latency.World(clock, prepull=_prepulls(user_data))  # type: ignore[arg-type]
    params = {p.name: p.default for p in rb.params} | PARAMS
    outputs = {sid: {k: f"modelled-{k}" for k in names} for sid, names in wanted.items()}
    end: dict[str, float] = {}
    prev: dict[str, str | None] = {}
    cost_of: dict[str, float] = {}
    t_phase = 0.0
    last: str | None = None
    for phase in rb.phases:
        needs = dependencies(phase)
        order: list[tuple[Any, list[str]]] = [(s, needs[s.id]) for s in phase.steps]
        # Gates close the phase: each after every step and the gate before it.
        gate_deps = [s.id for s in phase.steps]
        for g in phase.gates:
            order.append((g, list(gate_deps)))
            gate_deps = [*gate_deps, g.id]
        # Start steps in the order they become ready (world facts depend on time order).
        pending = list(order)
        while pending:
            ready = [(max([t_phase, *(end[d] for d in deps)]), i) for i, (s, deps)
                     in enumerate(pending) if all(d in end for d in deps)]
            start, i = min(ready)
            step, deps = pending.pop(i)
            variables = {"params": params, "steps": outputs, "deployment": "modelled",
                         "run_id": "r", "deployment_dir": "/tmp"}
            if step.when is not None:
                w = step.when if "{{" in step.when else "{{ " + step.when + " }}"
                if not is_truthy(render_string(w, variables)):
                    end[step.id], cost_of[step.id] = start, 0.0
                    prev[step.id] = max(deps, key=lambda d: end[d]) if deps else last
                    continue
            from elematrix_tui.engine.expressions import render_value

            clock.t = start
            inputs = render_value(step.with_, variables)
            cost = latency.step_cost(world, step.id, step.action, inputs)
            end[step.id], cost_of[step.id] = start + cost, cost
            prev[step.id] = max(deps, key=lambda d: end[d]) if deps else last
        last = max((s.id for s in phase.steps + phase.gates), key=lambda s: end[s])
        t_phase = end[last]
    chain: list[tuple[str, float]] = []
    node: str | None = last
    while node is not None:
        chain.append((node, cost_of[node]))
        node = prev.get(node)
    return t_phase, list(reversed(chain))


def run() -> list[tuple[str, float, str]]:
    sys.path.insert(0, str(ROOT))
    from tests.support import latency

    scale = latency.scale_from_env()
    before_rb, before_ud = baseline(RUNBOOK), baseline(USER_DATA)
    after_rb, after_ud = (ROOT / RUNBOOK).read_text(), (ROOT / USER_DATA).read_text()
    out: list[tuple[str, float, str]] = [("e2e.latency_scale", scale, "")]
    import os

    keep = {k: os.environ.get(k) for k in ("ELEMATRIX_SECRET_STORE", "ELEMATRIX_CONFIG_DIR")}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        # The generated secrets of the modelled run go to a throwaway file store.
        os.environ.update(ELEMATRIX_SECRET_STORE="file", ELEMATRIX_CONFIG_DIR=str(tmp / "cfg"))
        (tmp / "b").mkdir()
        (tmp / "a").mkdir()
        t0 = time.perf_counter()
        before, _ = run_variant(before_rb, before_ud, parallel=1, scale=scale, tmp=tmp / "b")
        before_wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        after, _ = run_variant(after_rb, after_ud, parallel=4, scale=scale, tmp=tmp / "a")
        after_wall = time.perf_counter() - t0
        for k, v in keep.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    sim_before, _ = limit(before_rb, before_ud)
    lim, chain = limit(after_rb, after_ud)
    out += [("e2e.modelled_aws_s.before", before, "s"),
            ("e2e.modelled_aws_s.after", after, "s"),
            ("e2e.modelled_limit_s", lim, "s"),
            ("e2e.modelled_after_over_limit", after / lim, "x"),
            ("e2e.modelled_before_sim_s", sim_before, "s"),
            ("e2e.engine_overhead_before_s", before - sim_before, "s"),
            ("e2e.modelled_wall_s", before_wall + after_wall, "s")]
    path = " > ".join(f"{sid} {cost:.0f}" for sid, cost in chain if cost >= 0.5)
    out.append(("e2e.limit_path", 0, f"({path})"))
    return out


if __name__ == "__main__":
    for figure, value, unit in run():
        print(f"{figure}: {value:.3f} {unit}")
