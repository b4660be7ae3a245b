"""Host keys: pinned, from the console block, asked once, refused on mismatch (even with --yes)."""

from __future__ import annotations

import pytest

from elematrix_tui.actions.ssh import Run
from elematrix_tui.actions.sshconn import parse_fingerprints
from elematrix_tui.engine.action import ActionFailed
from tests.ssh.conftest import Operator, TimedContext
from tests.support.sshd import SshServer

WRONG = "SHA256:" + "x" * 43


def test_console_block_parses(sshd: SshServer) -> None:
    console = ("cloud-init: boot\nec2: #############\n" + sshd.console_block
               + "\n-----BEGIN SSH HOST KEY KEYS-----\necdsa-sha2-nistp256 AAAA...\n"
                 "-----END SSH HOST KEY KEYS-----\n")
    assert parse_fingerprints(console) == sshd.fingerprints
    assert sshd.console_block.splitlines()[1].endswith("no comment (ECDSA)")
    with pytest.raises(ActionFailed):
        parse_fingerprints("not a fingerprint")


def test_pinned_list_accepted_and_remembered(sshd: SshServer, ctx: TimedContext) -> None:
    ctx.questions = Operator()
    ctx.run(Run(), sshd.inputs(command="true"))
    assert ctx.questions.prompts == []
    assert ctx.meta[f"ssh.hostkeys.{sshd.host}:{sshd.port}"] == sshd.fingerprints


def test_console_block_accepted(sshd: SshServer, ctx: TimedContext) -> None:
    r = ctx.run(Run(), sshd.inputs(command="echo in", host_key_fingerprints=sshd.console_block))
    assert r.outputs["stdout"] == "in\n"


def test_pin_of_another_key_type_is_found(sshd: SshServer, ctx: TimedContext) -> None:
    # paramiko negotiates ed25519 first; a parameter holding only the ECDSA fingerprint must
    # still match (the other type is requested on a second handshake).
    ecdsa = parse_fingerprints(sshd.console_block.splitlines()[1])
    ctx.run(Run(), sshd.inputs(command="true", host_key_fingerprints=ecdsa))
    connect = next(d for k, d in ctx.notes if k == "ssh.connect")
    assert connect["host_key"] == ecdsa[0]
    assert connect["key_type"].startswith("ecdsa")


@pytest.mark.parametrize("assume_yes", [False, True])
def test_wrong_pin_refused(sshd: SshServer, ctx: TimedContext, assume_yes: bool) -> None:
    ctx.assume_yes = assume_yes
    ctx.questions = Operator(accept=True)
    with pytest.raises(ActionFailed) as e:
        ctx.run(Run(), sshd.inputs(command="touch /tmp/should-not-run",
                                   host_key_fingerprints=[WRONG]))
    assert "does not match the pinned fingerprints" in e.value.message
    for fp in sshd.fingerprints:  # every key the server showed is named in the diagnosis
        assert fp in (e.value.diagnosis or "")
    assert "instance was replaced" in (e.value.diagnosis or "")
    assert "get-console-output" in (e.value.fix or "")
    assert ctx.questions.prompts == []  # a mismatch is never offered for acceptance
    assert not ctx.meta


def test_unpinned_key_asked_then_remembered(sshd: SshServer, ctx: TimedContext) -> None:
    ctx.questions = Operator(accept=True)
    ctx.run(Run(), sshd.inputs(command="true", host_key_fingerprints=None))
    (prompt, options), = ctx.questions.prompts
    assert options[0] in sshd.fingerprints
    assert options[0] in prompt
    assert ctx.meta[f"ssh.hostkeys.{sshd.host}:{sshd.port}"] == options
    # A later run of the same deployment trusts the remembered key without asking.
    later_ctx = TimedContext(deployment_dir=ctx.deployment_dir, meta=dict(ctx.meta),
                             questions=Operator(accept=False))
    try:
        later_ctx.run(Run(), sshd.inputs(command="true", host_key_fingerprints=None))
        assert later_ctx.questions.prompts == []
    finally:
        later_ctx.close()


def test_unpinned_key_refused_by_operator(sshd: SshServer, ctx: TimedContext) -> None:
    ctx.questions = Operator(accept=False)
    with pytest.raises(ActionFailed, match="was not accepted"):
        ctx.run(Run(), sshd.inputs(command="true", host_key_fingerprints=None))
    assert not ctx.meta


def test_unpinned_key_never_accepted_by_yes_headless(sshd: SshServer, ctx: TimedContext,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # The real headless CLI questions with --yes and no terminal (as in CI).
    from elematrix_tui.headless import HeadlessQuestions
    ctx.assume_yes = True
    ctx.questions = HeadlessQuestions(assume_yes=True)
    ctx.questions.interactive = False
    with pytest.raises(ActionFailed) as e:
        ctx.run(Run(), sshd.inputs(command="true", host_key_fingerprints=None))
    assert "not accepted" in e.value.message
    assert "not even with --yes" in (e.value.diagnosis or "")
    assert "host_key_fingerprints" in (e.value.fix or "")
    assert not ctx.meta


def test_yes_still_asks_the_operator(sshd: SshServer, ctx: TimedContext) -> None:
    # --yes answers confirmations, never host-key trust: the operator is still asked.
    ctx.assume_yes = True
    ctx.questions = Operator(accept=False)
    with pytest.raises(ActionFailed):
        ctx.run(Run(), sshd.inputs(command="true", host_key_fingerprints=None))
    assert len(ctx.questions.prompts) == 1


def test_check_never_asks(sshd: SshServer, ctx: TimedContext, tmp_path) -> None:
    from elematrix_tui.actions.ssh_upload import Upload
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("x")
    ctx.questions = Operator(accept=True)
    chk = ctx.check(Upload(), sshd.inputs(source=str(tmp_path / "src"), dest="/tmp/x",
                                          host_key_fingerprints=None))
    assert chk.in_sync is None
    assert "cannot compare now" in chk.changes[0]
    assert ctx.questions.prompts == []


def test_remembered_key_mismatch_refused(sshd: SshServer, ctx: TimedContext) -> None:
    # The deployment trusted another key before (instance replaced, or an impostor).
    ctx.meta[f"ssh.hostkeys.{sshd.host}:{sshd.port}"] = [WRONG]
    with pytest.raises(ActionFailed, match="does not match"):
        ctx.run(Run(), sshd.inputs(command="true", host_key_fingerprints=None))


def test_infra_phase_pins_used_when_step_gives_none(sshd: SshServer, ctx: TimedContext) -> None:
    # aws.wait host_keys_of stores the console's fingerprints for the deployment.
    ctx.meta["ssh.host_key_fingerprints"] = sshd.fingerprints
    ctx.questions = Operator(accept=True)
    ctx.run(Run(), sshd.inputs(command="true", host_key_fingerprints=None))
    assert ctx.questions.prompts == []
    assert ctx.meta[f"ssh.hostkeys.{sshd.host}:{sshd.port}"] == sshd.fingerprints


def test_infra_phase_pins_mismatch_refused(sshd: SshServer, ctx: TimedContext) -> None:
    ctx.meta["ssh.host_key_fingerprints"] = [WRONG]
    ctx.questions = Operator(accept=True)
    with pytest.raises(ActionFailed) as e:
        ctx.run(Run(), sshd.inputs(command="true", host_key_fingerprints=None))
    assert "instance console output" in (e.value.diagnosis or "")
    assert ctx.questions.prompts == []
