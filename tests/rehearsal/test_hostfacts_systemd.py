"""systemd.install on the rehearsal instance (real sshd, sudo; systemctl is the rehearsal's
shim, tests/rehearsal/fakehost/shims.py: there is no systemd here). check() reads the unit
file content and ``systemctl is-enabled``/``is-active``; it says in place after apply and
names an edited unit file, a disabled unit and a stopped timer."""

from __future__ import annotations

import json
from pathlib import Path

from elematrix_tui.actions.hostfacts import CHANGE_NOTE
from elematrix_tui.actions.systemd import Install
from elematrix_tui.engine.standalone import StandaloneContext
from tests.rehearsal.instance import FakeInstance

SERVICE = """[Unit]
Description=hostfacts test service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true

[Install]
WantedBy=multi-user.target
"""
TIMER = """[Unit]
Description=hostfacts test timer

[Timer]
OnCalendar=daily

[Install]
WantedBy=timers.target
"""


def _state(inst: FakeInstance) -> dict[str, dict[str, object]]:
    data: dict[str, dict[str, object]] = json.loads(
        (inst.state_root / "systemd.json").read_text())
    return data


def test_systemd_install_reads_the_units(fake_instance: FakeInstance, tmp_path: Path) -> None:
    inst = fake_instance
    src = inst.state_root / "stack" / "systemd"
    src.mkdir(parents=True)
    (src / "hf-test.service").write_text(SERVICE)
    (src / "hf-test.timer").write_text(TIMER)
    ctx = StandaloneContext(deployment_dir=tmp_path / "dep")
    ctx.deployment_dir.mkdir()
    inputs = inst.ssh_inputs(source_dir=str(src), dest_dir=str(inst.unit_dir),
                             units=["hf-test.service", "hf-test.timer"],
                             enable=["hf-test.service", "hf-test.timer"],
                             start=["hf-test.timer"])
    try:
        chk = ctx.check(Install(), inputs)
        assert chk.in_sync is False
        assert chk.changes == [
            f"install {inst.unit_dir}/hf-test.service",
            "enable hf-test.service (it is not-found)",
            f"install {inst.unit_dir}/hf-test.timer",
            "enable hf-test.timer (it is not-found)",
            "start hf-test.timer (it is inactive)"]
        assert ctx.run(Install(), inputs).status == "changed"
        assert (inst.unit_dir / "hf-test.service").read_text() == SERVICE
        st = _state(inst)
        assert st["hf-test.timer"]["active"] is True and st["hf-test.service"]["enabled"]
        assert st["hf-test.service"]["active"] is False  # enabled, not started
        chk = ctx.check(Install(), inputs)
        assert chk.in_sync is True, chk.changes
        assert chk.outputs["units"] == {"hf-test.service": "enabled/inactive",
                                        "hf-test.timer": "enabled/active"}
        ctx.notes.clear()
        reloads = _state(inst)["_"]["reloads"]
        assert ctx.run(Install(), inputs).status == "ok"
        assert [k for k, _ in ctx.notes if k == CHANGE_NOTE] == []
        assert _state(inst)["_"]["reloads"] == reloads  # not even a daemon-reload

        # Planted drift: an edited installed unit file, a disabled service.
        (inst.unit_dir / "hf-test.timer").write_text(TIMER.replace("daily", "weekly"))
        (inst.unit_dir / "hf-test.timer").chmod(0o600)
        st = _state(inst)
        st["hf-test.service"]["enabled"] = False
        (inst.state_root / "systemd.json").write_text(json.dumps(st))
        chk = ctx.check(Install(), inputs)
        assert chk.changes == ["enable hf-test.service (it is disabled)",
                               f"update {inst.unit_dir}/hf-test.timer (content differs)",
                               "restart hf-test.timer (its unit file changed)"]
        r = ctx.run(Install(), inputs)
        assert r.status == "changed" and r.outputs["changes"] == chk.changes
        assert (inst.unit_dir / "hf-test.timer").read_text() == TIMER
        assert (inst.unit_dir / "hf-test.timer").stat().st_mode & 0o777 == 0o644
        assert ctx.check(Install(), inputs).in_sync is True
    finally:
        ctx.close()
