"""Issue 20 item 13: terminal control sequences from hosts never reach a terminal or report.

The runbook logs what a hostile host could print (CSI erase-line, OSC retitle/hyperlink,
a bare CR followed by a fake ``[ok]``, a C1 CSI, an embedded newline); every output path
must show those characters, not obey them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .conftest import HERE, cli

# Any C0 control except tab/newline, DEL, or a C1 control.
BAD = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _run(elematrix: str) -> tuple[str, str]:
    res = cli(elematrix, "run", str(HERE / "esc.yaml"), "--deployment", "esc", "--yes")
    assert res.returncode == 0, res.stderr  # the failing step has on_failure: continue
    run_id = res.stdout.split()[1].rstrip(":")
    return res.stdout + res.stderr, run_id


def test_headless_output_shows_controls_never_obeys_them(elematrix: str) -> None:
    out, _ = _run(elematrix)
    assert not BAD.search(out), [m.group() for m in BAD.finditer(out)]
    assert "\\x1b[2K" in out and "\\x0d[ok] fake" in out and "\\x9b31m" in out
    # An embedded newline cannot make one log line look like two.
    assert "   | two\\x0alines" in out
    assert "why: why\\x1b]8;;http://x\\x07" in out


def test_reports_neutralise_controls(elematrix: str, tmp_path: Path) -> None:
    _, run_id = _run(elematrix)
    md = cli(elematrix, "report", run_id)
    assert md.returncode == 0, md.stderr
    assert not BAD.search(md.stdout)
    assert "msg\\x1b[1A" in md.stdout
    js = cli(elematrix, "report", run_id, "--format", "json")
    assert js.returncode == 0, js.stderr
    data = json.loads(js.stdout)

    def strings(v: object) -> list[str]:
        if isinstance(v, str):
            return [v]
        if isinstance(v, dict):
            return [s for k, x in v.items() for s in (*strings(k), *strings(x))]
        if isinstance(v, list):
            return [s for x in v for s in strings(x)]
        return []

    bad = [s for s in strings(data) if BAD.search(s)]
    assert not bad, f"decoded JSON report strings hold controls: {bad}"
    steps = {s["step"]: s for s in data["steps"]}
    assert steps["evil_fail"]["diagnosis"] == "why\\x1b]8;;http://x\\x07"


def test_report_markdown_table_cells_are_escaped(elematrix: str) -> None:
    """Lower item: a `|`, a newline or a backtick in a value cannot break the table."""
    _, run_id = _run(elematrix)
    md = cli(elematrix, "report", run_id).stdout
    row = next(line for line in md.splitlines() if line.startswith("| one | evil |"))
    # Seven columns: eight unescaped pipes.
    assert len(re.findall(r"(?<!\\)\|", row)) == 8, row
    assert "\\`tick\\`" in row
