"""The image pins: one table (``elematrix_tui/stack/values.py: IMAGES``) that the compose
file, ``elematrix plan`` and the local test images follow."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from elematrix_tui.actions.stack import Render
from elematrix_tui.stack.values import IMAGES


def test_plan_shows_the_pinned_images_of_the_rendered_stack(
        elematrix: str, state_dir: Path, tmp_path: Path) -> None:
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    for k in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        env.pop(k, None)
    res = subprocess.run([elematrix, "plan", "poc-ec2", "--deployment", "pins", "--set",
                          "operator_cidr=203.0.113.7/32", "--phase", "configure", "--offline"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "step render (stack.render)" in line)
    shown = [line.strip() for line in lines[at + 1:at + 8] if "image " in line]
    assert shown == [f"image {name}: {ref}" for name, ref in IMAGES.items()], res.stdout
    assert not state_dir.exists() or not any(state_dir.rglob("*"))


def test_plan_notes_follow_a_step_override_and_ignore_unknown_names() -> None:
    notes = Render.plan_notes({"images": {"nginx": "nginx:1.30.4-alpine", "bogus": "x:1"}})
    assert "image nginx: nginx:1.30.4-alpine" in notes
    assert f"image postgres: {IMAGES['postgres']}" in notes
    assert not any("bogus" in n for n in notes)

