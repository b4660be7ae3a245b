"""``host: local``: the same ssh.run semantics on this machine (rehearsals without sshd)."""

from __future__ import annotations

import os
import time

import pytest

from elematrix_tui.actions.ssh import Run
from elematrix_tui.engine.action import ActionFailed
from tests.ssh.conftest import TimedContext, later


def test_local_streams_and_checks_exit(ctx: TimedContext) -> None:
    start = time.monotonic()
    r = ctx.run(Run(), {"host": "local", "command": "echo one; echo err >&2; sleep 0.5; echo two",
                        "env": {"A": "b c"}})
    assert r.outputs == {"exit_code": 0, "stdout": "one\ntwo\n", "stderr": "err\n",
                         "duration_s": r.outputs["duration_s"]}
    times = {line: t for t, _, line in ctx.log_times}
    assert times["one"] - start < times["two"] - start - 0.3
    r = ctx.run(Run(), {"host": "local", "command": 'printf %s "$A"', "env": {"A": "b c"}})
    assert r.outputs["stdout"] == "b c\n"
    with pytest.raises(ActionFailed, match="exited with 4"):
        ctx.run(Run(), {"host": "local", "command": "exit 4"})
    ctx.run(Run(), {"host": "local", "command": "exit 4", "expect_exit": 4})


def test_local_expect_output(ctx: TimedContext) -> None:
    ctx.run(Run(), {"host": "local", "command": "echo Docker Compose version v2.40.3",
                    "expect_output": r"re:version v2\.\d+"})
    with pytest.raises(ActionFailed, match="does not contain"):
        ctx.run(Run(), {"host": "local", "command": "echo nope", "expect_output": "yes"})


def test_local_timeout_kills_the_whole_command(ctx: TimedContext, tmp_path) -> None:
    marker = tmp_path / "late"
    start = time.monotonic()
    with pytest.raises(ActionFailed, match="timed out"):
        ctx.run(Run(), {"host": "local", "command": f"sleep 2 && touch {marker}", "timeout": 0.5})
    assert time.monotonic() - start < 3
    time.sleep(2)
    assert not marker.exists()  # the process group was killed, not just the shell


def test_local_cancel(ctx: TimedContext) -> None:
    later(0.3, ctx.cancel.set)
    with pytest.raises(ActionFailed, match="interrupted"):
        ctx.run(Run(), {"host": "local", "command": "sleep 10"})


def test_local_sudo(ctx: TimedContext) -> None:
    if os.geteuid() != 0:
        pytest.skip("sudo as a plain user would prompt")
    r = ctx.run(Run(), {"host": "local", "command": "id -u", "sudo": True})
    assert r.outputs["stdout"] == "0\n"
