"""Render docs/tui.svg: the run screen of the bundled runbook mid-way through its infra phase.

    .venv/bin/python -m tests.ui.make_screenshot docs/tui.svg

The events are scripted (no AWS, no clocks: durations are the scripted ones) so the picture
is the same every time; the ids and request ids are made up.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.engine import events as ev
from elematrix_tui.ui import catalog
from elematrix_tui.ui.app import ElematrixApp
from elematrix_tui.ui.screens.run import RunScreen

from .helpers import FakeFactory, FakeRunner, wait_for

ROOT = Path(__file__).resolve().parents[2]
RUN = "20261127-091500-4f2a9c"
DONE = [
    ("preflight", {"account": "123456789012", "region": "eu-west-1",
                   "ami_id": "ami-0a1b2c3d4e5f67890", "monthly_usd": 38.9}, "ok"),
    ("key_pair", {"key_name": "elematrix-staging"}, "changed"),
    ("security_group", {"sg_id": "sg-0f1e2d3c4b5a69788"}, "changed"),
    ("backup_bucket", {"bucket": "elematrix-staging-backups-1a2b3c"}, "changed"),
    ("instance_role", {"role_arn": "arn:aws:iam::123456789012:role/elematrix-staging"}, "ok"),
    ("instance_profile", {"profile": "elematrix-staging"}, "ok"),
    ("elastic_ip", {"allocation_id": "eipalloc-0abc1234", "public_ip": "198.51.100.7"},
     "changed"),
]


def script(r: FakeRunner) -> int:
    r.emit(ev.RunStarted(RUN, runbook="poc-ec2", deployment="staging"))
    r.emit(ev.PhaseStarted(RUN, phase_id="infra", title="AWS infrastructure"))
    for step, outputs, status in DONE:
        r.emit(ev.StepStarted(RUN, phase_id="infra", step_id=step, title=step,
                              action="aws.ensure", attempt=1))
        r.emit(ev.LogLine(RUN, step_id=step, line=f"{step}: looking up by tag "
                                                  "elematrix:deployment=staging"))
        r.emit(ev.StepFinished(RUN, phase_id="infra", step_id=step, status=status, attempt=1,
                               duration=1.0, outputs=outputs))
    r.emit(ev.StepStarted(RUN, phase_id="infra", step_id="instance", title="instance",
                          action="aws.ensure", attempt=1,
                          inputs={"kind": "instance", "name": "elematrix-staging",
                                  "spec": {"instance_type": "t3.medium",
                                           "image_id": "ami-0a1b2c3d4e5f67890"}}))
    for line in ["no instance tagged elematrix:deployment=staging: creating one",
                 "RunInstances t3.medium ami-0a1b2c3d4e5f67890 gp3 30 GB encrypted",
                 "IMDSv2 required (hop limit 2); user-data 6.1 kB"]:
        r.emit(ev.LogLine(RUN, step_id="instance", line=line))
    r.emit(ev.Note(RUN, step_id="instance", name="aws.call",
                   data={"service": "ec2", "operation": "RunInstances",
                         "request_id": "7f3c2a10-5b6e-4d8f-9a1b-2c3d4e5f6a7b"}))
    r.emit(ev.StepFinished(RUN, phase_id="infra", step_id="instance", status="changed",
                           attempt=1, duration=1.0,
                           outputs={"instance_id": "i-0123456789abcdef0"}))
    r.emit(ev.StepStarted(RUN, phase_id="infra", step_id="instance_running",
                          title="instance_running", action="aws.wait", attempt=1))
    r.emit(ev.LogLine(RUN, step_id="instance_running", line="i-0123456789abcdef0: pending"))
    r.emit(ev.Progress(RUN, step_id="instance_running", message="instance state: pending",
                       elapsed=24.0, expected=60.0))
    r.cancelled.wait(60)
    return 130


async def _ready(pilot: Pilot[Any]) -> None:
    await pilot.press("r")
    screen = pilot.app.screen
    assert isinstance(screen, RunScreen)
    await wait_for(pilot, lambda: screen.model.steps["instance_running"].progress is not None,
                   what="progress")


def main(out: Path) -> None:
    from textual._doc import take_svg_screenshot

    tmp = Path(tempfile.mkdtemp())
    os.environ.update(ELEMATRIX_STATE_DIR=str(tmp / "state"),
                      ELEMATRIX_CONFIG_DIR=str(tmp / "config"), ELEMATRIX_SECRET_STORE="file")
    catalog.write_settings(tmp / "state", "staging", {
        "runbook_path": str(runbooks_dir() / "poc-ec2.yaml"),
        "params": {}})
    app = ElematrixApp(tmp / "state", deployment="staging", runner_factory=FakeFactory(script))
    svg = take_svg_screenshot(app=app, terminal_size=(120, 36), run_before=_ready,
                              title="elematrix")
    out.write_text(svg, encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "tui.svg"))
