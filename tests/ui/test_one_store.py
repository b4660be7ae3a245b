"""One runbook catalogue and one parameter store for the CLI and the TUI (issue 14, #3).

- A runbook only in ``ELEMATRIX_RUNBOOK_DIR`` is found by name by ``elematrix plan NAME``,
  ``elematrix run NAME`` and the TUI's start screen (the CLI used to look only in the
  config dir's ``runbooks/``).
- The TUI keeps a deployment's settings in its journal, where the CLI's remembered
  parameters are. ``data/legacy-tui.json`` was written by the TUI before this change
  (``ElematrixApp.save_deployment`` of commit e7c9b92, the ``ui-flow`` runbook, runbook
  path ``@DATA@/ui-flow.yaml``: the one placeholder this test fills in); it is migrated
  once into the journal and never written again.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from elematrix_tui.engine.journal import Journal
from elematrix_tui.engine.settings import META_CHOICES, META_PARAMS
from elematrix_tui.ui import catalog
from elematrix_tui.ui.app import ElematrixApp
from elematrix_tui.ui.screens.run import RunScreen
from elematrix_tui.ui.screens.start import StartScreen

from .conftest import DATA
from .helpers import FakeFactory, wait_for

MINE = """runbook: only-mine
title: A runbook only in ELEMATRIX_RUNBOOK_DIR
params:
  - {name: out, type: string, help: where to write}
phases:
  - id: one
    steps:
      - {id: w, action: local.write, with: {path: "{{ params.out }}/mine.txt", content: hi}}
"""
SECRET = "never-in-a-file-0123456789"


def _legacy(state_dir: Path, name: str = "legacy") -> Path:
    d = state_dir / "deployments" / name
    d.mkdir(parents=True, exist_ok=True)
    path = d / "tui.json"
    path.write_text((DATA / "legacy-tui.json").read_text().replace("@DATA@", str(DATA)))
    return path


def _meta(state_dir: Path, name: str) -> dict[str, object]:
    j = Journal.open(state_dir, name)
    try:
        return j.meta()
    finally:
        j.close()


# -- the catalogue -------------------------------------------------------------------------
@pytest.fixture
def my_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "my-runbooks"
    d.mkdir()
    (d / "only-mine.yaml").write_text(MINE)
    monkeypatch.setenv("ELEMATRIX_RUNBOOK_DIR", str(d))
    return d


def test_the_cli_finds_a_runbook_of_elematrix_runbook_dir_by_name(
        elematrix: str, my_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ)
    plan = subprocess.run([elematrix, "plan", "only-mine", "--deployment", "mine", "--set",
                           f"out={out}"], capture_output=True, text=True, timeout=60, env=env)
    # Only that it is found: the plan's own rendering is the plan command's business.
    assert plan.returncode == 0, plan.stderr
    ran = subprocess.run([elematrix, "run", "only-mine", "--deployment", "mine", "--set",
                          f"out={out}", "--yes"], capture_output=True, text=True, timeout=60,
                         env=env)
    assert ran.returncode == 0, ran.stderr
    assert (out / "mine.txt").read_text() == "hi"
    # The same name in both places is refused, as it was for the config dir (exit 2).
    (my_dir / "teardown.yaml").write_text(MINE)
    both = subprocess.run([elematrix, "plan", "teardown", "--deployment", "mine"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert both.returncode == 2 and "refusing to guess" in both.stderr


@pytest.mark.anyio
async def test_the_start_screen_lists_the_same_runbook(my_dir: Path, state_dir: Path) -> None:
    app = ElematrixApp(state_dir, runner_factory=FakeFactory(lambda r: 0))
    async with app.run_test(size=(110, 36)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, StartScreen), what="start")
        screen = app.screen
        assert isinstance(screen, StartScreen)
        mine = [r for r in screen.runbooks if r.name == "only-mine"]
        assert [(r.path, r.source) for r in mine] == [(my_dir / "only-mine.yaml", "user")]


# -- the parameter store -------------------------------------------------------------------
def test_an_old_tui_json_is_migrated_once_into_the_journal(state_dir: Path) -> None:
    legacy = _legacy(state_dir)
    written = json.loads(legacy.read_text())
    [entry] = catalog.list_deployments(state_dir)
    assert entry.runbook == "ui-flow" and entry.runbook_path == DATA / "ui-flow.yaml"
    assert entry.settings["params"] == written["params"]
    assert entry.settings["aws_profile"] == "staging"
    assert not legacy.exists() and legacy.with_name("tui.json.migrated").exists()
    meta = _meta(state_dir, "legacy")
    assert meta[META_PARAMS] == written["params"]
    assert meta[META_CHOICES] == {k: written[k] for k in
                                  ("runbook_name", "runbook_path", "aws_profile", "aws_region")}
    # Once: the migrated file is not read again (a value changed in it is not taken).
    moved = legacy.with_name("tui.json.migrated")
    moved.write_text(moved.read_text().replace("legacy.example.org", "other.example.org"))
    assert catalog.read_settings(state_dir, "legacy")["params"]["server_name"] == \
        "legacy.example.org"


def test_the_old_values_win_over_remembered_ones_and_others_are_kept(state_dir: Path) -> None:
    j = Journal.open(state_dir, "legacy")
    j.set_meta(META_PARAMS, {"operator_cidr": "198.51.100.9/32", "kept_from_teardown": "x"})
    j.close()
    _legacy(state_dir)
    params = catalog.read_settings(state_dir, "legacy")["params"]
    assert params["operator_cidr"] == "203.0.113.7/32"  # the TUI passed it to every run
    assert params["kept_from_teardown"] == "x"


def test_a_secret_never_reaches_the_store(state_dir: Path) -> None:
    # A hand-edited tui.json with a stored secret's value: dropped on migration.
    j = Journal.open(state_dir, "legacy")
    j.set_meta("secret_names", ["admin_password"])
    j.close()
    legacy = _legacy(state_dir)
    data = json.loads(legacy.read_text())
    data["params"]["admin_password"] = SECRET
    legacy.write_text(json.dumps(data))
    assert "admin_password" not in catalog.read_settings(state_dir, "legacy")["params"]
    # The TUI's own writes drop the runbook's secret (and one-shot) values.
    rb = catalog.load_runbook_file(DATA / "ui-flow.yaml")
    catalog.write_settings(state_dir, "fresh", {"runbook_name": "ui-flow", "params": {
        "server_name": "fresh.example.org", "admin_password": SECRET}}, runbook=rb)
    assert catalog.read_settings(state_dir, "fresh")["params"] == {
        "server_name": "fresh.example.org"}
    for path in (state_dir / "deployments").rglob("*"):
        if path.is_file() and not path.name.startswith("tui.json"):
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.anyio
async def test_the_tui_opens_a_migrated_deployment_and_never_writes_tui_json(
        state_dir: Path) -> None:
    legacy = _legacy(state_dir)
    app = ElematrixApp(state_dir, deployment="legacy", runner_factory=FakeFactory(lambda r: 0))
    async with app.run_test(size=(110, 36)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen), what="run screen")
        screen = app.screen
        assert isinstance(screen, RunScreen)
        assert screen.params["server_name"] == "legacy.example.org"
        assert screen.params["workers"] == 3
        # Edited parameters go to the journal; a cleared optional one is forgotten.
        edited = {**screen.params, "workers": 5}
        edited.pop("size")
        screen.services.save_params("legacy", screen.runbook, screen.runbook_path, edited)
    assert not legacy.exists()
    params = catalog.read_settings(state_dir, "legacy")["params"]
    assert params["workers"] == 5 and "size" not in params
    assert not legacy.exists()
