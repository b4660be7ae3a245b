"""Issue 20 item 7: ``stack.render`` only ever replaces or removes what a rendering wrote.

Through the real CLI: a rendering marks its directory; a directory without the marker
(the operator's own files) is never moved aside or deleted, and the ``.previous`` copy is
removed only when it too is a rendering.
"""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import cli

RUNBOOK = """runbook: render-only
params:
  - {name: brand, type: string, default: Element}
phases:
  - id: one
    steps:
      - id: render
        action: stack.render
        with: {server_name: chat.example.org, public_address: 192.0.2.1,
               brand: "{{ params.brand }}", out_dir: mine}
"""


def _render(elematrix: str, rb: Path, brand: str) -> tuple[int, str]:
    res = cli(elematrix, "run", str(rb), "--deployment", "rend", "--yes", "--set",
              f"brand={brand}")
    return res.returncode, res.stdout + res.stderr


def test_render_refuses_a_directory_it_did_not_write(elematrix: str, tmp_path: Path) -> None:
    rb = tmp_path / "render.yaml"
    rb.write_text(RUNBOOK)
    ddir = Path(os.environ["ELEMATRIX_STATE_DIR"]) / "deployments" / "rend"
    mine = ddir / "mine"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("the operator's own notes\n")
    for brand in ("One", "Two", "Three"):
        code, out = _render(elematrix, rb, brand)
        assert code == 1, out
        assert "not written by a rendering" in out and "Traceback" not in out, out
    assert (mine / "notes.txt").read_text() == "the operator's own notes\n"
    assert not (ddir / "mine.previous").exists()


def test_render_replaces_its_own_rendering_and_keeps_the_previous(elematrix: str,
                                                                  tmp_path: Path) -> None:
    from elematrix_tui.stack.render import MARKER

    rb = tmp_path / "render.yaml"
    rb.write_text(RUNBOOK)
    ddir = Path(os.environ["ELEMATRIX_STATE_DIR"]) / "deployments" / "rend"
    for brand in ("One", "Two", "Three"):
        code, out = _render(elematrix, rb, brand)
        assert code == 0, out
    assert (ddir / "mine" / MARKER).is_file() and (ddir / "mine.previous" / MARKER).is_file()
    assert '"brand": "Two"' in (ddir / "mine.previous" / "element" / "config.json").read_text()
    # An operator's directory where the previous rendering would go is left alone.
    prev = ddir / "mine.previous"
    for p in sorted(prev.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (prev / "keep.txt").write_text("mine\n")
    code, out = _render(elematrix, rb, "Four")
    assert code == 1 and "not written by a rendering" in out, out
    assert (prev / "keep.txt").exists()
