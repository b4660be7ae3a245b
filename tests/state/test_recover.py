"""A lost secret store never silently rotates the stack's secrets (issue 20 #10)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RENDER = ROOT / "tests" / "stack" / "data" / "render.yaml"


def run(elematrix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([elematrix, *args], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ))


def _render(elematrix: str) -> subprocess.CompletedProcess[str]:
    return run(elematrix, "run", str(RENDER), "--deployment", "lost", "--yes",
               "--set", "server_name=chat.example.org", "--set", "public_address=203.0.113.9")


def test_a_lost_store_is_refused_then_recovered_from_the_rendering(
        elematrix: str, state_dir: Path) -> None:
    assert _render(elematrix).returncode == 0
    store_path = Path(os.environ["ELEMATRIX_CONFIG_DIR"]) / "secrets.json"
    before = json.loads(store_path.read_text())["lost"]
    stack = state_dir / "deployments" / "lost" / "stack"
    rendered = {p: p.read_bytes() for p in stack.rglob("*") if p.is_file()}
    store_path.unlink()  # the store is lost; the rendering (and the database) remain

    r = _render(elematrix)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "elematrix recover-secrets --deployment lost" in out
    assert {p: p.read_bytes() for p in stack.rglob("*") if p.is_file()} == rendered
    assert not store_path.exists() or "lost" not in json.loads(store_path.read_text())

    r = run(elematrix, "recover-secrets", "--deployment", "lost")
    assert r.returncode == 0, r.stdout + r.stderr
    for value in before.values():
        assert value not in r.stdout + r.stderr
    after = json.loads(store_path.read_text())["lost"]
    assert {k: after[k] for k in before} == before
    r = _render(elematrix)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "+++ b/" not in r.stdout  # nothing rotated, the rendering is unchanged
