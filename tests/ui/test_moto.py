"""The TUI drives the bundled runbook's infra phase against a moto server on 127.0.0.1.

The same entry ``elematrix practice`` uses: run_app's runbook/deployment/params/phases.
Confirmations are answered in the modal, as an operator would.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.ui.app import ElematrixApp
from elematrix_tui.ui.screens.modals import ConfirmModal
from elematrix_tui.ui.screens.run import RunScreen

pytestmark = pytest.mark.anyio

RUNBOOK = runbooks_dir() / "poc-ec2.yaml"


@pytest.fixture
def emulator(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from elematrix_tui.practice import Emulator

    ddir = state_dir / "deployments" / "practice"
    emu = Emulator(ddir / "emulator").start()
    assert emu.url.startswith("http://127.0.0.1:")
    for k, v in emu.environ().items():
        monkeypatch.setenv(k, v)
    try:
        yield ddir
    finally:
        emu.stop()


async def test_infra_phase_against_moto(state_dir: Path, emulator: Path) -> None:
    from elematrix_tui.practice import practice_params
    from elematrix_tui.ui.catalog import load_runbook_file

    rb = load_runbook_file(RUNBOOK)
    # Only what this runbook declares (practice may carry values for a newer runbook).
    params = {k: v for k, v in practice_params(emulator).items() if rb.param(k) is not None}
    app = ElematrixApp(state_dir, runbook=RUNBOOK, deployment="practice",
                       params=params, practice=True, phases=["infra"],
                       notices=["Practice: AWS is an emulator on 127.0.0.1 (moto)."])
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, RunScreen)
        await pilot.press("r")
        confirmed: list[str] = []
        end = time.monotonic() + 180
        while screen.last_exit is None:
            assert time.monotonic() < end, "the infra phase did not finish in 180 s"
            await pilot.pause(0.05)
            modal = app.screen
            if isinstance(modal, ConfirmModal) and modal.query("#yes"):
                confirmed.append(modal.step_id)
                await pilot.click("#yes")
        await pilot.pause()
        errors = [str(n.message) for n in app._notifications if n.severity == "error"]
        assert screen.last_exit == 0, (screen.last_exit, screen.model.message, errors)
        infra = screen.model.phase("infra")
        assert infra is not None
        failed = {s.step_id: (s.message, s.diagnosis) for s in infra.all() if s.status == "failed"}
        assert not failed, failed
        assert infra.state == "passed", (infra.state, screen.model.message)
        assert "instance" in confirmed
        inst = screen.model.steps["instance"]
        assert inst.status in ("ok", "changed") and inst.outputs
        # The preflight's cost estimate is on the screen.
        cost = screen.monthly_cost()
        assert cost is not None and cost > 0
        assert f"USD {cost:.2f}/month" in str(screen.query_one("#run-head").render())
        # AWS calls carry request ids, shown in the detail pane.
        assert any(n == "aws.call" for s in infra.all() for n, _ in s.notes)
