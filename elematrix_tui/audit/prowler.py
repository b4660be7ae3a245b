"""Prowler, the open-source AWS posture scanner, run as its own process (it pins boto3,
botocore and pydantic to versions of its own, so it lives in its own environment: the
``audit`` extra, ``uv tool install prowler``, or ``ELEMATRIX_PROWLER``), its OCSF JSON read
back and limited to the deployment's resources.

A resource is the deployment's when Prowler saw the deployment tag on it
(``elematrix:deployment:<name>`` in its labels: every kind tags in the create call), or when
its ARN names a resource the deployment's runs recorded (the IAM role's inline policies
come without the role's tags). Everything else in the account is left out, except results
about account-wide settings, which are kept as ``account`` (audit/model.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..actions.aws_tags import TAG_DEPLOYMENT
from ..engine.posture import Posture
from .model import Finding, classify, is_account_level

PROWLER_VERSION = "5.46.0"
ENV_BINARY = "ELEMATRIX_PROWLER"
# Bounded: a scan of four services takes 1-2 minutes against a small account.
SCAN_TIMEOUT_S = 1800
FSBP = "AWS-Foundational-Security-Best-Practices"

INSTALL_HINT = (
    "Prowler is not installed. `elematrix audit` runs it as its own program; install it "
    "in an environment of its own (it pins boto3 1.40.61 and pydantic 2.12.5):\n"
    f"  uv tool install prowler=={PROWLER_VERSION}        (or: pipx install "
    f"prowler=={PROWLER_VERSION})\n"
    "or beside elematrix: pip install 'elematrix-tui[audit]'. A prowler elsewhere: "
    f"export {ENV_BINARY}=/path/to/prowler.\n"
    "Without Prowler, `elematrix audit --native` runs the gates' own checks of the same "
    "control ids (the posture and hardened gates' subset).")


class ProwlerError(Exception):
    """Prowler could not scan (it is there, but failed)."""


def find_prowler() -> str | None:
    """The prowler program: ``ELEMATRIX_PROWLER``, beside this Python (the extra), or PATH."""
    env = os.environ.get(ENV_BINARY)
    if env:
        return env if Path(env).is_file() and os.access(env, os.X_OK) else None
    beside = Path(sys.executable).parent / "prowler"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("prowler")


def scan(binary: str, posture: Posture, region: str, profile: str | None = None,
         log: Any = None) -> tuple[list[dict[str, Any]], float]:
    """Run Prowler over the posture's services in ``region``; its OCSF results and the
    seconds the scan took. AWS credentials and endpoint come from this environment."""
    with tempfile.TemporaryDirectory(prefix="elematrix-prowler-") as tmp:
        cmd = [binary, "aws", "--region", region, "--service", *posture.services,
               "--output-formats", "json-ocsf", "--output-directory", tmp,
               "--output-filename", "scan", "--no-banner", "--no-color",
               # Exit 3 means "some check failed": that is the audit's business, not an error.
               "--ignore-exit-code-3"]
        if profile:
            cmd += ["--profile", profile]
        started = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SCAN_TIMEOUT_S,
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
        except subprocess.TimeoutExpired as e:
            raise ProwlerError(f"prowler did not finish in {SCAN_TIMEOUT_S} s") from e
        except OSError as e:
            raise ProwlerError(f"cannot start {binary}: {e}") from e
        took = time.monotonic() - started
        out = Path(tmp) / "scan.ocsf.json"
        if proc.returncode != 0 or not out.exists():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise ProwlerError(f"prowler exited {proc.returncode}: {tail}")
        try:
            data = json.loads(out.read_text() or "[]")
        except json.JSONDecodeError as e:
            raise ProwlerError(f"prowler wrote no JSON ({e})") from e
    return (data if isinstance(data, list) else []), took


def owned(result: dict[str, Any], deployment: str, recorded: set[str]) -> bool:
    """The result is about the deployment's resource (see the module docstring)."""
    res = (result.get("resources") or [{}])[0]
    if f"{TAG_DEPLOYMENT}:{deployment}" in (res.get("labels") or []):
        return True
    uid = str(res.get("uid") or "")
    return uid in recorded or any(uid.endswith(("/" + r, ":" + r)) for r in recorded
                                  if r and not r.startswith("arn:"))


def findings(results: list[dict[str, Any]], *, posture: Posture, converged: set[str],
             deployment: str, recorded: set[str],
             params: dict[str, Any] | None = None) -> list[Finding]:
    """Every result on the deployment's resources (and the account-wide ones), classified.

    A Region-wide result of a check whose control says ``region_wide`` is judged as the
    runbook's: the runbook promises (or accepts) it. That is
    ``dlm_ebs_snapshot_lifecycle_policy_exists``, whose resource is the Region's DLM
    (``arn:aws:dlm:<region>:<account>:policy``) and which passes when the Region has a
    lifecycle policy: the deployment's own snapshot schedule (its native check proves the
    policy is the deployment's)."""
    out: list[Finding] = []
    for r in results:
        res = (r.get("resources") or [{}])[0]
        uid, name = str(res.get("uid") or ""), str(res.get("name") or "")
        check = str((r.get("metadata") or {}).get("event_code") or "")
        status = str(r.get("status_code") or "")
        fsbp = list(((r.get("unmapped") or {}).get("compliance") or {}).get(FSBP) or [])
        account = str((r.get("unmapped") or {}).get("provider_uid") or "")
        msg = str(r.get("status_detail") or r.get("message") or "")
        control = posture.by_check(check)
        if owned(r, deployment, recorded) or (control is not None and control.region_wide
                                              and is_account_level(uid, name, account)):
            verdict, cid, reason = classify(posture, converged, check, status, fsbp, params)
            out.append(Finding(check, cid, status, verdict, uid, msg, reason))
        elif is_account_level(uid, name, account):
            out.append(Finding(check, fsbp[0] if fsbp else None, status, "account", uid, msg))
    out.sort(key=lambda f: (f.verdict != "failed", f.control or "~", f.check, f.resource))
    return out
