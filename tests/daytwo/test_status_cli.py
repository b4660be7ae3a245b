"""`elematrix status` from the real command line: bad input exits 2; a deployment whose
runs converged nothing yet is clean with no lines (the rehearsal test covers live drift)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.engine.helpers import make_runner, write_runbook

NOOP = """
runbook: tiny
title: one noop
version: 1
phases:
  - id: p
    title: p
    steps:
      - id: s
        title: s
        action: local.noop
"""


def _status(elematrix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([elematrix, "status", *args], capture_output=True, text=True,
                          timeout=60)


def test_bad_input_exits_2_without_a_traceback(elematrix: str) -> None:
    for args, said in ((["Bad_Name"], "deployment name 'Bad_Name'"),
                       (["nosuchdeployment"], "no deployment 'nosuchdeployment'"),
                       (["x1", "--runbook", "nosuch"], "")):
        res = _status(elematrix, *args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr and said in res.stderr, res.stderr


def test_a_deployment_that_converged_nothing_of_poc_ec2_is_clean(elematrix: str,
                                                                 state_dir: Path,
                                                                 tmp_path: Path) -> None:
    runner, _ = make_runner(write_runbook(tmp_path, NOOP), state_dir, deployment="other")
    assert runner.run() == 0
    res = _status(elematrix, "other", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["phases"] == [] and data["lines"] == [] and data["drifted"] is False
    text = _status(elematrix, "other")
    assert text.returncode == 0 and "0 ok, 0 drifted, 0 unknown" in text.stdout
