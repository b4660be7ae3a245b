"""Issue 14, item 4: a resumed deploy re-applies nothing whose facts are already in place,
counted, on the rehearsal instance (real sshd, the real Docker engine, moto for AWS).

The runner is in-process so that every ``check()`` and ``apply()`` of the host-fact actions
is counted (a subclass that counts, then calls the real action: nothing is stubbed):

1. infra + configure + deploy run; right after ``start_web``'s real ``apply`` brought the
   web tier up, the process "dies" (the runner is cancelled and the attempt ends as
   interrupted, before the journal records its result: what a SIGKILL at that moment
   leaves).
2. The resume checks the interrupted step: compose's facts (config hashes, containers,
   health) say in place, so the step finishes without ``apply`` (counted: zero applies of
   ``start_web`` in the resume), and the steps finished before are restored, not run.
3. A second run of the deploy phase: every host-fact step reads its facts, finds them in
   place and changes nothing: no ``host.change`` note in the run's events, every such step
   ``ok`` (not ``changed``), the containers are the same ones (ids), no initdb again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from elematrix_tui.actions import default_registry
from elematrix_tui.actions.hostfacts import CHANGE_NOTE
from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.engine.action import Action, Result
from elematrix_tui.engine.events import Event, Note, RunStarted, StepFinished
from elematrix_tui.engine.loader import load_runbook
from elematrix_tui.engine.runner import Runner, RunOptions
from elematrix_tui.engine.standalone import AutoQuestions
from tests.rehearsal.instance import FakeInstance

RUNBOOK = runbooks_dir() / "poc-ec2.yaml"
# The deploy steps whose action reads host facts (issue 14 item 4).
HOST_FACT_ACTIONS = ("ssh.upload", "compose.up", "compose.exec", "postgres.locale",
                     "systemd.install")
INTERRUPT_AFTER = "start_web"


class Counter:
    """Every check/apply of the host-fact actions: (what, run_id, step_id)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.runner: Runner | None = None
        self.interrupted = False

    def registry(self) -> Any:
        reg = default_registry()
        for name in HOST_FACT_ACTIONS:
            reg.add(name, self._counting(reg.get(name)))
        return reg

    def _counting(self, cls: type[Action]) -> type[Action]:
        counter = self

        class Counted(cls):  # type: ignore[valid-type,misc]
            def check(self, ctx: Any, inputs: Any) -> Any:
                counter.calls.append(("check", ctx.run_id, ctx.step_id))
                return super().check(ctx, inputs)

            def apply(self, ctx: Any, inputs: Any) -> Result:
                counter.calls.append(("apply", ctx.run_id, ctx.step_id))
                result: Result = super().apply(ctx, inputs)
                if ctx.step_id == INTERRUPT_AFTER and not counter.interrupted:
                    # The effect is on the host; the process dies before it is recorded.
                    counter.interrupted = True
                    assert counter.runner is not None
                    counter.runner.cancel()
                    raise KeyboardInterrupt
                return result

        Counted.__name__ = cls.__name__
        return Counted

    def count(self, what: str, run_id: str, step_id: str | None = None) -> int:
        return sum(1 for w, r, s in self.calls
                   if w == what and r == run_id and (step_id is None or s == step_id))


def _params(inst: FakeInstance, tmp_path: Path) -> dict[str, Any]:
    return {"operator_cidr": "127.0.0.1/32", "alert_email": "operator@example.org",
            "server_name": "resume.test", "ssh_public_key_path": f"{inst.key_path}.pub",
            "ssh_private_key_path": str(inst.key_path), "ssh_user": inst.user,
            "ssh_port": inst.port, "remote_dir": str(tmp_path / "opt" / "elematrix"),
            "systemd_dir": str(inst.unit_dir), "host_key_wait": 0,
            "container_logs": "local"}


def _runner(counter: Counter, tmp_path: Path, params: dict[str, Any], phases: list[str],
            events: list[Event]) -> Runner:
    rb = load_runbook(RUNBOOK, default_registry())
    runner = Runner(rb, deployment="resume", state_dir=tmp_path / "state", params=params,
                    questions=AutoQuestions(), sinks=[events.append],
                    registry=counter.registry(),
                    options=RunOptions(phases=phases, assume_yes=True),
                    runbook_path=RUNBOOK)
    counter.runner = runner
    return runner


def _run_id(events: list[Event]) -> str:
    return next(e.run_id for e in events if isinstance(e, RunStarted))


