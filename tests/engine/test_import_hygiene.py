"""The engine never loads the UI or an SDK; the CLI's --help loads none of them either."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("textual", "rich", "boto3", "botocore", "paramiko", "nio", "httpx")


def _loaded_after(code: str) -> set[str]:
    probe = (f"{code}\nimport sys\n"
             f"print('LOADED:', ' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    line = [x for x in res.stdout.splitlines() if x.startswith("LOADED:")][-1]
    return set(line.split()[1:])


def test_engine_never_loads_textual_or_sdks() -> None:
    code = "\n".join(f"import elematrix_tui.engine.{m}" for m in (
        "action", "events", "model", "loader", "runner", "journal", "report", "plan",
        "secrets", "expressions", "params", "standalone"))
    assert _loaded_after(code) == set()


def test_validating_the_bundled_runbooks_loads_no_sdk() -> None:
    code = ("from pathlib import Path\nfrom elematrix_tui.actions import default_registry\n"
            "from elematrix_tui.engine.loader import load_runbook\n"
            "from elematrix_tui.bundled import runbooks_dir\n"
            "for p in runbooks_dir().glob('*.yaml'):\n"
            "    load_runbook(p, default_registry())\n")
    assert _loaded_after(code) == set()


def test_cli_help_loads_nothing_heavy() -> None:
    code = ("import sys\nfrom elematrix_tui import cli\nsys.argv=['elematrix','--help']\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n")
    assert _loaded_after(code) == set()
