"""verify.yaml in the TUI (Textual's run_test) against the real stack: the gate passes
and the log pane lists every check; the shared secret never reaches the screen."""

from __future__ import annotations

from pathlib import Path

import pytest

from elematrix_tui.actions.matrix_checks import CHECK_NAMES
from elematrix_tui.bundled import runbooks_dir
from tests.support.services import MatrixStack

pytestmark = [pytest.mark.anyio, pytest.mark.services]

RUNBOOK = runbooks_dir() / "verify.yaml"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_verify_runbook_in_the_tui(state_dir: Path, matrix_stack: MatrixStack) -> None:
    import time

    from elematrix_tui.engine.secrets import SecretStore
    from elematrix_tui.ui import catalog
    from elematrix_tui.ui.app import ElematrixApp
    from elematrix_tui.ui.screens.run import RunScreen
    from elematrix_tui.ui.widgets.log_pane import LogPane

    secret = matrix_stack.registration_shared_secret
    # As if typed earlier: the secret parameter is in the store, not in the settings.
    SecretStore("file").set("tui-verify", "registration_shared_secret", secret)
    catalog.write_settings(state_dir, "tui-verify", {
        "runbook_path": str(RUNBOOK),
        "params": {"base_url": matrix_stack.base_url, "server_name": matrix_stack.server_name,
                   "admin_url": matrix_stack.admin_url, "timeout": 10}})
    app = ElematrixApp(state_dir, deployment="tui-verify")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, RunScreen), type(screen).__name__
        await pilot.press("r")
        end = time.monotonic() + 90
        while screen.running or screen.model.status not in ("passed", "failed"):
            assert time.monotonic() < end, "the verify run did not finish"
            await pilot.pause(0.1)
        lines = "\n".join(line for _, _, line in screen.query_one(LogPane).kept)
        assert screen.model.status == "passed", lines[-3000:]
        for name in CHECK_NAMES:
            assert f"[PASS] {name}" in lines
        assert secret not in lines
        assert screen.model.phase("verify").state == "passed"  # type: ignore[union-attr]