def _finished(events: list[Event]) -> dict[str, StepFinished]:
    return {e.step_id: e for e in events if isinstance(e, StepFinished)}


def _failures(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.step_id, e.message) for e in events
            if isinstance(e, StepFinished) and e.status == "failed"]


def _containers(inst: FakeInstance) -> dict[str, str]:
    out = inst.compose("ps", "-a", "--format", "{{.Service}} {{.ID}}").stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def test_resumed_and_rerun_deploy_reapply_nothing_in_place(
        instance: FakeInstance, aws_env: dict[str, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in aws_env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/config of this machine
    params = _params(instance, tmp_path)
    deploy_steps = {s.id: s.action for s in load_runbook(RUNBOOK, default_registry())
                    .phase("deploy").steps}  # type: ignore[union-attr]
    host_fact_steps = {s for s, a in deploy_steps.items() if a in HOST_FACT_ACTIONS}
    assert host_fact_steps >= {"upload", "start_postgres", "db_locale", "start_synapse",
                               "synapse_health", "signing_key", "start_web", "boot_unit"}
    counter = Counter()

    # 1. The first run dies right after start_web's apply.
    first: list[Event] = []
    code = _runner(counter, tmp_path, params, ["infra", "configure", "deploy"], first).run()
    assert code == 130, _failures(first)
    run_id = _run_id(first)
    assert counter.count("apply", run_id, INTERRUPT_AFTER) == 1
    assert _finished(first)[INTERRUPT_AFTER].status == "interrupted"
    web_up = _containers(instance)
    assert {"postgres", "synapse", "element", "nginx"} <= set(web_up)

    # 2. Resume: the interrupted step is checked, in place, not applied.
    resumed: list[Event] = []
    mark = len(counter.calls)
    assert _runner(counter, tmp_path, params, ["infra", "configure", "deploy"],
                   resumed).resume(run_id) == 0, _failures(resumed)
    assert _run_id(resumed) == run_id
    done = _finished(resumed)
    assert done[INTERRUPT_AFTER].status == "ok"
    assert "already in the desired state" in done[INTERRUPT_AFTER].message
    # Counted over the resume's calls only (the counter is shared with the first run).
    resume_calls = counter.calls[mark:]
    assert ("check", run_id, INTERRUPT_AFTER) in resume_calls
    assert ("apply", run_id, INTERRUPT_AFTER) not in resume_calls
    # Every step finished before the interruption was restored: no call at all.
    restored = {s for s, e in done.items() if e.restored}
    assert {"upload", "start_postgres", "db_locale", "start_synapse"} <= restored
    assert not [c for c in resume_calls if c[2] in restored]
    assert _containers(instance) == web_up
    changes = [e for e in resumed if isinstance(e, Note) and e.name == CHANGE_NOTE]
    # Only the steps after the interruption changed the host (the boot unit's first install).
    assert {e.step_id for e in changes} <= {"boot_unit"}, [(e.step_id, e.data) for e in changes]

    # 3. A new run of the deploy phase: every host-fact step finds its facts in place.
    again: list[Event] = []
    assert _runner(counter, tmp_path, params, ["deploy"], again).run() == 0, _failures(again)
    rerun = _run_id(again)
    done = _finished(again)
    changes = [e for e in again if isinstance(e, Note) and e.name == CHANGE_NOTE]
    assert changes == [], [(e.step_id, e.data) for e in changes]
    # A new run (not a resume): the host-fact actions are check_first, so every step is
    # checked, found in place and not applied: ok, not changed, no host.change note.
    ran = sorted(s for s in host_fact_steps if done[s].status != "skipped")
    assert ran == sorted(host_fact_steps), {s: done[s].status for s in host_fact_steps}
    assert {s: done[s].status for s in ran} == {s: "ok" for s in ran}, \
        {s: done[s].message for s in ran}
    applied = sorted(s for w, r, s in counter.calls if w == "apply" and r == rerun)
    checked = {s for w, r, s in counter.calls if w == "check" and r == rerun}
    # Only read-only steps (db_locale reads the collation; it changes nothing) may run.
    assert applied == ["db_locale"], applied
    assert checked >= set(ran) - {"db_locale"}, sorted(set(ran) - checked)
    print(f"resume: 0 applies of {INTERRUPT_AFTER} (checked: in place); re-run: "
          f"{len(ran)} host-fact steps checked, 0 applied, 0 host.change notes")
    assert _containers(instance) == web_up  # not one container recreated
    assert instance.initdb_count() == 1
    assert os.path.exists(instance.unit_dir / "elematrix-stack.service")
