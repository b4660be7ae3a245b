"""Issue 20 #11 without a regression: a deployment this run itself changed is 'seen'.

The rule (a destructive step of a deployment this state dir never saw wants the typed
name, even with --yes) was decided once at run start, so practice's own run (infra
creates everything, harden then closes port 22) stopped at close_ssh: 'needs the
deployment name typed, which --yes does not do'. The run's own changes count."""

from __future__ import annotations

import io
from pathlib import Path

from elematrix_tui.actions import default_registry
from elematrix_tui.engine import events as ev
from elematrix_tui.engine.loader import load_runbook
from elematrix_tui.engine.runner import Runner, RunOptions
from elematrix_tui.headless import HeadlessQuestions
from tests.engine.helpers import Collect, write_runbook

RUNBOOK = """
runbook: seen-here
title: Build, then a destructive step
params:
  - {name: out_dir, type: string, help: where the steps write}
phases:
  - id: build
    title: Build
    steps:
      - id: make
        title: Make the thing
        action: local.write
        with: {path: "{{ params.out_dir }}/made", content: "x"}
    gates:
      - id: built
        action: local.noop
        with: {outputs: {ok: true}}
        expect: {ok: true}
  - id: close
    title: Close
    steps:
      - id: remove
        title: Remove the thing's door
        action: local.write
        destructive: true
        with: {path: "{{ params.out_dir }}/closed", content: "y"}
"""


# The destructive step first: nothing has changed for the deployment when it asks.
DESTRUCTIVE_FIRST = RUNBOOK.replace("      - id: make\n        title: Make the thing\n"
                                    "        action: local.write\n"
                                    "        with: {path: \"{{ params.out_dir }}/made\", "
                                    "content: \"x\"}\n", "", 1).replace(
    "    steps:\n", "    steps:\n      - id: early\n        title: Remove early\n"
    "        action: local.write\n        destructive: true\n"
    "        with: {path: \"{{ params.out_dir }}/early\", content: \"z\"}\n", 1)


def _run(tmp_path: Path, text: str) -> tuple[int, Collect, str]:
    path = write_runbook(tmp_path, text)
    out = io.StringIO()
    questions = HeadlessQuestions(assume_yes=True)
    questions.interactive = False  # as under CI: nobody can type the name
    questions.out = out
    sink = Collect()
    runner = Runner(load_runbook(path, default_registry()), deployment="fresh",
                    state_dir=tmp_path / "state", params={"out_dir": str(tmp_path / "out")},
                    questions=questions, sinks=[sink], registry=default_registry(),
                    options=RunOptions(assume_yes=True), runbook_path=path)
    return runner.run(), sink, out.getvalue()


def test_a_destructive_step_after_this_run_built_the_deployment_goes_on_with_yes(
        tmp_path: Path) -> None:
    code, sink, out = _run(tmp_path, RUNBOOK)
    assert code == 0, (out, sink.of(ev.StepFinished))
    assert (tmp_path / "out" / "closed").read_text() == "y"
    assert "needs the deployment name typed" not in out


def test_a_destructive_step_before_any_change_still_wants_the_name(
        tmp_path: Path) -> None:
    code, _sink, out = _run(tmp_path, DESTRUCTIVE_FIRST)
    assert code != 0
    assert not (tmp_path / "out" / "early").exists()
    assert "needs the deployment name typed" in out
