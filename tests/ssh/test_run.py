"""ssh.run against a real sshd: streaming, exit codes, expect, sudo, env, timeouts, drops."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from elematrix_tui.actions import BUILTIN, default_registry
from elematrix_tui.actions.ssh import Forward, Run
from elematrix_tui.actions.ssh_upload import Upload
from elematrix_tui.engine.action import ActionFailed
from tests.ssh.conftest import TimedContext, later
from tests.support.sshd import SshServer


def test_registered() -> None:
    assert BUILTIN["ssh.run"] == "elematrix_tui.actions.ssh:Run"
    reg = default_registry()
    for cls in (Run, Upload, Forward):
        assert reg.get(cls.name) is cls


def test_streams_lines_while_they_arrive(sshd: SshServer, ctx: TimedContext) -> None:
    start = time.monotonic()
    r = ctx.run(Run(), sshd.inputs(command="echo one; echo oops >&2; sleep 0.6; echo two"))
    assert r.status == "changed"
    assert r.outputs["exit_code"] == 0
    assert r.outputs["stdout"] == "one\ntwo\n"
    assert r.outputs["stderr"] == "oops\n"
    times = {line: t for t, _, line in ctx.log_times}
    # 'one' was logged while the command still ran, not at its end.
    assert times["one"] - start < times["two"] - start - 0.4
    assert ("stderr", "oops") in ctx.logs
    assert ctx.logs[0] == ("cmd", "$ echo one; echo oops >&2; sleep 0.6; echo two")


def test_exit_code_expected_and_unexpected(sshd: SshServer, ctx: TimedContext) -> None:
    r = ctx.run(Run(), sshd.inputs(command="exit 3", expect_exit=[0, 3]))
    assert r.outputs["exit_code"] == 3
    with pytest.raises(ActionFailed) as e:
        ctx.run(Run(), sshd.inputs(command="echo boom-detail >&2; exit 2"))
    assert "exited with 2 (expected 0)" in e.value.message
    assert "boom-detail" in (e.value.diagnosis or "")


def test_expect_output_substring_and_regex(sshd: SshServer, ctx: TimedContext) -> None:
    ctx.run(Run(), sshd.inputs(command="printf 'UTF8|C|C\\n'", expect_output="UTF8|C|C",
                               read_only=True))
    r = ctx.run(Run(), sshd.inputs(command="echo version 2.40.3",
                                   expect_output=r"re:^version \d+\.\d+", read_only=True))
    assert r.status == "ok"  # read_only: a gate reports ok, not changed
    with pytest.raises(ActionFailed) as e:
        ctx.run(Run(), sshd.inputs(command="echo SQL_ASCII", expect_output="UTF8"))
    assert "does not contain 'UTF8'" in e.value.message
    assert "SQL_ASCII" in (e.value.diagnosis or "")


def test_env_and_sudo(sshd: SshServer, ctx: TimedContext) -> None:
    value = "it's \"quoted\" $HOME `x`"
    r = ctx.run(Run(), sshd.inputs(command='printf "%s\\n" "$GREETING"', env={"GREETING": value}))
    assert r.outputs["stdout"] == value + "\n"
    r = ctx.run(Run(), sshd.inputs(command='id -u; printf "%s\\n" "$X"', sudo=True,
                                   env={"X": "under sudo"}))
    assert r.outputs["stdout"] == "0\nunder sudo\n"
    assert ("cmd", "$ sudo id -u; printf \"%s\\n\" \"$X\"") in ctx.logs


def test_one_connection_per_host(sshd: SshServer, ctx: TimedContext) -> None:
    for _ in range(5):
        ctx.run(Run(), sshd.inputs(command="true"))
    assert [k for k, _ in ctx.notes].count("ssh.connect") == 1


def test_big_output_is_capped_but_fully_streamed(sshd: SshServer, ctx: TimedContext) -> None:
    r = ctx.run(Run(), sshd.inputs(command="seq 1 50000"))
    assert len(r.outputs["stdout"]) <= 64 * 1024 + 1
    assert r.outputs["stdout"].endswith("49999\n50000\n")
    assert sum(1 for s, _ in ctx.logs if s == "stdout") == 50000


def test_command_that_never_finishes_times_out(sshd: SshServer, ctx: TimedContext) -> None:
    start = time.monotonic()
    with pytest.raises(ActionFailed) as e:
        ctx.run(Run(), sshd.inputs(command="sleep 8", timeout=1))
    assert time.monotonic() - start < 5
    assert "timed out" in e.value.message
    assert "was stopped" in (e.value.diagnosis or "")
    # The next step reconnects by itself.
    assert ctx.run(Run(), sshd.inputs(command="echo back")).outputs["stdout"] == "back\n"


def test_frozen_server_times_out(own_sshd: SshServer, ctx: TimedContext) -> None:
    ctx.run(Run(), own_sshd.inputs(command="true"))  # connected
    frozen: list[int] = []
    later(0.3, lambda: frozen.extend(own_sshd.signal_connections(signal.SIGSTOP)))
    start = time.monotonic()
    try:
        with pytest.raises(ActionFailed) as e:
            ctx.run(Run(), own_sshd.inputs(command="sleep 1; echo late", timeout=2.5))
    finally:
        own_sshd.signal_connections(signal.SIGCONT)
    assert frozen, "no sshd session process was found to freeze"
    assert 2.0 < time.monotonic() - start < 10
    assert "timed out" in e.value.message
    assert "late" not in [line for _, line in ctx.logs]
    assert ctx.run(Run(), own_sshd.inputs(command="echo fresh")).outputs["stdout"] == "fresh\n"


def test_drop_mid_command_reruns_idempotent_step(own_sshd: SshServer, ctx: TimedContext) -> None:
    ctx.run(Run(), own_sshd.inputs(command="true"))
    later(0.5, own_sshd.signal_connections, signal.SIGKILL)
    r = ctx.run(Run(), own_sshd.inputs(command="echo start; sleep 1.5; echo done",
                                       idempotent=True))
    assert r.outputs["stdout"] == "start\ndone\n"
    assert any(k == "ssh.dropped" and d["rerun"] for k, d in ctx.notes)
    assert any("running the command again" in line for _, line in ctx.logs)


def test_drop_mid_command_fails_when_not_idempotent(own_sshd: SshServer,
                                                     ctx: TimedContext) -> None:
    ctx.run(Run(), own_sshd.inputs(command="true"))
    later(0.5, own_sshd.signal_connections, signal.SIGKILL)
    with pytest.raises(ActionFailed) as e:
        ctx.run(Run(), own_sshd.inputs(command="echo start; sleep 1.5; echo done"))
    assert "dropped while the command was running" in e.value.message
    assert "interrupted mid-command" in (e.value.diagnosis or "")
    assert "idempotent" in (e.value.fix or "")
    # The connection is back for the next step.
    assert ctx.run(Run(), own_sshd.inputs(command="echo ok")).outputs["stdout"] == "ok\n"


def test_drop_between_steps_reconnects(own_sshd: SshServer, ctx: TimedContext) -> None:
    ctx.run(Run(), own_sshd.inputs(command="true"))
    own_sshd.signal_connections(signal.SIGKILL)
    time.sleep(0.2)
    # Nothing was running: reconnecting is safe whatever the step says.
    assert ctx.run(Run(), own_sshd.inputs(command="echo again")).outputs["stdout"] == "again\n"


def test_cancel_stops_the_command(sshd: SshServer, ctx: TimedContext) -> None:
    later(0.3, ctx.cancel.set)
    start = time.monotonic()
    with pytest.raises(ActionFailed) as e:
        ctx.run(Run(), sshd.inputs(command="sleep 8"))
    assert time.monotonic() - start < 3
    assert "interrupted" in e.value.message


def test_engine_deadline_bounds_the_command(sshd: SshServer, ctx: TimedContext) -> None:
    ctx.deadline = time.monotonic() + 1
    with pytest.raises(ActionFailed, match="timed out"):
        ctx.run(Run(), sshd.inputs(command="sleep 8", timeout=600))


def test_other_loopback_address(ctx: TimedContext) -> None:
    # moto hands out Elastic IPs in 127.x: the fixture binds any of them.
    from tests.ssh.conftest import _require_sshd
    _require_sshd()
    with SshServer(bind="127.0.0.5") as srv:
        r = ctx.run(Run(), srv.inputs(command="echo $SSH_CONNECTION"))
        assert " 127.0.0.5 " in r.outputs["stdout"]


def test_auth_failure_is_explained(sshd: SshServer, ctx: TimedContext, tmp_path) -> None:
    import subprocess
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    with pytest.raises(ActionFailed) as e:
        ctx.run(Run(), sshd.inputs(command="true", key_path=str(other)))
    assert "refused every key" in (e.value.diagnosis or "")
    assert str(other) in (e.value.diagnosis or "")


def test_connection_refused_is_explained(ctx: TimedContext) -> None:
    from tests.support.sshd import free_port
    with pytest.raises(ActionFailed) as e:
        ctx.run(Run(), {"host": "127.0.0.1", "port": free_port(), "command": "true",
                        "host_key_fingerprints": ["SHA256:" + "A" * 43]})
    assert "nothing listens" in (e.value.diagnosis or "")


def test_signal_killed_command_is_not_a_drop(sshd: SshServer, ctx: TimedContext) -> None:
    with pytest.raises(ActionFailed) as e:
        ctx.run(Run(), sshd.inputs(command="kill -9 $$", idempotent=True))
    assert "killed by a signal" in e.value.message
    assert not [k for k, _ in ctx.notes if k == "ssh.dropped"]
    assert ctx.run(Run(), sshd.inputs(command="kill -9 $$", expect_exit=-1)).outputs[
        "exit_code"] == -1


def test_100k_lines_stream_fast(sshd: SshServer, ctx: TimedContext) -> None:
    start = time.monotonic()
    r = ctx.run(Run(), sshd.inputs(command="seq 1 100000"))
    elapsed = time.monotonic() - start
    assert sum(1 for s, _ in ctx.logs if s == "stdout") == 100000
    assert r.outputs["stdout"].endswith("100000\n")
    assert elapsed < 5, f"{elapsed:.1f}s for 100k lines"


def test_idempotent_step_dropped_twice_fails(own_sshd: SshServer, ctx: TimedContext) -> None:
    ctx.run(Run(), own_sshd.inputs(command="true"))
    later(0.5, own_sshd.signal_connections, signal.SIGKILL)
    later(2.5, own_sshd.signal_connections, signal.SIGKILL)
    with pytest.raises(ActionFailed) as e:
        ctx.run(Run(), own_sshd.inputs(command="sleep 6", idempotent=True))
    assert "dropped again" in (e.value.diagnosis or "")


def _running(token: str) -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if token in cmd and "pytest" not in cmd:
            out.append(int(pid))
    return out


def test_timed_out_command_is_stopped_on_the_host(sshd: SshServer, ctx: TimedContext) -> None:
    token = f"{os.getpid() % 1000}.{time.monotonic_ns() % 1000}"
    with pytest.raises(ActionFailed) as e:
        ctx.run(Run(), sshd.inputs(command=f"sleep 3{token} | cat; echo never", timeout=1,
                                   sudo=True))
    assert "was stopped" in (e.value.diagnosis or "")
    time.sleep(0.3)
    assert _running(f"sleep 3{token}") == []


@pytest.mark.parametrize("over", ["ssh", "local"])
def test_stdin_feeds_the_command(request: pytest.FixtureRequest, ctx: TimedContext,
                                 over: str) -> None:
    base = request.getfixturevalue("sshd").inputs() if over == "ssh" else {"host": "local"}
    r = ctx.run(Run(), {**base, "command": "wc -c", "stdin": "s3cret\n"})
    assert r.outputs["stdout"].strip() == "7"
    r = ctx.run(Run(), {**base, "command": "tr a-z A-Z", "stdin": "s3cret\n"})
    assert r.outputs["stdout"] == "S3CRET\n"
    # Without stdin the command gets EOF at once (it never hangs waiting for input).
    r = ctx.run(Run(), {**base, "command": "cat; echo end", "timeout": 5})
    assert r.outputs["stdout"] == "end\n"
    assert Run.secret_inputs == frozenset({"stdin"})
