"""Bring your own stack, on the rehearsal instance: an operator's TLS-built stack
(tests/stack/tls_stack.py) deployed through poc-ec2's stack_source, infra + configure +
deploy, the real `elematrix` command, the FakeInstance over real sshd and the real Docker
engine (the instance holds ``stack_lock()`` while it is up). It must come up HTTP-only and
pass the deploy phase's gates (the E2EE gate, the backup in the bucket); a second run
shows an empty diff, and the operator's directory never changes.

The stack has no backup.sh, restore.sh or systemd units of its own, and keeps Synapse's
config in ``matrix-config/``, not the bundled ``synapse/``: the adapted copy gets the
product's operational files rendered from its layout (stack/layout.py), and what Synapse
mounts gets uid 991 on the host.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.rehearsal.instance import FakeInstance
from tests.rehearsal.test_rehearsal import RUNBOOK, _env, _params, _report
from tests.stack.tls_stack import write_tls_stack

DEPLOYMENT = "byo"
ACCOUNT = "123456789012"  # moto's account id


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _run(args: list[str], env: dict[str, str], log: Path) -> subprocess.CompletedProcess[str]:
    # Through a file, so a run that hangs leaves its log behind.
    with log.open("w") as out:
        rc = subprocess.run(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                            timeout=600).returncode
    return subprocess.CompletedProcess(args, rc, log.read_text(), "")


def test_operator_tls_stack_deploys_http_only(elematrix: str, instance: FakeInstance,
                                              aws_env: dict[str, str],
                                              tmp_path: Path) -> None:
    env = _env(aws_env)
    remote_dir = str(tmp_path / "opt" / "elematrix")
    src = tmp_path / "my-tls-stack"
    # Built for this host as the operator built theirs: its bucket, region, directory.
    write_tls_stack(src, {"server_name": "rehearsal.test", "public_address": instance.host,
                          "deployment": DEPLOYMENT, "remote_dir": remote_dir,
                          "backup_bucket": f"elematrix-{DEPLOYMENT}-{ACCOUNT}",
                          "aws_region": "us-east-1"}, config_dir="matrix-config")
    assert not (src / "backup.sh").exists() and not (src / "systemd").exists()
    before = _snapshot(src)
    args = [elematrix, "run", str(RUNBOOK), "--deployment", DEPLOYMENT, "--yes",
            "--phase", "infra", "--phase", "configure", "--phase", "deploy",
            *_params(instance, tmp_path), "--set", f"stack_source={src}"]
    res = _run(args, env, tmp_path / "run1.log")
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    assert "-    listen 443 ssl default_server;" in res.stdout
    report = _report(elematrix, env, DEPLOYMENT)
    ran = {s["step"]: s["status"] for s in report["steps"]}
    assert ran["render"] == "skipped" and ran["adapt"] == "changed", ran
    gates = {g["gate_id"]: g["passed"] for g in report["gates"]}
    assert gates["doctor_clean"] and gates["e2ee"] and gates["backup_in_bucket"], gates
    # HTTP-only on the host: no 443, no certbot.
    import yaml

    compose = yaml.safe_load((Path(remote_dir) / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"postgres", "synapse", "element", "nginx"}
    assert not any("443" in str(p) for p in compose["services"]["nginx"]["ports"])
    # The operational files came from the adaptation, rendered for this stack's layout.
    remote = Path(remote_dir)
    assert "matrix-config" in (remote / "systemd" / "elematrix-stack.service").read_text()
    assert "./matrix-config/homeserver.yaml" in (remote / "restore.sh").read_text()
    hs = remote / "matrix-config" / "homeserver.yaml"
    assert (hs.stat().st_uid, hs.stat().st_mode & 0o777) == (991, 0o600)
    assert _snapshot(src) == before

    again = _run(args, env, tmp_path / "run2.log")
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr[-3000:]
    assert "+++ b/" not in again.stdout
    assert _snapshot(src) == before
