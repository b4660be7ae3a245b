"""The restore runbook's own actions, in-process (the rehearsal test runs the whole runbook).

- deploy.recorded: a second runbook of the same deployment reads what the first recorded,
  through the real runner and journal; a value nobody recorded fails with what to run.
- restore.pick: `restore.sh --list` lines (assets/stack/restore.sh.j2: "<prefix> <bytes>",
  complete backups only, oldest first) become the chosen backup with size and age.
"""

from __future__ import annotations

import calendar
import time
from pathlib import Path

import pytest

from elematrix_tui.actions.restore import Pick, PickInputs, human_age, human_size
from elematrix_tui.engine.action import ActionFailed
from elematrix_tui.engine.standalone import StandaloneContext
from tests.engine.helpers import make_runner, write_runbook

FIRST = """
runbook: first
title: records an address
version: 1
phases:
  - id: p
    title: p
    steps:
      - id: address
        title: an address
        action: local.noop
        with: {outputs: {public_ip: 192.0.2.7}}
"""

SECOND = """
runbook: second
title: reads it
version: 1
phases:
  - id: p
    title: p
    steps:
      - id: deployed
        title: recorded
        action: deploy.recorded
        with:
          values: {ip: address.public_ip, dns: address.public_dns}
          optional: [dns]
      - id: use
        title: use it
        action: local.noop
        with: {outputs: {seen: "{{ steps.deployed.ip }}"}}
"""


def test_recorded_reads_an_earlier_runbooks_outputs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    r1, _ = make_runner(write_runbook(tmp_path, FIRST, "first.yaml"), state, deployment="dd")
    assert r1.run() == 0
    r2, _ = make_runner(write_runbook(tmp_path, SECOND, "second.yaml"), state, deployment="dd")
    assert r2.run() == 0
    assert r2.outputs["use"] == {"seen": "192.0.2.7"}
    assert r2.outputs["deployed"] == {"ip": "192.0.2.7", "dns": None}


def test_recorded_fails_on_a_deployment_that_never_deployed(tmp_path: Path) -> None:
    r, sink = make_runner(write_runbook(tmp_path, SECOND, "second.yaml"), tmp_path / "s",
                          deployment="empty")
    assert r.run() != 0
    text = " ".join(str(e) for e in sink.events)
    assert "has no recorded ip (address.public_ip)" in text and "elematrix run poc-ec2" in text


def _stamp(t: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))


def test_pick_latest_and_named_with_size_and_age(tmp_path: Path) -> None:
    now = time.time()
    old, new = _stamp(now - 7200), _stamp(now - 90)
    listing = f"prod/{old} 1048576\nprod/{new} 2048\nnoise line\n"
    ctx = StandaloneContext(deployment_dir=tmp_path, deployment="prod")
    latest = Pick().apply(ctx, PickInputs(listing=listing, deployment="prod")).outputs
    assert latest["prefix"] == f"prod/{new}" and latest["size"] == "2.0 KiB"
    assert 85 <= latest["rpo_s"] <= 100 and latest["count"] == 2
    assert latest["summary"].startswith(f"prod/{new} (2.0 KiB, taken ")
    named = Pick().apply(ctx, PickInputs(listing=listing, backup=old, deployment="prod")).outputs
    assert named["prefix"] == f"prod/{old}" and named["size"] == "1.0 MiB"
    assert named["created"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(
        calendar.timegm(time.strptime(old, "%Y%m%dT%H%M%SZ"))))
    assert any(f"prod/{old}" in line for _, line in ctx.logs)


def test_pick_refuses_an_unknown_backup_and_an_empty_bucket(tmp_path: Path) -> None:
    ctx = StandaloneContext(deployment_dir=tmp_path, deployment="prod")
    with pytest.raises(ActionFailed, match="not a complete backup"):
        Pick().apply(ctx, PickInputs(listing="prod/20260101T000000Z 10\n",
                                     backup="prod/20250101T000000Z", deployment="prod"))
    with pytest.raises(ActionFailed, match="no complete backup"):
        Pick().apply(ctx, PickInputs(listing="", deployment="prod"))


def test_human_units() -> None:
    assert (human_size(10), human_size(1536), human_size(5 * 1024**3)) == (
        "10 B", "1.5 KiB", "5.0 GiB")
    assert (human_age(5), human_age(600), human_age(3 * 3600), human_age(3 * 86400)) == (
        "5 s", "10 min", "3 h", "3 d")
