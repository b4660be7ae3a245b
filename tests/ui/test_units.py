"""Pure parts of the UI: the event fold, inline validation, the catalog, AWS config parsing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from elematrix_tui.engine import events as ev
from elematrix_tui.engine.model import Param, Runbook
from elematrix_tui.ui import catalog, validation
from elematrix_tui.ui.format import duration
from elematrix_tui.ui.model import RunModel, event_from_dict

from .conftest import DATA
from .helpers import RUN_ID, finished, started


def three_phases() -> Runbook:
    return Runbook.model_validate({
        "runbook": "t", "phases": [
            {"id": "a", "steps": [{"id": "s1", "action": "local.noop"}],
             "gates": [{"id": "g1", "action": "local.noop"}]},
            {"id": "b", "steps": [{"id": "s2", "action": "local.noop"}]},
            {"id": "c", "steps": [{"id": "s3", "action": "local.noop"}]},
        ]})


def test_locks_follow_the_runners_rule() -> None:
    m = RunModel(three_phases())
    assert [p.state for p in m.phases] == ["ready", "locked", "ready"]  # b has no gates
    m.apply(ev.PhaseStarted(RUN_ID, phase_id="a", title=""))
    m.apply(started("a", "s1", "S1"))
    assert m.phase("a").state == "running"  # type: ignore[union-attr]
    assert m.steps["s1"].status == "running" and m.running == ["s1"]
    m.apply(finished("a", "s1", outputs={"x": 1}))
    m.apply(started("a", "g1", "G1", gate=True))
    m.apply(finished("a", "g1", status="failed", gate=True, diagnosis="d", fix="f"))
    m.apply(ev.GateResult(RUN_ID, phase_id="a", gate_id="g1", passed=False, diagnosis="d",
                          fix="f"))
    m.apply(ev.PhaseFinished(RUN_ID, phase_id="a", status="failed"))
    assert m.phase("a").state == "failed"  # type: ignore[union-attr]
    assert m.phase("b").state == "locked"  # type: ignore[union-attr]
    assert [s.step_id for s in m.failed_steps()] == ["g1"]
    m.apply(ev.PhaseFinished(RUN_ID, phase_id="a", status="passed"))
    # A phase that passed without recording its gates (one step of it was run) unlocks
    # nothing: the engine's rule, from the engine's fold.
    assert [p.state for p in m.phases] == ["passed", "locked", "ready"]
    m.apply(ev.GatesPassed(RUN_ID, phase_id="a"))
    assert [p.state for p in m.phases] == ["passed", "ready", "ready"]


def test_a_skipped_gate_is_shown_skipped_not_ok() -> None:
    """Practice skips the logs_flowing gate (container_logs local): the phase passes, but
    the gate proved nothing, so it must not read "ok" (the README picture showed that)."""
    m = RunModel(three_phases())
    m.apply(ev.PhaseStarted(RUN_ID, phase_id="a", title=""))
    m.apply(finished("a", "g1", status="skipped", gate=True, message="when: x is false"))
    m.apply(ev.GateResult(RUN_ID, phase_id="a", gate_id="g1", passed=True,
                          message="when: x is false"))
    assert m.steps["g1"].status == "skipped"


def test_retry_progress_notes_and_interrupted_run() -> None:
    m = RunModel(three_phases())
    m.apply(ev.RunStarted(RUN_ID, runbook="t", deployment="d"))
    m.apply(started("a", "s1", "S1"))
    m.apply(ev.StepRetry(RUN_ID, step_id="s1", attempt=2, delay=1, reason="throttled"))
    assert m.steps["s1"].status == "retrying" and m.steps["s1"].attempt == 2
    m.apply(ev.Progress(RUN_ID, step_id="s1", message="waiting", elapsed=3))
    m.apply(ev.Note(RUN_ID, step_id="s1", name="aws.call", data={"request_id": "r-1"}))
    assert m.steps["s1"].notes == [("aws.call", {"request_id": "r-1"})]
    changed = m.apply(ev.RunFinished(RUN_ID, status="interrupted", exit_code=130))
    assert "s1" in changed and m.steps["s1"].status == "interrupted"
    assert m.steps["s1"].progress is None


def test_event_from_journal_dict_ignores_extra_fields() -> None:
    d = {"kind": "gate.result", "seq": 7, "ts": 1.0, "step_id": "g1", "phase_id": "a",
         "gate_id": "g1", "passed": False, "diagnosis": "x"}
    e = event_from_dict(d, RUN_ID)
    assert isinstance(e, ev.GateResult) and e.run_id == RUN_ID and e.diagnosis == "x"
    assert event_from_dict({"kind": "nope"}) is None


@pytest.mark.parametrize(("ptype", "extra", "raw", "ok"), [
    ("cidr", {}, "203.0.113.7/32", True),
    ("cidr", {}, "203.0.113.7", False),
    ("cidr", {}, "203.0.113.7/24", False),  # host bits set: say so before AWS does
    ("cidr", {}, "2001:db8::/64", True),
    ("email", {}, "ops@example.org", True),
    ("email", {}, "ops@", False),
    ("hostname", {}, "matrix.example.org", True),
    ("hostname", {}, "-bad.example", False),
    ("int", {"min": 1, "max": 8}, "8", True),
    ("int", {"min": 1, "max": 8}, "9", False),
    ("int", {}, "x", False),
    ("choice", {"choices": ["a", "b"]}, "b", True),
    ("choice", {"choices": ["a", "b"]}, "c", False),
    ("string", {"pattern": "^[a-z]+$"}, "abc", True),
    ("string", {"pattern": "^[a-z]+$"}, "ab1", False),
    ("bool", {}, "yes", True),
    ("bool", {}, "maybe", False),
    ("secret", {"generate": 20}, "", True),
    ("secret", {"generate": 20}, "short", False),
    ("string", {}, "", False),  # required
])
def test_inline_validation(ptype: str, extra: dict[str, object], raw: str, ok: bool) -> None:
    p = Param.model_validate({"name": "p", "type": ptype, **extra})
    assert (validation.check(p, raw) is None) is ok, validation.check(p, raw)


def test_generated_secret_length_and_alphabet() -> None:
    from elematrix_tui.engine.params import generate_secret

    s = generate_secret(32)
    assert len(s) == 32 and s.isalnum()


def test_aws_profiles_from_config_without_boto3(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.write_text("[default]\nregion = eu-west-1\n[profile prod]\nregion = us-east-2\n"
                   "[sso-session corp]\nsso_region = us-east-1\n")
    creds = tmp_path / "credentials"
    creds.write_text("[ci]\naws_access_key_id = x\n")
    assert catalog.aws_profiles(cfg, creds) == {"default": "eu-west-1", "ci": None,
                                                "prod": "us-east-2"}


def test_runbooks_and_deployments(state_dir: Path) -> None:
    names = [r.name for r in catalog.list_runbooks()]
    assert {"ui-flow", "ui-long", "ui-destructive"} <= set(names)
    assert all(r.source == "user" for r in catalog.list_runbooks() if r.path.parent == DATA)
    catalog.write_settings(state_dir, "b-dep", {"runbook_name": "ui-flow"})
    catalog.write_settings(state_dir, "a-dep", {"runbook_name": "ui-long"})
    deps = catalog.list_deployments(state_dir)
    assert [d.name for d in deps] == ["a-dep", "b-dep"]
    assert deps[0].last_status == "never run"


def test_duration_format() -> None:
    assert [duration(x) for x in (None, 0.42, 12.4, 185, 3725)] == \
        ["", "0.4s", "12s", "3m05s", "1h02m"]


def test_engine_and_actions_never_load_textual() -> None:
    code = ("import sys, elematrix_tui.engine.runner, elematrix_tui.actions.local, "
            "elematrix_tui.ui.model, elematrix_tui.ui.catalog, elematrix_tui.ui.validation; "
            "assert 'textual' not in sys.modules, 'textual loaded'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_markup_escape_keeps_unclosed_brackets_literal() -> None:
    from textual.markup import to_content

    from elematrix_tui.ui.markup import escape

    for text in ["[dim", "[bold yellow", '[{"a": 1}]', "[/b]", "C:\\path [x]"]:
        content = to_content(f"[b]head[/b] {escape(text)} [b]tail[/b]")
        assert str(content) == f"head {text} tail"
