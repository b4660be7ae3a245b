"""Issue 20 (lower item): ``ssh.upload`` keeps each source file's mode unless a mode is
given, and never widens a private (0600) source through ``default_mode``. Against the
real OpenSSH sshd fixture and the local transport."""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from elematrix_tui.actions.ssh_upload import Upload
from tests.ssh.conftest import TimedContext
from tests.support.sshd import SshServer

_n = itertools.count()


@pytest.fixture(params=["ssh", "local"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SshServer | None,
                                                                             Path]]:
    """The real sshd (a fresh dest dir each time) and the local transport."""
    if request.param == "ssh":
        srv: SshServer = request.getfixturevalue("sshd")
        yield srv, srv.user_dir(f"modes-{os.getpid()}-{next(_n)}")
    else:
        yield None, tmp_path / "local-dest"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _src(ddir: Path) -> Path:
    src = ddir / "keys-and-scripts"
    src.mkdir()
    for name, mode in (("id_ed25519", 0o600), ("id_ed25519.pub", 0o644), ("run.sh", 0o755),
                       ("private.txt", 0o640)):
        (src / name).write_text(f"{name}\n")
        (src / name).chmod(mode)
    return src


def test_upload_keeps_source_modes(ctx: TimedContext,
                                   target: tuple[SshServer | None, Path]) -> None:
    srv, dest = target
    src = _src(ctx.deployment_dir)
    inputs = {**(srv.inputs() if srv else {"host": "local"}), "source": src.name,
              "dest": str(dest)}
    ctx.run(Upload(), inputs)
    assert _mode(dest / "id_ed25519") == 0o600
    assert _mode(dest / "id_ed25519.pub") == 0o644
    assert _mode(dest / "run.sh") == 0o755
    assert _mode(dest / "private.txt") == 0o640
    assert ctx.check(Upload(), inputs).in_sync is True


def test_default_mode_never_widens_a_private_source(
        ctx: TimedContext, target: tuple[SshServer | None, Path]) -> None:
    srv, dest = target
    src = _src(ctx.deployment_dir)
    inputs = {**(srv.inputs() if srv else {"host": "local"}), "source": src.name,
              "dest": str(dest), "default_mode": "0644", "modes": {"run.sh": "0700"}}
    ctx.run(Upload(), inputs)
    assert _mode(dest / "id_ed25519") == 0o600  # private source: group/other stay off
    assert _mode(dest / "id_ed25519.pub") == 0o644
    assert _mode(dest / "private.txt") == 0o640  # 0644 & ~other-bits of a 0640 source
    assert _mode(dest / "run.sh") == 0o700  # a mode named for the file is the author's
    assert any("kept private" in line for _, line in ctx.logs), ctx.logs


@pytest.mark.parametrize("mode", ["644\n", "0644 ", "6440", "0o644", ""])
def test_a_mode_is_the_whole_value(mode: str) -> None:
    """Issue 20 #6, full-match patterns everywhere: a trailing newline passed '$'."""
    from pydantic import ValidationError

    from elematrix_tui.actions.ssh_upload import UploadInputs

    with pytest.raises(ValidationError, match="must be octal"):
        UploadInputs(host="h", source="s", dest="/opt/x", default_mode=mode or "x")
