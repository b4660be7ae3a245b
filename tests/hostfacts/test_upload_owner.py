"""ssh.upload with owners, over the real sshd (sudo as on AL2023): check compares content,
mode and owner on the host, says in place after apply, and names a planted wrong owner."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from elematrix_tui.actions.hostfacts import CHANGE_NOTE
from elematrix_tui.actions.ssh_upload import Upload
from elematrix_tui.engine.standalone import StandaloneContext
from tests.support.sshd import SshServer


@pytest.fixture
def dest() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="hostfacts-up-"))
    os.chmod(d, 0o755)
    yield d / "stack"
    shutil.rmtree(d, ignore_errors=True)


def _owner(p: Path) -> str:
    st = p.stat()
    return f"{st.st_uid}:{st.st_gid}"


def test_owner_is_a_fact_of_the_upload(sshd: SshServer, ctx: StandaloneContext,
                                       dest: Path) -> None:
    src = ctx.deployment_dir / "stack"
    (src / "synapse").mkdir(parents=True)
    (src / "synapse" / "homeserver.yaml").write_text("server_name: x\n")
    (src / "compose.yaml").write_text("services: {}\n")
    inputs = sshd.inputs(source="stack", dest=str(dest), sudo=True,
                         modes={"synapse/homeserver.yaml": "0600"},
                         owners={"synapse/*": "991:991"})
    chk = ctx.check(Upload(), inputs)
    assert chk.in_sync is False
    assert f"create {dest}/synapse/homeserver.yaml (mode 0600, owner 991:991)" in chk.changes
    assert f"create {dest}/compose.yaml (mode 0644)" in chk.changes

    assert ctx.run(Upload(), inputs).status == "changed"
    assert _owner(dest / "synapse" / "homeserver.yaml") == "991:991"
    assert _owner(dest / "compose.yaml") == "0:0"  # not managed: root wrote it
    assert ctx.check(Upload(), inputs).in_sync is True

    # Planted drift: the wrong owner (the 'chown 991' Synapse needs before it starts).
    os.chown(dest / "synapse" / "homeserver.yaml", 0, 0)
    chk = ctx.check(Upload(), inputs)
    assert chk.changes == [f"chmod {dest}/synapse/homeserver.yaml to 0600, owner 991:991"]
    ctx.notes.clear()
    r = ctx.run(Upload(), inputs)
    assert r.status == "changed" and r.outputs["chmodded"] == ["synapse/homeserver.yaml"]
    assert _owner(dest / "synapse" / "homeserver.yaml") == "991:991"
    assert (dest / "synapse" / "homeserver.yaml").stat().st_mode & 0o777 == 0o600
    assert [k for k, _ in ctx.notes if k == CHANGE_NOTE] == ["host.change"]
    ctx.notes.clear()
    assert ctx.run(Upload(), inputs).status == "ok"
    assert [k for k, _ in ctx.notes if k == CHANGE_NOTE] == []


def test_owner_needs_sudo_and_numbers(sshd: SshServer) -> None:
    base = sshd.inputs(source="stack", dest="/tmp/x")
    with pytest.raises(ValidationError, match="need sudo"):
        Upload.Inputs.model_validate({**base, "owner": "991:991"})
    with pytest.raises(ValidationError, match="numeric"):
        Upload.Inputs.model_validate({**base, "sudo": True, "owners": {"*": "synapse"}})
