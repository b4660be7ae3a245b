"""The restore drill's command line (`elematrix run restore --set drill=true`): every bad
input is a located error, exit 2, and nothing is written for the drill (no journal, no
keyring entry). The drill itself runs on the rehearsal (tests/rehearsal/test_restore_runbook.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from elematrix_tui.engine.journal import Journal
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


def test_drill_false_is_the_plain_restore(elematrix: str, state_dir: Path) -> None:
    """`drill=false` is taken out and the restore runbook runs as without it (here it fails
    at once: nothing was deployed), never as a drill."""
    _deployed_without_deploy(state_dir, "plain")
    res = _drill(elematrix, "--deployment", "plain", "--set", "drill=false", "--yes")
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "drill:" not in res.stdout and not Journal.exists(state_dir, "plain-drill")
