"""Steps that overlap when ``needs:`` lets them (engine/schedule.py, Runner._run_steps_concurrently)."""

from __future__ import annotations

from pathlib import Path

import pytest

from elematrix_tui.actions import default_registry
from elematrix_tui.engine import events as ev
from elematrix_tui.engine.errors import RunbookError
from elematrix_tui.engine.loader import load_runbook
from elematrix_tui.engine.schedule import dependencies

from .helpers import make_runner, write_runbook

RB = """
runbook: overlap
phases:
  - id: one
    steps:
      - {id: a, action: local.sleep, with: {seconds: 0.6}}
      - {id: b, action: local.sleep, needs: [], with: {seconds: 0.6}}
      - {id: c, action: local.noop, needs: [], with: {outputs: {v: "{{ steps.a.slept }}"}}}
      - {id: d, action: local.sleep, needs: [b], with: {seconds: 0.1}}
      - {id: e, action: local.noop}
    gates:
      - {id: g, action: local.noop}
"""


def _spans(events: list[ev.Event]) -> dict[str, tuple[float, float]]:
    starts = {e.step_id: e.ts for e in events if isinstance(e, ev.StepStarted)}
    return {e.step_id: (starts[e.step_id], e.ts) for e in events
            if isinstance(e, ev.StepFinished)}


def test_dependencies_from_needs_and_expressions(tmp_path: Path) -> None:
    rb = load_runbook(write_runbook(tmp_path, RB), default_registry())
    assert dependencies(rb.phases[0]) == {"a": [], "b": [], "c": ["a"], "d": ["b"],
                                          "e": ["a", "b", "c", "d"]}


def test_independent_steps_overlap_and_the_rest_waits(tmp_path: Path, state_dir: Path) -> None:
    runner, sink = make_runner(write_runbook(tmp_path, RB), state_dir)
    assert runner.run() == 0
    spans = _spans(sink.events)
    assert spans["b"][0] < spans["a"][1] and spans["a"][0] < spans["b"][1]  # a and b overlap
    assert spans["c"][0] >= spans["a"][1]  # its expression reads a
    assert spans["d"][0] >= spans["b"][1]  # needs: [b]
    assert spans["e"][0] >= max(spans[s][1] for s in "abcd")  # no needs: waits for all
    assert spans["g"][0] >= spans["e"][1]  # gates close the phase
    # Each step is journaled once, started then finished, as in the sequential loop.
    assert [e.step_id for e in sink.of(ev.StepFinished)].count("a") == 1
    assert sink.statuses() == {s: "ok" for s in "abcdeg"}


def test_parallel_1_runs_in_runbook_order(tmp_path: Path, state_dir: Path) -> None:
    runner, sink = make_runner(write_runbook(tmp_path, RB), state_dir, parallel=1)
    assert runner.run() == 0
    assert [e.step_id for e in sink.of(ev.StepStarted)] == list("abcdeg")


def test_a_step_that_asks_runs_alone(tmp_path: Path, state_dir: Path) -> None:
    text = """
runbook: asks
phases:
  - id: one
    steps:
      - {id: a, action: local.sleep, with: {seconds: 0.4}}
      - {id: ask, action: local.write, needs: [], confirm: true, with: {path: "{{ deployment_dir }}/x", content: "x"}}
      - {id: b, action: local.sleep, needs: [], with: {seconds: 0.4}}
"""
    runner, sink = make_runner(write_runbook(tmp_path, text), state_dir)
    assert runner.run() == 0
    spans = _spans(sink.events)
    assert spans["ask"][0] >= spans["a"][1]  # waited for a to finish
    assert spans["b"][0] >= spans["ask"][1]  # nothing started beside it


