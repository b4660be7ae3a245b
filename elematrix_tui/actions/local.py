"""Local actions: no cloud, no network. They make the engine testable end to end and give
runbooks small building blocks (write a file, wait, fail with advice)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any

from ..engine.action import Action, ActionFailed, Check, Inputs, Result, StepContext
from ..engine.poll import PollTimeout, poll


class NoopInputs(Inputs):
    outputs: dict[str, Any] = {}
    message: str = ""
    log: list[str] = []


class Noop(Action[NoopInputs]):
    """Does nothing; returns ``outputs`` as given. Always in sync, so safe to repeat."""

    name = "local.noop"
    Inputs = NoopInputs
    read_only = True

    def check(self, ctx: StepContext, inputs: NoopInputs) -> Check:
        return Check(in_sync=True, outputs=dict(inputs.outputs))

    def apply(self, ctx: StepContext, inputs: NoopInputs) -> Result:
        for line in inputs.log:
            ctx.log(line)
        return Result("ok", outputs=dict(inputs.outputs), message=inputs.message)


class SleepInputs(Inputs):
    seconds: float = 1.0
    lines: int = 0  # log this many lines while sleeping (for live-log demos and benchmarks)


class Sleep(Action[SleepInputs]):
    """Waits, reporting progress; stops promptly when cancelled."""

    name = "local.sleep"
    Inputs = SleepInputs
    read_only = True

    def apply(self, ctx: StepContext, inputs: SleepInputs) -> Result:
        for i in range(inputs.lines):
            ctx.log(f"line {i + 1} of {inputs.lines}")
        # Nothing to probe: the whole wait is the deadline, reported every 0.5 s. The
        # step's own deadline is not applied here (poll, not poll_step): a sleep past it
        # is the engine's timeout to end, through the cancel event.
        with contextlib.suppress(PollTimeout):
            poll(lambda n: None, what="the sleep", timeout=inputs.seconds, interval=0.5,
                 cancel=ctx.cancel,
                 on_wait=lambda a: ctx.progress(f"waiting {a.left:.1f} s", done=a.elapsed,
                                                total=inputs.seconds))
        return Result("ok", outputs={"slept": inputs.seconds})


class WriteInputs(Inputs):
    path: str
    content: str = ""
    mode: str = "0644"
    # Append one line per apply to this file: lets tests count how often a step applied.
    apply_log: str | None = None


class WriteFile(Action[WriteInputs]):
    """Writes a file atomically. In sync when the file already has this content and mode."""

    name = "local.write"
    Inputs = WriteInputs
    output_names = frozenset({"path", "sha256"})

    def local_effects(self, with_: dict[str, Any]) -> list[str]:
        out = [f"writes {with_.get('path')} on THIS machine (mode {with_.get('mode', '0644')})"]
        if with_.get("apply_log"):
            out.append(f"appends to {with_['apply_log']} on THIS machine")
        return out

    def check(self, ctx: StepContext, inputs: WriteInputs) -> Check:
        p = Path(inputs.path)
        digest = hashlib.sha256(inputs.content.encode()).hexdigest()
        try:
            same = p.read_bytes() == inputs.content.encode() and \
                (p.stat().st_mode & 0o777) == int(inputs.mode, 8)
        except OSError:
            same = False
        return Check(in_sync=same, changes=[] if same else [f"write {p}"],
                     outputs={"path": str(p), "sha256": digest})

    def apply(self, ctx: StepContext, inputs: WriteInputs) -> Result:
        p = Path(inputs.path)
        p.parent.mkdir(parents=True, exist_ok=True)
        if inputs.apply_log:
            with open(inputs.apply_log, "a") as f:
                f.write(f"{ctx.step_id}\n")
                f.flush()
                os.fsync(f.fileno())
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, int(inputs.mode, 8))
        with os.fdopen(fd, "w") as f:
            f.write(inputs.content)
        os.chmod(tmp, int(inputs.mode, 8))
        os.replace(tmp, p)
        ctx.log(f"wrote {p} ({len(inputs.content)} bytes)")
        digest = hashlib.sha256(inputs.content.encode()).hexdigest()
        return Result("changed", outputs={"path": str(p), "sha256": digest})


class FailInputs(Inputs):
    message: str = "failed on purpose"
    diagnosis: str | None = None
    fix: str | None = None
    # Pass instead when this file exists (lets a test "fix" a failing gate, then re-run).
    unless_exists: str | None = None


class Fail(Action[FailInputs]):
    """Fails with an operator-facing diagnosis (for gates that guard a manual fix, and tests)."""

    name = "local.fail"
    Inputs = FailInputs
    read_only = True

    def local_effects(self, with_: dict[str, Any]) -> list[str]:
        path = with_.get("unless_exists")
        return [f"looks whether {path} exists on THIS machine"] if path else []

    def apply(self, ctx: StepContext, inputs: FailInputs) -> Result:
        if inputs.unless_exists and Path(inputs.unless_exists).exists():
            return Result("ok", message=f"{inputs.unless_exists} exists")
        raise ActionFailed(inputs.message, diagnosis=inputs.diagnosis, fix=inputs.fix)
