"""The whole rehearsal driven through the TUI with Pilot: the same moto server, fake
instance (real sshd, real Docker engine) and runbook as test_rehearsal.py; every confirmation answered in its modal (the
destructive ones by typing the deployment name), as an operator would."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.rehearsal.instance import FakeInstance
from tests.rehearsal.test_rehearsal import (
    RUNBOOK,
    _all_step_ids,
    _backup_objects,
    _count_tagged,
)

pytestmark = pytest.mark.anyio


def _params(inst: FakeInstance, tmp_path: Path) -> dict[str, Any]:
    return {"operator_cidr": "127.0.0.1/32", "alert_email": "operator@example.org",
            "server_name": "rehearsal.test", "ssh_public_key_path": f"{inst.key_path}.pub",
            "ssh_private_key_path": str(inst.key_path), "ssh_user": inst.user,
            "ssh_port": inst.port, "remote_dir": str(tmp_path / "opt" / "elematrix"),
            "systemd_dir": str(inst.unit_dir), "host_key_wait": 0,
            # No AWS credentials in the engine for awslogs (see test_rehearsal.py).
            "container_logs": "local"}


def _failures(state_dir: Path) -> list[dict[str, Any]]:
    """The failed steps of every run, with their messages (for the assertion text)."""
    from elematrix_tui.engine.journal import Journal
    from elematrix_tui.engine.report import report_data

    journal = Journal.open(state_dir, "tui-rehearsal")
    try:
        return [s for run in journal.runs() for s in report_data(journal, run.id)["steps"]
                if s["status"] == "failed"]
    finally:
        journal.close()


async def test_rehearsal_in_the_tui(state_dir: Path, instance: FakeInstance,
                                    aws_env: dict[str, str], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from textual.widgets import Button, Input

    from elematrix_tui.engine.journal import Journal
    from elematrix_tui.engine.report import report_data
    from elematrix_tui.ui.app import ElematrixApp
    from elematrix_tui.ui.screens.modals import ConfirmModal
    from elematrix_tui.ui.screens.run import RunScreen

    for k, v in aws_env.items():
        monkeypatch.setenv(k, v)
    app = ElematrixApp(state_dir, runbook=RUNBOOK, deployment="tui-rehearsal",
                       params=_params(instance, tmp_path))
    confirmed: list[str] = []
    started = time.monotonic()
    async with app.run_test(size=(140, 45)) as pilot:
        screen = app.screen
        assert isinstance(screen, RunScreen)
        end = time.monotonic() + 600
        # The operator presses `r` once per phase; each phase unlocks the next.
        for phase in ("infra", "configure", "deploy", "harden"):
            await pilot.press("r")

            def settled(phase: str = phase) -> bool:
                ph = screen.model.phase(phase)
                return not screen.running and ph is not None and \
                    ph.state in ("passed", "failed")

            while not settled():
                assert time.monotonic() < end, f"{phase} did not finish in time"
                await pilot.pause(0.1)
                modal = app.screen
                if isinstance(modal, ConfirmModal):
                    typed = modal.query(Input)
                    if typed and typed.first().value != "tui-rehearsal":
                        # Destructive: type the deployment name; "Go ahead" enables after.
                        typed.first().value = "tui-rehearsal"
                        continue
                    found = modal.query("#yes")
                    if not found:
                        continue  # pushed but not composed yet: look again next tick
                    yes = found.first(Button)
                    if yes.disabled:
                        continue
                    if modal.step_id not in confirmed:
                        confirmed.append(modal.step_id)
                    yes.press()
            await pilot.pause()
            assert screen.last_exit == 0, (phase, screen.last_exit, screen.model.message,
                                           _failures(state_dir))
        for phase in ("infra", "configure", "deploy", "harden"):
            ph = screen.model.phase(phase)
            assert ph is not None and ph.state == "passed", (phase, ph and ph.state)
    assert {"instance", "upload", "close_ssh"} <= set(confirmed)
    # One run per phase (the operator pressed `r` four times): every report lists its steps.
    journal = Journal.open(state_dir, "tui-rehearsal")
    reports = [report_data(journal, run.id) for run in journal.runs()]
    journal.close()
    assert len(reports) == 4 and all(r["status"] == "passed" for r in reports)
    done = {s["step"] for r in reports for s in r["steps"]
            if s["status"] in ("ok", "changed", "skipped")}
    assert set(_all_step_ids()) <= done
    assert any(k.endswith("synapse.sql.gz") for k in _backup_objects(aws_env, "tui-rehearsal"))
    assert _count_tagged(aws_env, "tui-rehearsal") == {"instances": 1, "security_groups": 1,
                                                       "eips": 1, "buckets": 1,
                                                       "dlm_policies": 1}
    assert instance.initdb_count() == 1
    print(f"tui rehearsal: {time.monotonic() - started:.1f} s")
