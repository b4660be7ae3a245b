"""Issue 20, through the real ``elematrix`` command against a moto server on 127.0.0.1:
one-shot overrides (#2), a private key offered as the public key (#3), teardown from a
state dir that never saw the deployment (#11), and the account guard's refusal (never
retried)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from .helpers import count_tagged
from .test_cli import _Endpoint, _EndpointSession, cli_env, elematrix, infra

__all__ = ["cli_env"]  # the fixture, shared with test_cli


def _other_account(env: dict[str, str]) -> dict[str, str]:
    creds = _Endpoint(env).client("sts").assume_role(
        RoleArn="arn:aws:iam::222222222222:role/other", RoleSessionName="other")["Credentials"]
    return {**env, "AWS_ACCESS_KEY_ID": creds["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": creds["SecretAccessKey"],
            "AWS_SESSION_TOKEN": creds["SessionToken"]}


def _meta(env: dict[str, str], dep: str, key: str) -> Any:
    db = Path(env["ELEMATRIX_STATE_DIR"]) / "deployments" / dep / "journal.sqlite"
    with sqlite3.connect(db) as c:
        rows = list(c.execute("SELECT value FROM meta WHERE key=?", (key,)))
    return json.loads(rows[0][0]) if rows else None


def test_retarget_account_is_one_shot_never_remembered(cli_env: dict[str, str]) -> None:
    dep = "oneshot"
    assert infra(cli_env, dep).returncode == 0
    other = _other_account(cli_env)
    r = infra(other, dep, "--set", "retarget_account=true")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "RE-TARGETING" in r.stdout
    assert "retarget_account" not in (_meta(cli_env, dep, "params") or {})
    # The next run without the override is guarded again: back to the first account is
    # refused, not silently re-targeted by a remembered `true`.
    r = infra(cli_env, dep)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "account guard" in r.stdout and "RE-TARGETING" not in r.stdout
    # The refusal is final: never retried (one attempt of the preflight).
    assert "retrying" not in r.stdout
    # Teardown's override is one-shot too (same property, same meaning).
    r = elematrix(other, "run", "teardown", "--yes", "--deployment", dep,
                  "--set", "retarget_account=true", "--set", "termination_wait=0")
    assert "retarget_account" not in (_meta(cli_env, dep, "params") or {})


def test_a_private_key_is_never_sent_as_the_public_key(cli_env: dict[str, str],
                                                        tmp_path: Path) -> None:
    dep = "privkey"
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    for bad in (key, tmp_path / "two.pub"):
        if bad.name == "two.pub":
            pub = (key.with_suffix(".pub")).read_text()
            bad.write_text(pub + pub)
        r = infra(cli_env, dep, "--set", f"ssh_public_key_path={bad}")
        out = r.stdout + r.stderr
        assert r.returncode == 2, out
        assert "ssh_public_key_path" in out and str(bad) in out
        assert "Traceback" not in out
        assert "PRIVATE KEY" not in out.replace("'PRIVATE KEY'", "")
        # Nothing reached AWS: no key pair, nothing tagged at all.
        assert sum(count_tagged(_EndpointSession(_Endpoint(cli_env)), dep).values()) == 0
    # A real public key is accepted.
    r = infra(cli_env, dep, "--set", f"ssh_public_key_path={key}.pub")
    assert r.returncode == 0, r.stdout + r.stderr


def test_teardown_from_a_state_dir_that_never_saw_the_deployment(
        cli_env: dict[str, str], tmp_path: Path) -> None:
    dep = "elsewhere"
    assert infra(cli_env, dep).returncode == 0
    aws = _EndpointSession(_Endpoint(cli_env))
    before = count_tagged(aws, dep)
    empty = {**cli_env, "ELEMATRIX_STATE_DIR": str(tmp_path / "empty-state")}
    r = elematrix(empty, "run", "teardown", "--yes", "--deployment", dep,
                  "--set", "termination_wait=0")
    out = r.stdout + r.stderr
    # Not answered is declined: nothing changed, resumable, exit 130 (docs/tui.md).
    assert r.returncode == 130 and "declined" in out, out
    assert "never" in out and "type" in out
    assert count_tagged(aws, dep) == before  # nothing deleted
    # On a terminal, a wrong name refuses and nothing is deleted.
    r2 = _on_a_terminal(empty, "wrong-name\n", "run", "teardown", "--yes", "--deployment", dep,
                        "--set", "termination_wait=0")
    assert r2.returncode == 130, r2.stdout + r2.stderr
    assert count_tagged(aws, dep) == before
    # Typing the name goes on.
    r3 = _on_a_terminal(empty, f"{dep}\n", "run", "teardown", "--yes", "--deployment", dep,
                        "--set", "termination_wait=0")
    assert r3.returncode == 0, r3.stdout + r3.stderr
    assert count_tagged(aws, dep)["instance"] == 0
    # From the state dir that deployed it, --yes is enough.
    r = elematrix(cli_env, "run", "teardown", "--yes", "--deployment", dep,
                  "--set", "termination_wait=0")
    assert r.returncode == 0, r.stdout + r.stderr


def _on_a_terminal(env: dict[str, str], typed: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run elematrix with a pseudo-terminal as stdin (the operator types ``typed``)."""
    import os
    import pty
    import sys

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "elematrix"), *args],
                                env=env, stdin=slave, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        os.write(master, typed.encode())
        out, err = proc.communicate(timeout=300)
    finally:
        os.close(slave)
        os.close(master)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
