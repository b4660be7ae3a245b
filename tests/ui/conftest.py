"""UI test setup: the test runbooks folder, a fake AWS config, and frozen durations."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(autouse=True)
def _ui_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELEMATRIX_RUNBOOK_DIR", str(DATA))
    aws = tmp_path / "aws"
    aws.mkdir()
    (aws / "config").write_text("[default]\nregion = eu-west-1\n\n"
                                "[profile staging]\nregion = eu-central-1\n")
    (aws / "credentials").write_text("[ci-only]\naws_access_key_id = testing\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws / "credentials"))
    # Never reach anything real, even by accident.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")


@pytest.fixture(autouse=True)
def _frozen_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Screens show durations through format.duration: a constant keeps snapshots stable."""
    from elematrix_tui.ui import format as fmt

    monkeypatch.setattr(fmt, "duration", lambda s: "" if s is None else "1.0s")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"

