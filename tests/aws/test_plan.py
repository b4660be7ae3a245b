"""`elematrix plan` shows what the preflight finds (identity, the AL2023 AMI resolved from
SSM, the instance type, the dated cost estimate) against a moto server on 127.0.0.1, and
still writes nothing; --offline renders only."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def test_plan_shows_ami_and_cost_and_writes_nothing(moto_server: str, elematrix: str,
                                                    state_dir: Path, tmp_path: Path) -> None:
    env = dict(os.environ, AWS_ENDPOINT_URL=moto_server, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1",
               HOME=str(tmp_path / "home"))
    args = [elematrix, "plan", "poc-ec2", "--deployment", "planned", "--set",
            "operator_cidr=203.0.113.7/32", "--phase", "infra"]
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    found = [line for line in res.stdout.splitlines() if "found:" in line]
    assert any("AMI ami-" in line and "al2023" in line for line in found), found
    assert any("estimated cost ~USD" in line and "price table of" in line for line in found)
    assert not state_dir.exists() or not any(state_dir.rglob("*"))
    offline = subprocess.run([*args, "--offline"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert offline.returncode == 0 and "found:" not in offline.stdout
