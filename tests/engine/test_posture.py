"""The runbook's posture section (engine/posture.py): located errors from the loader, and the
audit's classification of a result against it (audit/model.py). No AWS here: the audit
against moto and the real Prowler is tests/aws/test_audit.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

from elematrix_tui.audit.model import classify, is_account_level
from elematrix_tui.audit.prowler import findings
from elematrix_tui.engine.posture import Posture

RUNBOOK = """\
runbook: p
posture:
  controls:
    - {id: EC2.8, title: IMDSv2, satisfied_by: infra, prowler: [ec2_instance_imdsv2_enabled]}
    - {id: SSM.1, title: SSM, accepted: "agent comes in harden", satisfied_by: harden, prowler: [ec2_instance_managed_by_ssm]}
    - {id: EC2.9, title: public ip, accepted: "HTTP POC", removed_by: ALB, prowler: [ec2_instance_public_ip]}
phases:
  - id: infra
    steps: [{id: a, action: local.noop}]
    gates:
      - id: posture
        action: aws.assert
        with:
          checks:
            - {title: t, control: EC2.8, service: ec2, operation: describe_instances, query: x, equals: 1}
  - id: harden
    steps: [{id: b, action: local.noop}]
"""


def _validate(elematrix: str, tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return subprocess.run([elematrix, "validate", str(path)], capture_output=True, text=True,
                          timeout=60)


def test_a_good_posture_section_validates(elematrix: str, tmp_path: Path) -> None:
    r = _validate(elematrix, tmp_path, RUNBOOK)
    assert r.returncode == 0, r.stderr


def test_posture_mistakes_are_located(elematrix: str, tmp_path: Path) -> None:
    bad = (RUNBOOK.replace("satisfied_by: harden", "satisfied_by: hardn")
           .replace("control: EC2.8", "control: EC2.99")
           .replace("removed_by: ALB, ", "")
           + "")
    r = _validate(elematrix, tmp_path, bad)
    assert r.returncode == 2 and r.stdout == ""
    p = tmp_path / "p.yaml"
    lines = r.stderr.splitlines()
    # An accepted control must say what removes it (schema error, at the control).
    assert any(line.startswith(f"{p}:6:") and "removed_by" in line for line in lines), lines
    # A phase that does not exist, at satisfied_by.
    assert any(line.startswith(f"{p}:5:") and "no phase 'hardn'" in line for line in lines), lines
    # A gate check naming a control the section does not list, at its 'control'.
    assert any(line.startswith(f"{p}:15:") and "EC2.99 is not in the posture" in line
               for line in lines), lines


def _posture() -> Posture:
    return Posture.model_validate({"controls": [
        {"id": "EC2.8", "title": "i", "satisfied_by": "infra",
         "prowler": ["ec2_instance_imdsv2_enabled"]},
        {"id": "SSM.1", "title": "s", "accepted": "later", "satisfied_by": "harden",
         "prowler": ["ec2_instance_managed_by_ssm"]},
        {"id": "EC2.9", "title": "p", "accepted": "POC", "removed_by": "ALB",
         "prowler": ["ec2_instance_public_ip"]}]})


def test_classification_follows_the_phases_that_ran() -> None:
    p = _posture()
    assert classify(p, {"infra"}, "ec2_instance_imdsv2_enabled", "FAIL", [])[0] == "failed"
    assert classify(p, {"infra"}, "ec2_instance_imdsv2_enabled", "PASS", [])[0] == "passed"
    # Accepted until harden ran, then promised.
    assert classify(p, {"infra"}, "ec2_instance_managed_by_ssm", "FAIL", [])[0] == "accepted"
    assert classify(p, {"infra", "harden"}, "ec2_instance_managed_by_ssm", "FAIL",
                    [])[:2] == ("failed", "SSM.1")
    verdict, cid, why = classify(p, {"infra", "harden"}, "ec2_instance_public_ip", "FAIL", [])
    assert (verdict, cid) == ("accepted", "EC2.9") and "POC" in why and "ALB" in why
    # A check the runbook does not name: unexplained, with Prowler's FSBP id.
    assert classify(p, {"infra"}, "s3_bucket_object_lock", "FAIL", ["S3.15"])[:2] == (
        "failed", "S3.15")


def test_only_the_deployments_resources_and_account_settings_count() -> None:
    def result(uid: str, labels: list[str], name: str = "x") -> dict[str, object]:
        return {"metadata": {"event_code": "ec2_instance_public_ip"}, "status_code": "FAIL",
                "resources": [{"uid": uid, "labels": labels, "name": name}],
                "unmapped": {"provider_uid": "123456789012", "compliance": {}}}

    acct = "123456789012"
    out = findings([
        result(f"arn:aws:ec2:us-east-1:{acct}:instance/i-1", ["elematrix:deployment:dep"]),
        result(f"arn:aws:ec2:us-east-1:{acct}:instance/i-2", ["elematrix:deployment:other"]),
        result(f"arn:aws:ec2:us-east-1:{acct}:instance/i-3", []),
        result(f"arn:aws:iam::{acct}:role/elematrix-dep-instance", []),
        result(f"arn:aws:iam::{acct}:root", [], name="<root_account>"),
    ], posture=_posture(), converged={"infra"}, deployment="dep",
        recorded={"elematrix-dep-instance", "i-9"})
    assert [(f.resource.rsplit(":", 1)[-1], f.verdict) for f in out] == [
        ("instance/i-1", "accepted"), ("role/elematrix-dep-instance", "accepted"),
        ("root", "account")]
    assert is_account_level(f"arn:aws:ec2:us-east-1:{acct}:volume", acct, acct)
    assert not is_account_level(f"arn:aws:ec2:us-east-1:{acct}:volume/vol-1", "vol-1", acct)


def test_the_plan_shows_per_phase_what_it_promises_and_accepts(elematrix: str,
                                                               tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(RUNBOOK)
    r = subprocess.run([elematrix, "plan", str(path), "--deployment", "d", "--offline"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    infra, harden = r.stdout.split("Phase harden")
    assert "Posture this phase promises" in infra and "    EC2.8: IMDSv2" in infra
    # Accepted after infra: SSM.1 until harden, EC2.9 for good.
    assert "SSM.1: SSM (accepted: agent comes in harden" in infra
    assert "EC2.9: public ip (accepted: HTTP POC; removed by: ALB)" in infra
    assert "    SSM.1: SSM\n" in harden and "SSM.1: SSM (accepted" not in harden


def test_a_control_whose_option_is_off_is_accepted_with_its_reason(elematrix: str,
                                                                   tmp_path: Path) -> None:
    """``option``/``accepted_when_off`` (poc-ec2's snapshot schedule): promised while the
    bool parameter is on, accepted with its reason when the operator turns it off, in the
    audit's classification and in the plan; an option naming no bool parameter is located."""
    text = RUNBOOK.replace("runbook: p\n", "runbook: p\nparams:\n  - {name: snaps, type: bool, "
                           "default: true}\n").replace(
        "    - {id: EC2.9,", "    - {id: PROWLER.dlm_x, title: snapshots, satisfied_by: infra, "
        "option: snaps, accepted_when_off: \"no schedule: the bucket has the backup\", "
        "prowler: [dlm_x]}\n    - {id: EC2.9,")
    path = tmp_path / "p.yaml"
    path.write_text(text)
    p = Posture.model_validate({"controls": [
        {"id": "PROWLER.dlm_x", "title": "s", "satisfied_by": "infra", "option": "snaps",
         "region_wide": True,
         "accepted_when_off": "no schedule", "prowler": ["dlm_x"]}]})
    assert classify(p, {"infra"}, "dlm_x", "FAIL", [])[0] == "failed"
    assert classify(p, {"infra"}, "dlm_x", "FAIL", [], {"snaps": True})[0] == "failed"
    verdict, _, why = classify(p, {"infra"}, "dlm_x", "FAIL", [], {"snaps": False})
    assert verdict == "accepted" and why == "no schedule; removed by: snaps=true"
    on = subprocess.run([elematrix, "plan", str(path), "--deployment", "d", "--offline"],
                        capture_output=True, text=True, timeout=60)
    assert on.returncode == 0, on.stderr
    assert "    PROWLER.dlm_x: snapshots\n" in on.stdout.split("Phase harden")[0]
    off = subprocess.run([elematrix, "plan", str(path), "--deployment", "d", "--offline",
                          "--set", "snaps=false"], capture_output=True, text=True, timeout=60)
    infra = off.stdout.split("Phase harden")[0]
    assert "    PROWLER.dlm_x: snapshots\n" not in infra
    assert "PROWLER.dlm_x: snapshots (accepted: no schedule: the bucket has the backup; " \
           "removed by: snaps=true)" in infra, infra
    r = _validate(elematrix, tmp_path, text.replace("option: snaps", "option: snapz"))
    assert r.returncode == 2 and "option 'snapz' is not a bool parameter" in r.stderr, r.stderr
    # A Region-wide result (Prowler's DLM check) counts for a region_wide control only.
    region = {"metadata": {"event_code": "dlm_x"}, "status_code": "PASS",
              "resources": [{"uid": "arn:aws:dlm:us-east-1:123456789012:policy",
                             "labels": [], "name": "123456789012"}],
              "unmapped": {"provider_uid": "123456789012", "compliance": {}}}
    assert [(f.control, f.verdict) for f in findings(
        [region], posture=p, converged={"infra"}, deployment="d", recorded=set())] == [
        ("PROWLER.dlm_x", "passed")]
