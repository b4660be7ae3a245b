"""Status's host lines and its AWS rule, in-process (tests/rehearsal/test_status.py runs them
against the rehearsal's real host).

- status.host's judge: the host command's sections (compose ps, df -P, restore.sh --list)
  become the images / disk / last_backup lines against the pins, DISK_FULL_PCT and
  BACKUP_MAX_AGE_S.
- engine/status.py: a live look-up that could not reach AWS is "unknown" with what to do;
  one whose checks failed (a FAIL line, "posture check failed") is "drifted".
"""

from __future__ import annotations

import calendar
import time

from elematrix_tui.actions.host_status import BACKUP_MAX_AGE_S, DISK_FULL_PCT, judge
from elematrix_tui.engine.plan_model import StepPlan
from elematrix_tui.engine.status import _line
from elematrix_tui.stack.values import IMAGES

NOW = calendar.timegm(time.strptime("20261201T120000Z", "%Y%m%dT%H%M%SZ"))


def _out(images: dict[str, str], pct: int, backups: list[str]) -> str:
    ps = [f"{k} {v}" for k, v in images.items()]
    df = ["Filesystem 1024-blocks Used Available Capacity Mounted on",
          f"/dev/vda 100 {pct} {100 - pct} {pct}% /", f"/dev/vda 100 {pct} {100 - pct} {pct}% /"]
    return "\n".join(["--ps", *ps, "--df", *df, "--backups", *backups]) + "\n"


def _verdicts(text: str) -> dict[str, tuple[str, list[str]]]:
    return {x["step"]: (x["verdict"], x["detail"]) for x in judge(text, "prod", NOW)}


def test_a_clean_host_is_ok() -> None:
    got = _verdicts(_out(IMAGES, 33, ["prod/20261201T031500Z 1234"]))
    assert got == {"images": ("ok", []), "disk": ("ok", ["/ 33% used"]),
                   "last_backup": ("ok", ["prod/20261201T031500Z, 8 h old"])}


def test_each_slip_is_drifted() -> None:
    old_backup = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(NOW - BACKUP_MAX_AGE_S - 60))
    got = _verdicts(_out({**IMAGES, "synapse": "matrixdotorg/synapse:v1.160.0"},
                         DISK_FULL_PCT, [f"prod/{old_backup} 99"]))
    assert got["images"] == ("drifted", [f"synapse: runs matrixdotorg/synapse:v1.160.0, "
                                         f"pinned {IMAGES['synapse']}"])
    assert got["disk"] == ("drifted", [f"/ {DISK_FULL_PCT}% used"])
    assert got["last_backup"][0] == "drifted"
    assert _verdicts(_out(IMAGES, 10, []))["last_backup"] == (
        "drifted", ["no complete backup in the bucket"])
    assert _verdicts(_out(IMAGES, 10, ["restore-failed"]))["last_backup"][0] == "unknown"


def _read(found: list[str]) -> StepPlan:
    return StepPlan(phase="infra", id="posture", role="gate", action="aws.assert",
                    title="posture", state="read", symbol="<", found=found)


def test_unreachable_aws_is_unknown_not_drifted() -> None:
    line = _line("infra", _read(["could not look it up: Could not connect to the endpoint URL"]),
                 "poc-ec2", "prod")
    assert line is not None and line.verdict == "unknown" and "AWS did not answer" in line.todo
    failed = _line("infra", _read(["FAIL exactly two rules: 3",
                                   "could not look it up: posture check failed: rules"]),
                   "poc-ec2", "prod")
    assert failed is not None and failed.verdict == "drifted"
