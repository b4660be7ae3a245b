"""What practice decides about this machine before deploy (no engine needed): the reason it
gives when the deploy phase cannot run here, and what the local host steps get."""

from __future__ import annotations

from pathlib import Path

import pytest

from elematrix_tui import practice


def test_each_missing_part_has_its_own_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(practice, "docker_answers", lambda: False)
    assert practice.host_problem() == practice.NO_DOCKER
    monkeypatch.setattr(practice, "docker_answers", lambda: True)
    monkeypatch.setattr(practice.os, "geteuid", lambda: 1000)
    assert practice.host_problem() == practice.NOT_ROOT
    monkeypatch.setattr(practice.os, "geteuid", lambda: 0)
    monkeypatch.setattr(practice, "aws_cli", lambda: None)
    assert practice.host_problem() == practice.NO_AWS_CLI
    monkeypatch.setattr(practice, "aws_cli", lambda: "/opt/aws/bin/aws")
    assert practice.host_problem() is None


def test_local_host_params_and_environment(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    monkeypatch.setattr(practice, "aws_cli", lambda: "/opt/aws/bin/aws")
    ddir = tmp_path / "deployments" / "practice"
    params = practice.practice_params(ddir, local_host=True)
    assert params["host_transport"] == "local"
    assert params["remote_dir"] == str(ddir / "host" / "stack")
    # Remembered: the running practice stack holds the port on the next start.
    assert practice.practice_params(ddir, local_host=True)["http_port"] == params["http_port"]
    assert practice.practice_params(ddir, local_host=True)["admin_port"] == params["admin_port"]
    env = practice.prepare_host("practice", ddir)
    assert env["COMPOSE_PROJECT_NAME"] == "elematrix-practice"
    assert env["PATH"].startswith("/opt/aws/bin:")
    assert "remote_dir" not in practice.practice_params(ddir)  # no deploy: nothing local


def test_a_second_practice_deployment_gets_another_admin_port(tmp_path: Path) -> None:
    """Synapse's admin API of the first practice stack holds its port: the second
    deployment's stack is given another, on the loopback, and keeps it."""
    import socket

    first = practice.practice_admin_port(tmp_path / "a")
    with socket.socket() as held:  # the first stack's published admin port
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", first))
        held.listen()
        second = practice.practice_admin_port(tmp_path / "b")
    assert second != first and (second == 8008 or 8010 <= second < 8030)
    assert practice.practice_admin_port(tmp_path / "b") == second