def test_a_failure_starts_nothing_new_and_running_steps_finish(tmp_path: Path,
                                                              state_dir: Path) -> None:
    text = """
runbook: fails
phases:
  - id: one
    steps:
      - {id: slow, action: local.sleep, with: {seconds: 0.5}}
      - {id: bad, action: local.fail, needs: [], with: {message: boom}}
      - {id: after, action: local.noop, needs: [bad]}
      - {id: last, action: local.noop}
"""
    runner, sink = make_runner(write_runbook(tmp_path, text), state_dir)
    assert runner.run() == 1
    assert sink.statuses() == {"slow": "ok", "bad": "failed"}


def test_needs_errors_are_located(tmp_path: Path) -> None:
    text = """
runbook: badneeds
phases:
  - id: one
    steps:
      - {id: a, action: local.noop, needs: [b]}
      - {id: b, action: local.noop, needs: [nope]}
    gates:
      - {id: g, action: local.noop, needs: []}
"""
    with pytest.raises(RunbookError) as e:
        load_runbook(write_runbook(tmp_path, text), default_registry())
    text_err = str(e.value)
    assert "rb.yaml:6:" in text_err and "'b' comes later in the phase" in text_err
    assert "'nope' is not a step of phase 'one'" in text_err
    assert "needs: applies to a phase's steps only" in text_err


def test_headless_lines_say_whose_they_are_when_steps_overlap(tmp_path: Path,
                                                             state_dir: Path) -> None:
    import io

    from elematrix_tui.headless import Printer

    text = """
runbook: logs
phases:
  - id: one
    steps:
      - {id: a, action: local.sleep, with: {seconds: 0.5, lines: 2}}
      - {id: b, action: local.sleep, needs: [], with: {seconds: 0.5, lines: 2}}
      - {id: c, action: local.sleep, with: {seconds: 0.1, lines: 1}}
"""
    out = io.StringIO()
    runner, _ = make_runner(write_runbook(tmp_path, text), state_dir)
    runner.sinks.append(Printer(stream=out))
    assert runner.run() == 0
    lines = out.getvalue().splitlines()
    assert "   | b: line 1 of 2" in lines  # a still runs: the line names its step
    assert "   | line 1 of 1" in lines  # c runs alone: as before
    assert any(line.startswith("[ok] a ") for line in lines)


def test_cancel_stops_every_running_step_and_resume_finishes(tmp_path: Path,
                                                            state_dir: Path) -> None:
    import threading

    text = """
runbook: cancels
phases:
  - id: one
    steps:
      - {id: a, action: local.sleep, with: {seconds: 20}}
      - {id: b, action: local.sleep, needs: [], with: {seconds: 20}}
      - {id: c, action: local.noop}
"""
    path = write_runbook(tmp_path, text)
    runner, sink = make_runner(path, state_dir)
    started = threading.Event()
    runner.sinks.append(lambda e: started.set()
                        if len(sink.of(ev.StepStarted)) == 2 else None)
    threading.Thread(target=lambda: (started.wait(10), runner.cancel()), daemon=True).start()
    assert runner.run() == 130
    assert sink.statuses() == {"a": "interrupted", "b": "interrupted"}
    run_id = sink.of(ev.RunStarted)[0].run_id
    text = text.replace("seconds: 20", "seconds: 0.1")
    path.write_text(text)
    runner, sink = make_runner(path, state_dir)
    assert runner.resume(run_id) == 0
    assert sink.statuses() == {"a": "ok", "b": "ok", "c": "ok"}


def test_questions_are_asked_one_at_a_time() -> None:
    import threading
    import time

    from elematrix_tui.engine.schedule import OneQuestionAtATime

    class Slow:
        asking = 0
        overlap = False

        def choose(self, step_id: str, prompt: str, options: list[str]) -> str | None:
            Slow.asking += 1
            Slow.overlap = Slow.overlap or Slow.asking > 1
            time.sleep(0.1)
            Slow.asking -= 1
            return options[0]

    q = OneQuestionAtATime(Slow())  # type: ignore[arg-type]
    threads = [threading.Thread(target=q.choose, args=(f"s{i}", "trust?", ["yes"]))
               for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not Slow.overlap
