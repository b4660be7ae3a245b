"""The ssh.* and http.check actions through the real runner: `elematrix run ... --yes`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.ssh.test_upload_forward import loopback_service  # noqa: F401 - a fixture
from tests.support.sshd import SshServer

CONN = """host: "{{ params.host }}"
          port: "{{ params.port }}"
          user: "{{ params.user }}"
          key_path: "{{ params.key }}"
          host_key_fingerprints: "{{ params.fingerprints }}"
"""

RUNBOOK = """runbook: ssh-cli
title: ssh actions through the real runner
params:
  - {name: host, type: string}
  - {name: port, type: int}
  - {name: user, type: string}
  - {name: key, type: string}
  - {name: fingerprints, type: string, default: ""}
  - {name: stack, type: string}
  - {name: dest, type: string}
  - {name: service_port, type: int}
phases:
  - id: deploy
    steps:
      - id: upload
        action: ssh.upload
        with:
          @CONN@
          source: "{{ params.stack }}"
          dest: "{{ params.dest }}"
          modes: {"secret.env": "0600"}
      - id: mode
        action: ssh.run
        with:
          @CONN@
          command: "stat -c %a {{ params.dest }}/secret.env"
          expect_output: "600"
          read_only: true
      - id: tunnel
        action: ssh.forward
        with:
          @CONN@
          remote_port: "{{ params.service_port }}"
    gates:
      - id: via_tunnel
        action: http.check
        with:
          url: "{{ steps.tunnel.url }}/_synapse/admin/v1/server_version"
          json: {server: loopback-only}
""".replace("@CONN@", CONN.strip())


def _run(elematrix: str, rb: Path, srv: SshServer, stack: Path, dest: Path, service: int,
         fingerprints: str, deployment: str = "sshcli") -> subprocess.CompletedProcess[str]:
    args = [elematrix, "run", str(rb), "--deployment", deployment, "--yes",
            "--set", f"host={srv.host}", "--set", f"port={srv.port}",
            "--set", f"user={srv.user}", "--set", f"key={srv.key_path}",
            "--set", f"stack={stack}", "--set", f"dest={dest}",
            "--set", f"service_port={service}"]
    if fingerprints:
        args += ["--set", f"fingerprints={fingerprints}"]
    return subprocess.run(args, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_run_upload_forward_and_gate_headless(elematrix: str, sshd: SshServer, tmp_path: Path,
                                              loopback_service: int) -> None:  # noqa: F811
    rb = tmp_path / "ssh-cli.yaml"
    rb.write_text(RUNBOOK)
    # Uploads come only from the deployment's own directory (engine/containment.py).
    for dep in ("sshcli", "fresh"):
        src = Path(os.environ["ELEMATRIX_STATE_DIR"]) / "deployments" / dep / "stack"
        src.mkdir(parents=True)
        (src / "compose.yaml").write_text("services: {}\n")
        (src / "secret.env").write_text("PASSWORD=hunter2\n")
    stack = Path("stack")
    dest = sshd.user_dir(f"cli-{tmp_path.name}")
    pins = ",".join(sshd.fingerprints)

    res = _run(elematrix, rb, sshd, stack, dest, loopback_service, pins)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "forwarding http://127.0.0.1:" in out
    assert (dest / "secret.env").stat().st_mode & 0o777 == 0o600
    assert "hunter2" not in out

    # Again: the upload finds nothing to change (check says in sync).
    res = _run(elematrix, rb, sshd, stack, dest, loopback_service, pins)
    assert res.returncode == 0, res.stdout + res.stderr

    # The deployment remembers the pinned keys: later runs need not pass them again.
    res = _run(elematrix, rb, sshd, stack, dest, loopback_service, "")
    assert res.returncode == 0, res.stdout + res.stderr

    # A new deployment, headless with --yes and no fingerprints: refused, never trusted on
    # first use.
    res = _run(elematrix, rb, sshd, stack, tmp_path / "other", loopback_service, "",
               deployment="fresh")
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "not accepted" in out or "not pinned" in out
    assert not (tmp_path / "other").exists()
