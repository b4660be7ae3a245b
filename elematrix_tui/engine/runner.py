"""The runner: executes a runbook's phases against one deployment, journaling every step.

Order of work for one step: decide whether it already ran (resume), evaluate ``when``,
render and validate its inputs, confirm if asked, check (when resuming an interrupted
attempt, or before a confirmation), apply in a worker thread with a timeout, retry,
select outputs, verify ``expect``, journal. A phase is locked until every gate of the
phase before it has passed in this deployment.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shutil
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from .action import Action, ActionFailed, Check, Questions, Result
from .errors import GuardError, InputError
from .events import (
    Event,
    GateResult,
    LogLine,
    Note,
    PhaseFinished,
    PhaseLocked,
    PhaseStarted,
    Progress,
    Question,
    RunFinished,
    RunStarted,
    Sink,
    StepFinished,
    StepRetry,
    StepStarted,
)
from .expressions import ExpressionError, is_truthy, render_string, render_value
from .journal import FINISHED, Journal, RunRow, StepRow
from .lock import DeploymentLock
from .model import Phase, Runbook, Step
from .paths import DEPLOYMENT_RE, deployment_dir
from .plan_model import change_lines
from .registry import Registry
from .resolve import (
    META_PARAMS,
    StoredParams,
    journal_params,
    resolve_params,
    resume_changes,
    should_remember,
)
from .secrets import MASK, Redactor, SecretStore

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
# Journal meta: the names (never the values) of every secret stored for the deployment.
META_SECRET_NAMES = "secret_names"
# Journal meta: the operator typed this deployment's name here for a destructive step.
META_KNOWN_HERE = "known_here"


@dataclass
class RunOptions:
    phases: list[str] | None = None  # None: every phase
    assume_yes: bool = False
    only_step: str | None = None  # run just this step (TUI "run one step")
    skip: set[str] = field(default_factory=set)  # operator-skipped (skippable steps only)
    # Seconds a cancelled action gets to stop by itself before the runner moves on.
    cancel_grace: float = 5.0
    # Secrets the operator explicitly allows a given value to replace (--replace-secret).
    replace_secrets: set[str] = field(default_factory=set)


class _Interrupted(Exception):
    pass


class _Paused(Exception):
    pass


@dataclass
class _StepOutcome:
    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    diagnosis: str | None = None
    fix: str | None = None
    retry: bool = True  # False: never retried (ActionFailed(retry=False), a refusal)


def runbook_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


class Runner:
    """Runs one runbook against one deployment. ``run()``/``resume()`` block; use a thread."""

    def __init__(self, rb: Runbook, *, deployment: str, state_dir: Path,
                 params: dict[str, Any] | None = None, questions: Questions,
                 sinks: Iterable[Sink] = (), registry: Registry,
                 options: RunOptions | None = None, runbook_path: Path | None = None,
                 secrets: SecretStore | None = None) -> None:
        self.rb = rb
        self.deployment = deployment
        self.state_dir = state_dir
        self.raw_params = dict(params or {})
        self.questions = questions
        self.sinks = list(sinks)
        self.registry = registry
        self.options = options or RunOptions()
        self.runbook_path = runbook_path or Path(rb.runbook)
        self._secret_store = secrets
        self.redact = Redactor()
        self.run_id = ""
        self.params: dict[str, Any] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.journal: Journal | None = None
        self._cancel = threading.Event()
        self._pause = threading.Event()
        self._step_cancel: threading.Event | None = None
        self._resources: dict[str, tuple[Any, Callable[[Any], None] | None]] = {}
        self._res_lock = threading.Lock()
        self._secret_names: set[str] = set()
        # Whether this state dir knew the deployment before this run (see _execute). A
        # destructive step of a deployment it never saw acts on a tag alone.
        self._seen_before = True
        self._to_remember: dict[str, Any] | None = None

    # -- control from other threads (TUI) -----------------------------------------------
    def cancel(self) -> None:
        """Interrupt now: the running action is told to stop; state is saved (exit 130)."""
        self._cancel.set()
        if self._step_cancel is not None:
            self._step_cancel.set()

    def request_pause(self) -> None:
        """Stop after the current step finishes (state saved; resumable)."""
        self._pause.set()

    # -- entry points --------------------------------------------------------------------
    def run(self) -> int:
        """Start a new run. Returns the exit code (0, 1, 130); raises InputError for bad input."""
        return self._execute(resume_of=None)

    def resume(self, run_id: str) -> int:
        """Continue a recorded run of this deployment from its first unfinished step."""
        return self._execute(resume_of=run_id)

    # -- the run --------------------------------------------------------------------------
    def _execute(self, resume_of: str | None) -> int:
        if not DEPLOYMENT_RE.fullmatch(self.deployment):
            raise InputError(f"deployment name {self.deployment!r} must be 2-31 characters: a "
                             f"lower-case letter, then lower-case letters, digits or '-'")
        self._check_phase_selection()
        ddir = deployment_dir(self.state_dir, self.deployment)
        created = not ddir.exists()
        ddir.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = DeploymentLock(ddir / "lock")
        lock.acquire(self.deployment, f"{'resume' if resume_of else 'run'} {self.rb.runbook}")
        try:
            journal = Journal.open(self.state_dir, self.deployment)
        except InputError:
            lock.release()
            raise
        self.journal = journal
        try:
            previous: dict[str, StepRow] = {}
            # Known here: a run from this state dir changed something for the deployment,
            # or its name was typed for a destructive step. A refused or read-only run (a
            # teardown that only listed) does not count.
            self._seen_before = bool(journal.get_meta(META_KNOWN_HERE)) or journal.has_changes()
            if resume_of is not None:
                row = journal.run(resume_of)
                if row is None:
                    raise InputError(f"no run {resume_of!r} in deployment {self.deployment!r}; "
                                     f"'elematrix runs' lists them")
                if row.status == "passed":
                    raise InputError(f"run {resume_of} already passed; nothing to resume. "
                                     f"Start a new run with 'elematrix run'.")
                self.run_id = row.id
                stored = {k: v for k, v in row.params.items() if not _is_secret_ref(v)}
                given_now = set(self.raw_params)
                self.raw_params = {**stored, **self.raw_params}
                if self.options.phases is None and row.phases:
                    self.options.phases = list(row.phases)
                previous = journal.step_states(row.id)
            self.params = self._resolve_params(journal)
            self.outputs = journal.latest_outputs()
            if resume_of is None:
                self.run_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
                journal.add_run(RunRow(
                    self.run_id, self.rb.runbook, str(self.runbook_path.resolve()),
                    runbook_digest(self.runbook_path), self._journal_params(),
                    self.options.phases, "running", time.time(), None, None, None,
                    os.getpid(), socket.gethostname(), _user()))
            else:
                journal.update_run(self.run_id, status="running", finished=None, exit_code=None,
                                   pid=os.getpid(), message=None)
            self._emit(RunStarted(self.run_id, runbook=self.rb.runbook,
                                  deployment=self.deployment, resumed=resume_of is not None))
            if resume_of is not None:
                self._record_resume_changes(journal, stored, given_now)
                sha = runbook_digest(self.runbook_path)
                row = journal.run(self.run_id)
                if row and row.runbook_sha and sha and row.runbook_sha != sha:
                    self._emit(LogLine(self.run_id, step_id="", stream="warning",
                                       line="the runbook file changed since this run started; "
                                            "finished steps keep their recorded outputs"))
            status, code, message = self._run_phases(previous)
        except KeyboardInterrupt:
            status, code, message = "interrupted", EXIT_INTERRUPTED, "interrupted by the operator"
        except InputError:
            self._close_resources()
            if self.run_id and journal.run(self.run_id):
                journal.update_run(self.run_id, status="failed", finished=time.time(),
                                   exit_code=EXIT_INPUT, message="bad input")
            journal.close()
            lock.release()
            if created and not self.run_id:
                # Bad input for a deployment this invocation created: write nothing at all
                # (an empty journal would later pass for a deployment seen here).
                shutil.rmtree(ddir, ignore_errors=True)
            raise
        finally:
            self._close_resources()
        if self.run_id:
            self._remember_params(journal, status)
            journal.update_run(self.run_id, status=status, finished=time.time(), exit_code=code,
                               message=message)
            self._emit(RunFinished(self.run_id, status=status, exit_code=code, message=message))
        journal.close()
        lock.release()
        return code

    def _check_phase_selection(self) -> None:
        if self.options.phases:
            known = [p.id for p in self.rb.phases]
            bad = [p for p in self.options.phases if p not in known]
            if bad:
                raise InputError(f"--phase {bad[0]}: runbook {self.rb.runbook!r} has no such "
                                 f"phase; its phases are {', '.join(known)}")
        if self.options.only_step and not any(
                s.id == self.options.only_step for _, s, _ in self.rb.all_steps()):
            raise InputError(f"no step {self.options.only_step!r} in runbook {self.rb.runbook!r}")

    # -- parameters ----------------------------------------------------------------------
    @property
    def secret_store(self) -> SecretStore:
        if self._secret_store is None:
            self._secret_store = SecretStore()
        return self._secret_store

    def _resolve_params(self, journal: Journal) -> dict[str, Any]:
        """Every parameter's value, all validated before anything is stored (engine/resolve.py,
        the resolver plan uses too).

        Secrets are written to the store only once every parameter is known to be valid
        (a run that exits 2 writes nothing), and a given secret that differs from the one
        the deployment already has is refused unless ``RunOptions.replace_secrets`` names
        it. Values to remember are kept in ``self._to_remember`` and written at the end
        of a run that did not fail (see ``_remember_params``).
        """
        res = resolve_params(self.rb, self.raw_params, deployment=self.deployment,
                             stored=StoredParams.read(journal, self.rb),
                             secret=lambda name: self.secret_store.get(self.deployment, name),
                             replace_secrets=self.options.replace_secrets)
        self._secret_names |= res.secret_names
        if res.errors:
            raise InputError(res.errors)
        out = res.values
        for p in res.ask:
            value = self.questions.secret(p.name, p.help)
            out[p.name] = value or None
            if value:
                res.to_store[p.name] = value
        for name, value in res.to_store.items():
            self.store_secret(name, value)
        self._seed_redactor(journal, out)
        self._to_remember = res.to_remember
        return out

    def _remember_params(self, journal: Journal, status: str) -> None:
        """Keep this run's values for later runs, unless the run failed (should_remember)."""
        if should_remember(status) and self._to_remember is not None:
            journal.set_meta(META_PARAMS, self._to_remember)

    def store_secret(self, name: str, value: str) -> None:
        """Store a secret of this deployment, mask it from now on, and record its name.

        Names only (never values) go to the journal, so every later run can mask every
        secret of the deployment, also those nothing in that run fetches.
        """
        self.redact.add(value)
        self.secret_store.set(self.deployment, name, value)
        if self.journal is not None:
            names = set(self.journal.get_meta(META_SECRET_NAMES) or [])
            if name not in names:
                self.journal.set_meta(META_SECRET_NAMES, sorted(names | {name}))

    def _seed_redactor(self, journal: Journal, values: dict[str, Any]) -> None:
        """Mask every secret the deployment has, not only the ones this run reads."""
        for name in self._secret_names:
            if values.get(name):
                self.redact.add(str(values[name]))
        names = set(journal.get_meta(META_SECRET_NAMES) or [])
        names |= set(self.secret_store.names(self.deployment))
        for _, step, _ in self.rb.all_steps():
            try:
                names |= set(self.registry.get(step.action).stored_secrets)
            except Exception:  # an action that cannot load fails its own step later
                continue
        for name in sorted(names - self._secret_names):
            self.redact.add(self.secret_store.get(self.deployment, name))

    def _record_resume_changes(self, journal: Journal, recorded: dict[str, Any],
                               given: set[str]) -> None:
        """A --set on resume that changes a value the run recorded: say so, and record the
        value now in use, so the report shows what the rest of the run really used."""
        changed = resume_changes(recorded, given, self.params, self._secret_names)
        for k, old, new in changed:
            self._emit(LogLine(self.run_id, step_id="", stream="warning",
                               line=self.redact(f"parameter {k!r} changed on resume: "
                                                f"{old!r} -> {new!r}; steps that already "
                                                f"finished used {old!r}")))
        if changed:
            journal.update_run(self.run_id, params=json.dumps(self._journal_params()))

    def _journal_params(self) -> dict[str, Any]:
        return journal_params(self.params, self._secret_names)

    # -- phases --------------------------------------------------------------------------
    def _run_phases(self, previous: dict[str, StepRow]) -> tuple[str, int, str]:
        assert self.journal is not None
        selected = self.options.phases
        passed = self.journal.passed_gates()
        for index, phase in enumerate(self.rb.phases):
            if selected and phase.id not in selected:
                continue
            if self.options.only_step and not any(
                    s.id == self.options.only_step for s in phase.steps + phase.gates):
                continue
            if index > 0:
                before = self.rb.phases[index - 1]
                if before.gates and before.id not in passed:
                    reason = (f"phase {phase.id!r} is locked: the gates of phase {before.id!r} "
                              f"have not passed in deployment {self.deployment!r}. Run that "
                              f"phase first (--phase {before.id}).")
                    self._emit(PhaseLocked(self.run_id, phase_id=phase.id, reason=reason))
                    return "failed", EXIT_FAILED, reason
            self._emit(PhaseStarted(self.run_id, phase_id=phase.id, title=phase.title))
            try:
                ok = self._run_phase(phase, previous)
            except _Interrupted:
                self._emit(PhaseFinished(self.run_id, phase_id=phase.id, status="interrupted"))
                return "interrupted", EXIT_INTERRUPTED, "interrupted; state saved, resumable"
            except _Paused:
                self._emit(PhaseFinished(self.run_id, phase_id=phase.id, status="paused"))
                return "paused", EXIT_INTERRUPTED, "paused by the operator; resumable"
            except GuardError as e:
                self._emit(PhaseFinished(self.run_id, phase_id=phase.id, status="stopped"))
                return "stopped", EXIT_FAILED, str(e)
            self._emit(PhaseFinished(self.run_id, phase_id=phase.id,
                                     status="passed" if ok else "failed"))
            if not ok:
                return "failed", EXIT_FAILED, f"phase {phase.id!r} failed"
            if phase.gates and not self.options.only_step:
                self.journal.pass_gate(phase.id, self.run_id)
                passed[phase.id] = self.run_id
        return "passed", EXIT_OK, ""

    def _run_phase(self, phase: Phase, previous: dict[str, StepRow]) -> bool:
        assert self.journal is not None
        ok = True
        if phase.gates:
            self.journal.clear_gate(phase.id)
        for role, steps in (("step", phase.steps), ("gate", phase.gates)):
            for step in steps:
                if self.options.only_step and step.id != self.options.only_step:
                    continue
                if self._cancel.is_set():
                    raise _Interrupted
                outcome = self._run_step(phase, step, role, previous.get(step.id))
                if outcome.status == "failed":
                    if step.on_failure == "continue":
                        ok = ok and role != "gate"
                        continue
                    if step.on_failure not in ("abort", "continue"):
                        cleanup = next(c for c in phase.cleanup if c.id == step.on_failure)
                        self._run_step(phase, cleanup, "cleanup", None)
                    return False
                if self._pause.is_set():
                    raise _Paused
        return ok

    # -- one step ------------------------------------------------------------------------
    def _variables(self) -> dict[str, Any]:
        return {"params": self.params, "steps": self.outputs, "deployment": self.deployment,
                "run_id": self.run_id,
                "deployment_dir": str(deployment_dir(self.state_dir, self.deployment))}

    def _run_step(self, phase: Phase, step: Step, role: str,
                  prev: StepRow | None) -> _StepOutcome:
        assert self.journal is not None
        is_gate = role == "gate"
        if prev is not None and prev.status in FINISHED and not is_gate \
                and not self._process_local(step):
            # Finished in the run being resumed: keep its outputs, never apply again.
            self.outputs[step.id] = prev.outputs
            self._emit(StepFinished(self.run_id, phase_id=phase.id, step_id=step.id,
                                    status=prev.status, attempt=prev.attempt, duration=0.0,
                                    outputs=prev.outputs, message=prev.message or "",
                                    restored=True))
            return _StepOutcome(prev.status, prev.outputs)
        interrupted = prev is not None and prev.status in ("running", "interrupted")
        first_attempt = (prev.attempt + 1) if prev is not None else 1
        title = step.title or step.id

        if step.id in self.options.skip:
            return self._finish_without_apply(phase, step, role, "skipped",
                                              {}, "skipped by the operator", first_attempt)
        if step.when is not None:
            text = step.when if "{{" in step.when else "{{ " + step.when + " }}"
            try:
                if not is_truthy(render_string(text, self._variables())):
                    return self._finish_without_apply(phase, step, role, "skipped", {},
                                                      f"when: {step.when} is false",
                                                      first_attempt)
            except ExpressionError as e:
                return self._fail_early(phase, step, role, first_attempt,
                                        f"cannot evaluate when: {e}")
        try:
            action = self.registry.create(step.action)
        except Exception as e:
            return self._fail_early(phase, step, role, first_attempt,
                                    f"action {step.action!r} cannot load: {e}")
        try:
            rendered = render_value(step.with_, self._variables())
            inputs = action.Inputs.model_validate(rendered)
        except ExpressionError as e:
            return self._fail_early(phase, step, role, first_attempt, f"cannot render inputs: {e}",
                                    fix="fix the expression in the runbook, then resume")
        except ValidationError as e:
            msgs = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}"
                             for err in e.errors())
            return self._fail_early(phase, step, role, first_attempt,
                                    f"inputs are not valid: {msgs}",
                                    fix="fix the step's 'with:' values or the parameters")
        masked = self._mask_inputs(action, rendered)

        attempt = first_attempt
        ctx = _Context(self, phase, step, attempt)
        # A step that was running when the process died, or that must be confirmed, is
        # checked first: if the change already holds, nothing is applied (and nobody asked).
        if interrupted or step.confirm or step.destructive:
            check = self._call_check(action, ctx, inputs, step)
            if check is not None and check.in_sync:
                outputs = self._select_outputs(step, check.outputs, check.data)
                msg = "already in the desired state" + (
                    " (checked after an interrupted attempt)" if interrupted else "")
                return self._finish_without_apply(phase, step, role, "ok", outputs, msg, attempt)
            if (step.confirm or step.destructive) and not action.read_only:
                changes = change_lines(check, recorded=step.id in self.outputs)  # as plan shows
                if not self._confirm(step, title, changes):
                    raise GuardError(f"the operator declined step {step.id!r}; nothing was "
                                     f"changed by it. Resume when ready.")
        delay = step.retry.delay
        while True:
            ctx = _Context(self, phase, step, attempt)
            self._step_cancel = ctx.cancel
            self.journal.start_attempt(self.run_id, step.id, phase.id, role, attempt, masked)
            self._emit(StepStarted(self.run_id, phase_id=phase.id, step_id=step.id, title=title,
                                   action=step.action, attempt=attempt, is_gate=is_gate,
                                   inputs=masked))
            started = time.monotonic()
            outcome = self._clean(self._attempt(action, ctx, inputs, step))
            duration = time.monotonic() - started
            if outcome.status == "interrupted":
                self.journal.finish_attempt(self.run_id, step.id, attempt, "interrupted", {},
                                            outcome.message)
                self._emit(StepFinished(self.run_id, phase_id=phase.id, step_id=step.id,
                                        status="interrupted", attempt=attempt, duration=duration,
                                        is_gate=is_gate, message=outcome.message))
                raise _Interrupted
            if outcome.status == "failed" and outcome.retry \
                    and attempt - first_attempt + 1 < step.retry.attempts:
                self.journal.finish_attempt(self.run_id, step.id, attempt, "failed", {},
                                            self.redact(outcome.message), outcome.diagnosis,
                                            outcome.fix)
                self._emit(StepFinished(self.run_id, phase_id=phase.id, step_id=step.id,
                                        status="failed", attempt=attempt, duration=duration,
                                        is_gate=is_gate, message=self.redact(outcome.message)))
                self._emit(StepRetry(self.run_id, step_id=step.id, attempt=attempt + 1,
                                     delay=delay, reason=self.redact(outcome.message)))
                if self._cancel.wait(delay):
                    raise _Interrupted
                delay *= step.retry.backoff
                attempt += 1
                continue
            break
        self._step_cancel = None
        if outcome.status in ("ok", "changed"):
            self.outputs[step.id] = outcome.outputs
            for name, value in self._lock_values(step).items():
                if value is not None and value != "":
                    self.journal.set_meta(f"permanent.{name}", value)
        outputs = self.redact.value(outcome.outputs)
        message = self.redact(outcome.message)
        fix = outcome.fix or (self._fix(step) if outcome.status == "failed" else None)
        self.journal.finish_attempt(self.run_id, step.id, attempt, outcome.status, outputs,
                                    message, outcome.diagnosis, fix)
        self._emit(StepFinished(self.run_id, phase_id=phase.id, step_id=step.id,
                                status=outcome.status, attempt=attempt, duration=duration,
                                is_gate=is_gate, message=message, outputs=outputs,
                                diagnosis=outcome.diagnosis, fix=fix))
        if is_gate:
            self._emit(GateResult(self.run_id, phase_id=phase.id, gate_id=step.id,
                                  passed=outcome.status in ("ok", "changed"), message=message,
                                  diagnosis=outcome.diagnosis, fix=fix, duration=duration))
        return replace(outcome, fix=fix)

    def _lock_values(self, step: Step) -> dict[str, Any]:
        """What a step's ``locks`` make permanent: the parameters' values (list form), or
        the values the deployment really used, rendered now (mapping form)."""
        if isinstance(step.locks, list):
            return {name: self.params.get(name) for name in step.locks}
        out: dict[str, Any] = {}
        for name, expr in step.locks.items():
            try:
                out[name] = render_string(expr, self._variables())
            except ExpressionError as e:
                self._emit(LogLine(self.run_id, step_id=step.id, stream="warning",
                                   line=f"cannot evaluate locks.{name}: {e}; not locked"))
        return out

    def _fix(self, step: Step) -> str | None:
        """The step's advice, with its expressions rendered (it may name paths, hosts)."""
        if not step.fix:
            return None
        try:
            return self.redact(str(render_string(step.fix, self._variables())))
        except ExpressionError:
            return step.fix

    def _process_local(self, step: Step) -> bool:
        try:
            return bool(self.registry.get(step.action).process_local)
        except Exception:
            return False

    def _clean(self, o: _StepOutcome) -> _StepOutcome:
        """Redact every text an action produced before it is journaled or shown."""
        r = self.redact
        return _StepOutcome(o.status, o.outputs, r(o.message),
                            r(o.diagnosis) if o.diagnosis else None, r(o.fix) if o.fix else None,
                            o.retry)

    def _fail_early(self, phase: Phase, step: Step, role: str, attempt: int, message: str,
                    fix: str | None = None) -> _StepOutcome:
        assert self.journal is not None
        message = self.redact(message)
        self.journal.start_attempt(self.run_id, step.id, phase.id, role, attempt, {})
        self.journal.finish_attempt(self.run_id, step.id, attempt, "failed", {}, message, None,
                                    fix or self._fix(step))
        self._emit(StepStarted(self.run_id, phase_id=phase.id, step_id=step.id,
                               title=step.title or step.id, action=step.action, attempt=attempt,
                               is_gate=role == "gate"))
        self._emit(StepFinished(self.run_id, phase_id=phase.id, step_id=step.id, status="failed",
                                attempt=attempt, duration=0.0, is_gate=role == "gate",
                                message=message, fix=fix or self._fix(step)))
        if role == "gate":
            self._emit(GateResult(self.run_id, phase_id=phase.id, gate_id=step.id, passed=False,
                                  message=message, fix=fix or self._fix(step)))
        return _StepOutcome("failed", message=message, fix=fix or self._fix(step))

    def _finish_without_apply(self, phase: Phase, step: Step, role: str, status: str,
                              outputs: dict[str, Any], message: str,
                              attempt: int) -> _StepOutcome:
        assert self.journal is not None
        outputs_masked = self.redact.value(outputs)
        if status == "ok":
            self.outputs[step.id] = outputs
        self.journal.start_attempt(self.run_id, step.id, phase.id, role, attempt, {})
        self.journal.finish_attempt(self.run_id, step.id, attempt, status, outputs_masked,
                                    message)
        self._emit(StepStarted(self.run_id, phase_id=phase.id, step_id=step.id,
                               title=step.title or step.id, action=step.action, attempt=attempt,
                               is_gate=role == "gate"))
        self._emit(StepFinished(self.run_id, phase_id=phase.id, step_id=step.id, status=status,
                                attempt=attempt, duration=0.0, is_gate=role == "gate",
                                message=message, outputs=outputs_masked))
        if role == "gate":
            self._emit(GateResult(self.run_id, phase_id=phase.id, gate_id=step.id,
                                  passed=status != "failed", message=message))
        return _StepOutcome(status, outputs, message)

    def _mask_inputs(self, action: Action, rendered: dict[str, Any]) -> dict[str, Any]:
        masked = {k: (MASK if k in action.secret_inputs and v else v)
                  for k, v in rendered.items()}
        return self.redact.value(masked)  # type: ignore[no-any-return]

    def _confirm(self, step: Step, title: str, changes: list[str]) -> bool:
        destructive = step.destructive
        if destructive and not self._seen_before and self.journal is not None \
                and self.journal.has_changes():
            # This run itself changed something for the deployment (practice's infra, then
            # its harden): the state dir has seen it now.
            self._seen_before = True
        if destructive and not self._seen_before:
            # Nothing here ties the tag to this operator's deployment: someone else's may
            # carry the same name. The typed name is required, and --yes does not give it.
            warning = (f"this state dir has never seen deployment {self.deployment!r} (no run "
                       f"here ever changed anything for it): step {step.id!r} acts on whatever "
                       f"carries its tag in this AWS account. Type the deployment name to go "
                       f"on; --yes does not answer this")
            self._emit(LogLine(self.run_id, step_id=step.id, line=warning, stream="warning"))
            answer = self.questions.confirm(step.id, title, [*changes, warning],
                                            destructive=True, type_to_confirm=self.deployment)
            if answer and self.journal is not None:
                self.journal.set_meta(META_KNOWN_HERE, True)
        elif self.options.assume_yes:
            answer = True
        else:
            answer = self.questions.confirm(step.id, title, changes, destructive=destructive,
                                            type_to_confirm=self.deployment if destructive
                                            else None)
        self._emit(Question(self.run_id, step_id=step.id, question="confirm", prompt=title,
                            answer="yes" if answer else "no"))
        return answer

    def _call_check(self, action: Action, ctx: _Context, inputs: Any,
                    step: Step) -> Check | None:
        try:
            return action.check(ctx, inputs)
        except Exception as e:  # a failing check must not hide the step: apply decides
            ctx.log(f"check failed ({type(e).__name__}: {e}); the step will be applied",
                    "warning")
            return None

    def _attempt(self, action: Action, ctx: _Context, inputs: Any, step: Step) -> _StepOutcome:
        """Apply in a worker thread so a timeout or Ctrl-C never waits on a stuck SDK call."""
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["result"] = action.apply(ctx, inputs)
            except BaseException as e:  # reported below, in the runner's thread
                box["error"] = e
                box["tb"] = traceback.format_exc()
            finally:
                done.set()

        worker = threading.Thread(target=work, name=f"step-{step.id}", daemon=True)
        worker.start()
        timed_out = False
        try:
            while not done.wait(0.05 if ctx.deadline is None else
                                max(0.0, min(0.05, ctx.deadline - time.monotonic()))):
                if self._cancel.is_set():
                    break
                if ctx.deadline is not None and time.monotonic() >= ctx.deadline:
                    timed_out = True
                    break
        except KeyboardInterrupt:
            self._cancel.set()
        if not done.is_set():
            ctx.cancel.set()
            done.wait(self.options.cancel_grace)
            if self._cancel.is_set():
                return _StepOutcome("interrupted", message="interrupted by the operator")
            if timed_out:
                return _StepOutcome(
                    "failed", message=f"timed out after {step.timeout:g} s",
                    diagnosis="the step did not finish within its timeout",
                    fix="look at the step's log for where it stopped; raise 'timeout:' in the "
                        "runbook if the work is just slow, then resume")
        if self._cancel.is_set() and "result" not in box:
            return _StepOutcome("interrupted", message="interrupted by the operator")
        if "error" in box:
            err = box["error"]
            if isinstance(err, ActionFailed):
                return _StepOutcome("failed", message=err.message, diagnosis=err.diagnosis,
                                    fix=err.fix, retry=err.retry)
            if isinstance(err, KeyboardInterrupt):
                return _StepOutcome("interrupted", message="interrupted by the operator")
            for line in str(box.get("tb", "")).rstrip().splitlines()[-8:]:
                ctx.log(line, "stderr")
            return _StepOutcome("failed", message=f"{type(err).__name__}: {err}",
                                diagnosis=f"the {step.action} action failed unexpectedly",
                                fix=self._fix(step)
                                or "see the log above; report a bug if it is ours")
        result: Result = box["result"]
        outputs = self._select_outputs(step, result.outputs, result.data)
        outcome = _StepOutcome(result.status, outputs, result.message, result.diagnosis,
                               result.fix)
        if outcome.status in ("ok", "changed") and step.expect:
            bad = [f"{k} is {outputs.get(k)!r}, expected {v!r}" for k, v in step.expect.items()
                   if outputs.get(k) != v]
            if bad:
                return _StepOutcome("failed", outputs, "; ".join(bad),
                                    diagnosis="the step ran but its result is not what the "
                                              "runbook expects", fix=self._fix(step))
        return outcome

    def _select_outputs(self, step: Step, outputs: dict[str, Any], data: Any) -> dict[str, Any]:
        out = dict(outputs)
        if step.outputs:
            import jmespath

            source = data if data is not None else outputs
            for name, expr in step.outputs.items():
                out[name] = _jsonable(jmespath.search(expr, source))
        return out

    # -- events and resources ------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        assert self.journal is not None
        data = event.to_dict()
        kind = data.pop("kind")
        data.pop("run_id", None)
        ts = data.pop("ts")
        step_id = data.get("step_id") or data.get("gate_id")
        self.journal.add_event(self.run_id, kind, step_id, data, ts)
        if kind not in ("log", "progress"):
            self.journal.flush()
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:  # a broken display must never stop a deployment
                pass

    def resource(self, key: str, factory: Callable[[], T],
                 close: Callable[[T], None] | None) -> T:
        with self._res_lock:
            if key not in self._resources:
                self._resources[key] = (factory(), close)
            return self._resources[key][0]  # type: ignore[no-any-return]

    def drop_resource(self, key: str) -> None:
        with self._res_lock:
            obj, close = self._resources.pop(key, (None, None))
        if obj is not None and close is not None:
            try:
                close(obj)
            except Exception:
                pass

    def _close_resources(self) -> None:
        for key in reversed(list(self._resources)):
            self.drop_resource(key)


