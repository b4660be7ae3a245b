"""The rehearsal instance itself: real sshd, the REAL docker client and engine behind it,
and the two documented shims (cloud-init, systemctl). No file under tests/ emulates docker."""

from __future__ import annotations

import re
from pathlib import Path

from tests.rehearsal.conftest import Remote
from tests.rehearsal.instance import FakeInstance

TESTS = Path(__file__).resolve().parents[1]


def test_no_file_under_tests_emulates_docker() -> None:
    """A docker shim (an executable named docker, or a PATH entry that answers `docker
    compose` itself) would turn green tests into false evidence again (issue 11)."""
    offenders = []
    for p in TESTS.rglob("*"):
        if p.is_dir() or "__pycache__" in p.parts:
            continue
        if p.name in ("docker", "docker-compose", "docker.py") and p.parent.name == "bin":
            offenders.append(str(p))
        elif p.suffix in ("", ".py", ".sh") and p.is_file():
            text = p.read_text(errors="replace")
            # What the deleted double answered: `docker compose version` with its own banner.
            if re.search(r"Docker Compose version v[0-9.]+ \(", text) and p.name != Path(
                    __file__).name:
                offenders.append(str(p))
    assert not offenders, offenders
    assert not (TESTS / "rehearsal" / "fakehost" / "fakedocker.py").exists()


def test_ec2_user_runs_the_real_docker(fake_instance: FakeInstance, remote: Remote) -> None:
    # Without sudo: the docker group, as user-data's `usermod -aG docker ec2-user` gives it.
    r = remote.ok("command -v docker && docker info --format '{{.ServerVersion}}' && "
                  "docker compose version && id -nG")
    lines = r.text.splitlines()
    assert not lines[0].startswith(str(TESTS)), "docker must be the real client"
    assert "docker" in lines[-1].split()
    assert "Docker Compose version v2" in r.text and "test double" not in r.text
    # With sudo, as the runbook's steps run it; the project name the tests share one engine by.
    r = remote.ok("docker compose version && echo $COMPOSE_PROJECT_NAME", sudo=True)
    assert r.text.split()[-1] == fake_instance.project
    assert remote.ok("cat /var/lib/elematrix/install-path").text.strip() == "preinstalled"


def test_the_shims_say_what_they_are(fake_instance: FakeInstance, remote: Remote) -> None:
    assert remote.ok("cloud-init status --wait").text.strip() == "status: done"
    bad = remote.run("cloud-init init")
    assert bad.rc == 1 and "shim: unsupported" in bad.err
    # A unit's ExecStart runs the real docker (systemctl shim), as root only.
    unit = fake_instance.unit_dir / "probe.service"
    unit.write_text("[Unit]\nRequires=docker.service\n[Service]\nType=oneshot\n"
                    "RemainAfterExit=yes\nWorkingDirectory=/\n"
                    f"ExecStart=/usr/bin/docker info --format '{{{{.ServerVersion}}}}'\n"
                    f"ExecStart=/bin/sh -c 'echo $COMPOSE_PROJECT_NAME > {unit}.ran'\n"
                    "[Install]\nWantedBy=multi-user.target\n")
    denied = remote.run("systemctl start probe.service")
    assert denied.rc == 1 and "Access denied" in denied.err
    remote.ok("systemctl enable --now probe.service && systemctl is-active probe.service",
              sudo=True)
    assert Path(f"{unit}.ran").read_text().strip() == fake_instance.project
    unit.write_text(unit.read_text().replace("docker info", "docker no-such-command"))
    failed = remote.run("systemctl restart probe.service", sudo=True)
    assert failed.rc == 1 and "control process exited with error code" in failed.err
    assert remote.run("systemctl is-active probe.service").text.strip() == "failed"
