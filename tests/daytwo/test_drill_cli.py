"""The restore drill's command line (`elematrix run restore --set drill=true`): every bad
input is a located error, exit 2, and nothing is written for the drill (no journal, no
keyring entry). The drill itself runs on the rehearsal (tests/rehearsal/test_restore_runbook.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from elematrix_tui.engine.errors import InputError
from elematrix_tui.engine.journal import Journal
from elematrix_tui.engine.model import Runbook
from elematrix_tui.engine.resolve import META_SECRET_NAMES
from elematrix_tui.engine.secrets import SecretStore


def _drill(elematrix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([elematrix, "run", "restore", *args], capture_output=True,
                          text=True, timeout=60)


def _deployed_without_deploy(state_dir: Path, name: str) -> None:
    """A deployment with a journal (a secret's name recorded) but no deploy outputs."""
    with Journal.open(state_dir, name) as j:
        j.set_meta(META_SECRET_NAMES, ["postgres_password"])
    SecretStore().set(name, "postgres_password", "s3cret-value-not-printed")


def test_bad_drill_input_exits_2_located_and_writes_nothing(elematrix: str,
                                                            state_dir: Path) -> None:
    _deployed_without_deploy(state_dir, "src")
    long_name = "a" + "b" * 27  # valid itself; with "-drill" past the rule's 31 characters
    _deployed_without_deploy(state_dir, long_name)
    for args, said in (
            (["--deployment", "src", "--set", "drill=maybe"], "--set: 'drill=maybe': drill takes"),
            (["--deployment", "nosuch", "--set", "drill=true"], "no such deployment"),
            (["--deployment", long_name, "--set", "drill=true"], "the drill's deployment would be"),
            (["--deployment", "src", "--set", "drill=true", "--set", "nope=1"],
             "--set: nope: neither a parameter"),
            (["--deployment", "src", "--set", "drill=true", "--set", "http_port=0"],
             "--set: http_port: must be at least 1"),
            (["--deployment", "src", "--set", "drill=true", "--set", "source=x"],
             "--set: source: a drill restores"),
            (["--deployment", "src", "--set", "drill=true", "--set", "oops"],
             "--set: 'oops': expected KEY=VALUE"),
            (["--deployment", "src", "--set", "drill=true"], "poc-ec2's deploy phase has not run")):
        res = _drill(elematrix, *args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr and said in res.stderr, (args, res.stderr)
        assert "s3cret-value-not-printed" not in res.stdout + res.stderr
    assert not Journal.exists(state_dir, "src-drill")
    assert SecretStore().names("src-drill") == []
    plan = subprocess.run([elematrix, "plan", "restore", "--deployment", "src", "--set",
                           "drill=true"], capture_output=True, text=True, timeout=60)
    assert plan.returncode == 2 and "--set: drill=true: the drill is three runs" in plan.stderr


def test_drill_false_is_the_plain_restore(elematrix: str, state_dir: Path) -> None:
    """`drill=false` is taken out and the restore runbook runs as without it (here it fails
    at once: nothing was deployed), never as a drill."""
    _deployed_without_deploy(state_dir, "plain")
    res = _drill(elematrix, "--deployment", "plain", "--set", "drill=false", "--yes")
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "drill:" not in res.stdout and not Journal.exists(state_dir, "plain-drill")


def _deployed(state_dir: Path, name: str) -> None:
    """A source as poc-ec2's deploy phase leaves it, as far as the drill reads it."""
    from elematrix_tui.engine.events import StepFinished
    from elematrix_tui.engine.resolve import META_PARAMS

    with Journal.open(state_dir, name) as j:
        j.set_meta(META_SECRET_NAMES, ["postgres_password", "canary_password_a"])
        j.set_meta(META_PARAMS, {"operator_cidr": "198.51.100.7/32", "http_port": 8080,
                                 "ssh_host_key": "SHA256:the-source-hosts-key"})
        for step, outputs in (("server_name", {"server_name": "chat.example.org"}),
                              ("backup_bucket", {"bucket": f"elematrix-{name}-1"}),
                              ("canary", {"event_id": "$e"})):
            j.record(StepFinished("r1", phase_id="deploy", step_id=step, status="ok",
                                  attempt=1, duration=0.1, outputs=outputs))
    for secret in ("postgres_password", "canary_password_a"):
        SecretStore().set(name, secret, f"{secret}-of-{name}")


@pytest.mark.parametrize(("failing", "code"), [("poc-ec2", 1), ("restore", 1),
                                               ("restore", 2), ("restore", 130)])
def test_a_failed_drill_is_torn_down_and_the_source_left_as_it_was(
        state_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        failing: str, code: int) -> None:
    """The runs stand in here (the rehearsal runs them for real): whichever run fails, the
    teardown of NAME-drill runs next with its bucket, its keyring entries go, the source's
    fingerprint is unchanged and the exit code is 1; an interrupted drill tells the
    operator the exact teardown command."""
    from elematrix_tui import drill

    _deployed(state_dir, "src")
    before = drill.source_fingerprint(state_dir, "src")
    calls: list[tuple[str, str, dict[str, object]]] = []

    def fake(rb: Runbook, *, deployment: str, params: dict[str, object], **kw: object) -> int:
        calls.append((rb.runbook, deployment, dict(params)))
        if rb.runbook == "poc-ec2":  # the drill's copies are there while it runs
            assert SecretStore().get("src-drill", "postgres_password") == \
                "postgres_password-of-src"
        if rb.runbook == failing and code == 2:
            raise InputError("refused")  # e.g. a parameter the run itself refuses
        return code if rb.runbook == failing else 0

    monkeypatch.setattr(drill, "run_headless", fake)
    rc = drill.run_drill(drill.DrillRequest(source="src", state_dir=state_dir,
                                            sets={"http_port": "8081"}, assume_yes=True))
    out = capsys.readouterr().out
    assert rc == (130 if code == 130 else 1), out
    names = [c[0] for c in calls]
    assert all(c[1] == "src-drill" for c in calls)
    deploy = calls[0][2]
    assert deploy["server_name"] == "chat.example.org" and deploy["http_port"] == "8081"
    assert deploy["operator_cidr"] == "198.51.100.7/32"
    assert "ssh_host_key" not in deploy  # the source's machine's, not the drill's
    if code == 130:
        assert names == ["poc-ec2", "restore"]
        assert ("elematrix run teardown --deployment src-drill --set "
                "confirm_deployment=src-drill --yes") in out
    else:
        assert calls[-1][2] == {"confirm_deployment": "src-drill"}
        assert names == (["poc-ec2", "teardown"] if failing == "poc-ec2"
                         else ["poc-ec2", "restore", "teardown"])
        if "restore" in names:
            assert calls[1][2] == {"source": "src", "http_port": "8081"}  # both have it
        assert SecretStore().get("src-drill", "postgres_password") is None
        assert "drill: source src: unchanged" in out
    assert drill.source_fingerprint(state_dir, "src") == before
    assert SecretStore().get("src", "postgres_password") == "postgres_password-of-src"