class _Context:
    """The StepContext handed to actions (see engine/action.py)."""

    def __init__(self, runner: Runner, phase: Phase, step: Step, attempt: int) -> None:
        self._r = runner
        self.run_id = runner.run_id
        self.deployment = runner.deployment
        self.step_id = step.id
        self.phase_id = phase.id
        self.attempt = attempt
        self.deployment_dir = deployment_dir(runner.state_dir, runner.deployment)
        self.params = runner.params
        self.cancel = threading.Event()
        if runner._cancel.is_set():
            self.cancel.set()
        self.deadline = time.monotonic() + step.timeout if step.timeout else None
        self.questions = runner.questions
        self.assume_yes = runner.options.assume_yes
        self._started = time.monotonic()
        self._expected = step.expected_duration

    def log(self, line: str, stream: str = "stdout") -> None:
        self._r._emit(LogLine(self.run_id, step_id=self.step_id, line=self._r.redact(line),
                              stream=stream))

    def progress(self, message: str, done: float | None = None,
                 total: float | None = None) -> None:
        self._r._emit(Progress(self.run_id, step_id=self.step_id, message=self._r.redact(message),
                               elapsed=time.monotonic() - self._started, done=done, total=total,
                               expected=self._expected))

    def note(self, kind: str, **data: Any) -> None:
        self._r._emit(Note(self.run_id, step_id=self.step_id, name=kind,
                           data=self._r.redact.value(data)))

    def add_secret(self, value: str) -> None:
        self._r.redact.add(value)

    def get_secret(self, name: str) -> str | None:
        value = self._r.secret_store.get(self.deployment, name)
        if value:
            self._r.redact.add(value)
        return value

    def set_secret(self, name: str, value: str) -> None:
        self._r.store_secret(name, value)

    def resource(self, key: str, factory: Callable[[], T],
                 close: Callable[[T], None] | None = None) -> T:
        return self._r.resource(key, factory, close)

    def drop_resource(self, key: str) -> None:
        self._r.drop_resource(key)

    def get_meta(self, key: str) -> Any:
        assert self._r.journal is not None
        return self._r.journal.get_meta(key)

    def set_meta(self, key: str, value: Any) -> None:
        assert self._r.journal is not None
        self._r.journal.set_meta(key, value)


def _is_secret_ref(v: Any) -> bool:
    return isinstance(v, dict) and set(v) == {"$secret"}


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return str(v)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())
