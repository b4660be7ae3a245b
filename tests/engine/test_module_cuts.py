"""The large action modules were cut into packages: every public name of the old single
files is still importable from the old module path (other modules and runbooks' action
paths import them), and importing them still loads no SDK."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

# The public names of each module before the cut (git show e7c9b92:elematrix_tui/actions/*).
BEFORE = {
    "aws_kinds": [
        "asset_text", "asset_json", "Spec", "Found", "Kind", "Rule", "SecurityGroupSpec",
        "SecurityGroup", "IngressAbsentSpec", "IngressAbsent", "KeyPairSpec", "KeyPair",
        "RoleSpec", "Role", "InstanceProfileSpec", "InstanceProfile", "BucketSpec",
        "LC_NONCURRENT", "LC_CURRENT", "Bucket", "EipSpec", "ElasticIp", "EipAssociationSpec",
        "EipAssociation", "InstanceSpec", "launch_token", "Instance", "TopicSpec", "Topic",
        "LogGroupsSpec", "LogGroups", "AlarmDef", "AlarmsSpec", "alarm_drift", "Alarms",
        "SsmParameterSpec", "SsmParameter", "OpSpec", "GenericSpec", "Generic", "KINDS"],
    "sshconn": [
        "LOCAL", "DEFAULT_USER", "DEFAULT_PORT", "OUTPUT_CAP", "FP_RE", "BLOCK_RE",
        "INFRA_HOST_KEYS", "ENV_NAME_RE", "LineSink", "parse_fingerprints", "key_fingerprint",
        "Target", "ssh_config_path", "resolve_target", "HostKeyProblem", "ExecResult",
        "Connection", "SshConnection", "ChannelOpenError", "LocalConnection",
        "open_connection", "connection", "Forwarder"],
    "matrix_checks": [
        "MEGOLM", "MIB", "UPLOAD_PATH", "PROBE_BYTES", "WELL_KNOWN_SERVER_RE", "CHECKS",
        "CHECK_NAMES", "Diagnosis", "DIAGNOSES", "diagnosis", "CheckFailed", "classify",
        "norm_url", "element_e2ee_warning", "Outcome", "Settings", "Gate", "summary"],
    "aws": [
        "AL2023_PARAMETER", "BEGIN_KEYS", "END_KEYS", "META_HOST_KEYS", "CallInputs", "Call",
        "EnsureInputs", "Ensure", "WaitInputs", "parse_host_keys", "Wait", "AssertCheck",
        "AssertInputs", "Assert", "PreflightInputs", "Preflight", "TeardownInputs",
        "Teardown"],
}


@pytest.mark.parametrize("module", sorted(BEFORE))
def test_every_public_name_is_still_importable(module: str) -> None:
    mod = importlib.import_module(f"elematrix_tui.actions.{module}")
    missing = [n for n in BEFORE[module] if not hasattr(mod, n)]
    assert missing == []


def test_the_registry_still_finds_every_action() -> None:
    from elematrix_tui.actions import default_registry

    reg = default_registry()
    for name in reg.names():
        assert reg.get(name).name == name


def test_the_cut_modules_load_no_sdk() -> None:
    code = ("import sys, elematrix_tui.actions.aws_kinds, elematrix_tui.actions.sshconn, "
            "elematrix_tui.actions.aws\n"
            "print([m for m in ('boto3', 'botocore', 'paramiko', 'nio', 'moto') "
            "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
