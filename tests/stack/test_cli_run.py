"""stack.render and stack.doctor through the real command line (`elematrix run`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

RUNBOOK = Path(__file__).resolve().parent / "data" / "render.yaml"


def _run(elematrix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([elematrix, "run", str(RUNBOOK), "--deployment", "demo", "--yes",
                           "--set", "server_name=chat.example.org", *args],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))


def test_render_and_doctor_via_cli(elematrix: str, state_dir: Path) -> None:
    r = _run(elematrix, "--set", "public_address=203.0.113.9")
    assert r.returncode == 0, r.stdout + r.stderr
    stack = state_dir / "deployments" / "demo" / "stack"
    hs = yaml.safe_load((stack / "synapse" / "homeserver.yaml").read_text())
    secrets = [hs["registration_shared_secret"], hs["macaroon_secret_key"], hs["form_secret"],
               hs["database"]["args"]["password"]]
    assert all(len(s) >= 40 for s in secrets)
    assert "+++ b/docker-compose.yml" in r.stdout
    assert "GATE [ok] doctor" in r.stdout

    # Secrets never reach the output, the journal or the report.
    journal = b"".join(p.read_bytes() for p in (state_dir / "deployments" / "demo").glob(
        "journal.sqlite*"))
    for s in secrets:
        assert s not in r.stdout + r.stderr
        assert s.encode() not in journal

    # Same parameters again: the secrets are kept (keyring), nothing changes.
    r2 = _run(elematrix, "--set", "public_address=203.0.113.9")
    assert r2.returncode == 0, r2.stdout + r2.stderr
    hs2 = yaml.safe_load((stack / "synapse" / "homeserver.yaml").read_text())
    assert hs2["macaroon_secret_key"] == hs["macaroon_secret_key"]
    assert "+++ b/" not in r2.stdout

    # A new public address: only the addresses change, and the diff says so.
    r3 = _run(elematrix, "--set", "public_address=198.51.100.20:8080")
    assert r3.returncode == 0, r3.stdout + r3.stderr
    assert '+public_baseurl: "http://198.51.100.20:8080/"' in r3.stdout
    assert (state_dir / "deployments" / "demo" / "stack.previous").is_dir()
    for s in secrets:
        assert s not in r3.stdout
