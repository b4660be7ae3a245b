"""Make docs/tui.svg (the README's picture) from a real `elematrix practice` run.

    .venv/bin/python scripts/readme_picture.py [OUT.svg]

The Textual app runs under Pilot at 140x45 with the same set-up `elematrix practice` uses
(``practice.practice_session``: the embedded AWS emulator, the practice parameters, the
banner's notices); an operator's keys are pressed: `r` for each of the four phases (infra,
configure, deploy, harden), every confirmation answered "Go ahead", the destructive one
after typing the deployment name. The deploy and harden phases run on this machine's
Docker engine through the local host transport (the stack's images must already be in the
engine: scripts/setup.sh --test builds them). Then the run screen is exported with
Textual's own ``App.export_screenshot``.

Nothing of the operator's is touched: state, config and secrets go to a temporary
directory; the deployment is ``demo`` (compose project ``elematrix-demo``). The machine-wide
stack lock (tests/support/docker.py ``stack_lock``) is held for the whole run, since the
stack publishes fixed ports; waiting for it is normal when tests run. The stack is brought
down with its volumes at the end, whatever happened. Durations in the picture are this
run's own.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textual.pilot import Pilot

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support and tests.rehearsal: the stack's helpers

DEPLOYMENT = "demo"
PHASES = ("infra", "configure", "deploy", "harden")
SIZE = (140, 45)
# Generous bounds: the deploy phase starts the whole stack (docs/practice.md has figures).
PHASE_TIMEOUT_S = {"infra": 300.0, "configure": 300.0, "deploy": 900.0, "harden": 300.0}
LOCK_TIMEOUT_S = 3600.0


async def _run_phase(pilot: Pilot[Any], phase: str) -> None:
    """Press `r` and answer every question as an operator would, until ``phase`` settles.

    The same loop as tests/rehearsal/test_rehearsal_tui.py (the destructive confirmation
    wants the deployment name typed; "Go ahead" is enabled after)."""
    from textual.widgets import Button, Input

    from elematrix_tui.ui.app import ElematrixApp
    from elematrix_tui.ui.screens.modals import ConfirmModal
    from elematrix_tui.ui.screens.run import RunScreen

    app = pilot.app
    assert isinstance(app, ElematrixApp)
    screen = app.screen
    assert isinstance(screen, RunScreen), screen
    await pilot.press("r")
    end = time.monotonic() + PHASE_TIMEOUT_S[phase]
    while True:
        ph = screen.model.phase(phase)
        if not screen.running and ph is not None and ph.state in ("passed", "failed"):
            break
        if time.monotonic() > end:
            raise SystemExit(f"{phase} did not finish in {PHASE_TIMEOUT_S[phase]:.0f} s")
        await pilot.pause(0.1)
        modal = app.screen
        if isinstance(modal, ConfirmModal):
            typed = modal.query(Input)
            if typed and typed.first().value != DEPLOYMENT:
                typed.first().value = DEPLOYMENT
                continue
            found = modal.query("#yes")
            if not found:
                continue  # pushed but not composed yet: look again next tick
            yes = found.first(Button)
            if not yes.disabled:
                yes.press()
    if screen.last_exit != 0 or ph.state != "passed":
        raise SystemExit(f"{phase}: {ph.state}, exit {screen.last_exit}: {screen.model.message}")


async def _drive(out: Path, state: Path, params: dict[str, object], phases: list[str] | None,
                 notices: list[str]) -> dict[str, float]:
    from elematrix_tui.engine.catalog import resolve_runbook as resolve_runbook_path
    from elematrix_tui.practice import PRACTICE_RUNBOOK
    from elematrix_tui.ui.app import ElematrixApp
    from elematrix_tui.ui.widgets.phase_tree import PhaseTree

    if phases is not None:
        raise SystemExit(f"practice cannot run every phase here: {notices[-1]}")
    app = ElematrixApp(state, runbook=resolve_runbook_path(PRACTICE_RUNBOOK),
                       deployment=DEPLOYMENT, practice=True, params=params, phases=phases,
                       notices=notices)
    times: dict[str, float] = {}
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        for phase in PHASES:
            t0 = time.monotonic()
            await _run_phase(pilot, phase)
            times[phase] = time.monotonic() - t0
            await pilot.pause()
            print(f"{phase} passed in {times[phase]:.1f} s", flush=True)
        # As an operator would, fold the phases that passed before the last one, so the
        # picture shows all four phases and every step of harden.
        tree = app.screen.query_one(PhaseTree)
        for phase in PHASES[:-1]:
            tree.nodes_by_id[phase].collapse()
        await pilot.pause(0.5)  # the last run's end drawn
        out.write_text(app.export_screenshot(title="elematrix practice"), encoding="utf-8")
    return times


def main(out: Path) -> int:
    from elematrix_tui.engine.paths import deployment_dir
    from elematrix_tui.practice import compose_project, practice_session
    from tests.rehearsal.instance import remove_project
    from tests.support.docker import engine, stack_lock

    engine()
    tmp = Path(tempfile.mkdtemp(prefix="elematrix-picture-"))
    os.environ.update(ELEMATRIX_STATE_DIR=str(tmp / "state"),
                      ELEMATRIX_CONFIG_DIR=str(tmp / "config"), HOME=str(tmp / "home"),
                      ELEMATRIX_SECRET_STORE="file")  # never the operator's keyring
    os.environ.pop("COMPOSE_PROJECT_NAME", None)  # practice's own: elematrix-<deployment>
    project = compose_project(DEPLOYMENT)
    print(f"waiting for the stack lock; then practice as {DEPLOYMENT!r} "
          f"(compose project {project}) in {tmp}", flush=True)
    started = time.monotonic()
    with stack_lock(timeout=LOCK_TIMEOUT_S):
        locked = time.monotonic()
        try:
            with practice_session(DEPLOYMENT, deployment_dir(tmp / "state", DEPLOYMENT)) as s:
                times = asyncio.run(_drive(out, tmp / "state", s.params, s.phases, s.notices))
        finally:
            remove_project(project)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {out}: waited {locked - started:.0f} s for the lock, run "
          f"{time.monotonic() - locked:.0f} s ("
          + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()) + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "tui.svg"))
