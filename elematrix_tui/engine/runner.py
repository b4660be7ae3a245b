"""The runner: executes a runbook's phases against one deployment, journaling every step.

The runner owns a run's lifecycle (the deployment's lock and journal, held in ``with``
blocks whatever ends the run), its parameters, and its phases: a phase is locked until
every gate of the phase before it has passed in this deployment (the rule is
``engine/state.py``'s). One step (resume decision, ``when``, inputs, confirmation, check,
apply with a timeout, retries, outputs, ``expect``) is ``engine/steps.py``; what an action
is handed is ``engine/context.py``. Every outcome is an event: the journal's event log is
the one record of the run, and ``self.state`` is its fold, kept current as events go out.

About 500 lines: the parameter resolution below is about to move to its own module.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import queue
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from .action import Questions
from .context import Interrupted, Paused, RunOptions, StepOutcome
from .errors import GuardError, InputError, PromptCancelled
from .events import (
    Event,
    GatesCleared,
    GatesPassed,
    LogLine,
    PhaseFinished,
    PhaseLocked,
    PhaseStarted,
    RunFinished,
    RunStarted,
    Sink,
)
from .journal import Journal, RunRow
from .lock import DeploymentLock
from .model import Phase, Runbook
from .paths import deployment_dir, deployment_name_error
from .registry import Registry
from .resolve import (
    META_PARAMS,
    META_SECRET_NAMES,
    StoredParams,
    journal_params,
    resolve_params,
    resume_changes,
    should_remember,
)
from .schedule import OneQuestionAtATime, concurrent, dependencies, runs_alone
from .secrets import Redactor, SecretStore
from .state import DECLINED, RunState, StepState
from .steps import META_KNOWN_HERE, Declined, StepsMixin

__all__ = ["EXIT_FAILED", "EXIT_INPUT", "EXIT_INTERRUPTED", "EXIT_OK", "META_KNOWN_HERE",
           "META_SECRET_NAMES", "RunOptions", "Runner", "runbook_digest"]

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def runbook_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


class Runner(StepsMixin):
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
        self.questions = questions  # asked one at a time (the property below)
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
        # The fold of the deployment's event log, kept current by every event emitted.
        self.state = RunState()
        self._cancel = threading.Event()
        self._pause = threading.Event()
        # The cancel event of every step attempt running now (several in a concurrent phase).
        self._step_cancels: set[threading.Event] = set()
        # One event at a time into the journal, the fold and the sinks, whichever thread.
        self._emit_lock = threading.RLock()
        self._resources: dict[str, tuple[Any, Callable[[Any], None] | None]] = {}
        self._res_lock = threading.Lock()
        self._secret_names: set[str] = set()
        # Whether this state dir knew the deployment before this run (see _execute). A
        # destructive step of a deployment it never saw acts on a tag alone.
        self._seen_before = True
        self._to_remember: dict[str, Any] | None = None

    @property
    def questions(self) -> Questions:
        return self._questions

    @questions.setter
    def questions(self, value: Questions) -> None:
        # Steps of a concurrent phase may ask at once: the operator gets one question at a time.
        self._questions = value if isinstance(value, OneQuestionAtATime) \
            else OneQuestionAtATime(value)

    # -- control from other threads (TUI) -----------------------------------------------
    def cancel(self) -> None:
        """Interrupt now: the running actions are told to stop; state is saved (exit 130)."""
        self._cancel.set()
        for step_cancel in list(self._step_cancels):
            step_cancel.set()

    def request_pause(self) -> None:
        """Stop after the running steps finish (state saved; resumable)."""
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
        if (bad := deployment_name_error(self.deployment)) is not None:
            raise InputError(bad)
        self._check_phase_selection()
        ddir = deployment_dir(self.state_dir, self.deployment)
        created = not ddir.exists()
        ddir.mkdir(parents=True, exist_ok=True, mode=0o700)
        wipe = False
        what = f"{'resume' if resume_of else 'run'} {self.rb.runbook}"
        try:
            # Whatever ends the run (an answer the runner did not expect included), the
            # journal is closed and the lock released: a later run in this process (the
            # TUI's next press of "run") must never find its own pid holding the lock.
            with DeploymentLock(ddir / "lock").acquire(self.deployment, what), \
                    Journal.open(self.state_dir, self.deployment) as journal:
                self.journal = journal
                try:
                    return self._lifecycle(journal, resume_of)
                except (InputError, PromptCancelled):
                    # Nothing recorded for a deployment this invocation created: write
                    # nothing at all (an empty journal would later pass for one seen here).
                    wipe = created and not self.run_id
                    raise
                finally:
                    self._close_resources()
        except PromptCancelled:
            return EXIT_INTERRUPTED  # before a run was recorded: nothing ran, nothing kept
        finally:
            if wipe:
                shutil.rmtree(ddir, ignore_errors=True)

    def _lifecycle(self, journal: Journal, resume_of: str | None) -> int:
        """One run with the lock held and the journal open; returns the exit code."""
        try:
            status, code, message = self._start_and_run(journal, resume_of)
        except KeyboardInterrupt:
            status, code, message = "interrupted", EXIT_INTERRUPTED, "interrupted by the operator"
        except PromptCancelled as e:
            if not self._recorded(journal):
                self._notify(RunFinished(self.run_id, status="interrupted",
                                         exit_code=EXIT_INTERRUPTED,
                                         message=f"cancelled by the operator ({e}); nothing ran"))
                raise
            status, code, message = ("interrupted", EXIT_INTERRUPTED,
                                     f"cancelled by the operator ({e}); state saved, resumable")
        except InputError:
            self._close_resources()
            if self._recorded(journal):
                journal.update_run(self.run_id, status="failed", finished=time.time(),
                                   exit_code=EXIT_INPUT, message="bad input")
            raise
        except Exception as e:
            # A defect of ours: the run is recorded as failed (the traceback still goes up).
            if self._recorded(journal):
                journal.update_run(self.run_id, status="failed", finished=time.time(),
                                   exit_code=EXIT_FAILED,
                                   message=self.redact(f"internal error: {type(e).__name__}: {e}"))
            raise
        finally:
            self._close_resources()
        if self.run_id:
            self._remember_params(journal, status)
            journal.update_run(self.run_id, status=status, finished=time.time(), exit_code=code,
                               message=message)
            self._emit(RunFinished(self.run_id, status=status, exit_code=code, message=message))
        return code

    def _recorded(self, journal: Journal) -> bool:
        return bool(self.run_id) and journal.run(self.run_id) is not None

    def _start_and_run(self, journal: Journal, resume_of: str | None) -> tuple[str, int, str]:
        """Record the run (new or resumed), then run its phases."""
        previous: dict[str, StepState] = {}
        self.state = journal.state()
        # Known here: a run from this state dir changed something for the deployment,
        # or its name was typed for a destructive step. A refused or read-only run (a
        # teardown that only listed) does not count.
        self._seen_before = bool(journal.get_meta(META_KNOWN_HERE)) or self.state.changed
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
            previous = self.state.resume_from(row.id)
        self.params = self._resolve_params(journal)
        self.outputs = dict(self.state.outputs)
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
        return self._run_phases(previous)

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
    def _run_phases(self, previous: dict[str, StepState]) -> tuple[str, int, str]:
        selected = self.options.phases
        for phase in self.rb.phases:
            if selected and phase.id not in selected:
                continue
            if self.options.only_step and not any(
                    s.id == self.options.only_step for s in phase.steps + phase.gates):
                continue
            reason = self.state.lock_reason(self.rb.phases, phase.id, self.deployment)
            if reason is not None:
                self._emit(PhaseLocked(self.run_id, phase_id=phase.id, reason=reason))
                return "failed", EXIT_FAILED, reason
            self._emit(PhaseStarted(self.run_id, phase_id=phase.id, title=phase.title))
            try:
                ok = self._run_phase(phase, previous)
            except Interrupted:
                self._emit(PhaseFinished(self.run_id, phase_id=phase.id, status="interrupted"))
                return "interrupted", EXIT_INTERRUPTED, "interrupted; state saved, resumable"
            except Paused:
                self._emit(PhaseFinished(self.run_id, phase_id=phase.id, status="paused"))
                return "paused", EXIT_INTERRUPTED, "paused by the operator; resumable"
            except Declined as e:
                # Nothing failed: the phase stays ready to run (state.DECLINED says why 130).
                self._emit(PhaseFinished(self.run_id, phase_id=phase.id, status=DECLINED))
                return DECLINED, EXIT_INTERRUPTED, str(e)
            except GuardError as e:
                self._emit(PhaseFinished(self.run_id, phase_id=phase.id, status="stopped"))
                return "stopped", EXIT_FAILED, str(e)
            self._emit(PhaseFinished(self.run_id, phase_id=phase.id,
                                     status="passed" if ok else "failed"))
            if not ok:
                return "failed", EXIT_FAILED, f"phase {phase.id!r} failed"
            if phase.gates and not self.options.only_step:
                self._emit(GatesPassed(self.run_id, phase_id=phase.id))
        return "passed", EXIT_OK, ""

    def _run_phase(self, phase: Phase, previous: dict[str, StepState]) -> bool:
        ok = True
        if phase.gates:
            self._emit(GatesCleared(self.run_id, phase_id=phase.id))
        parallel = self.options.parallel
        overlap = concurrent(phase) and parallel > 1 and not self.options.only_step
        for role, steps in (("step", phase.steps), ("gate", phase.gates)):
            if role == "step" and overlap:
                if not self._run_steps_concurrently(phase, previous, parallel):
                    return False
                continue
            for step in steps:
                if self.options.only_step and step.id != self.options.only_step:
                    continue
                if self._cancel.is_set():
                    raise Interrupted
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
                    raise Paused
        return ok

    def _run_steps_concurrently(self, phase: Phase, previous: dict[str, StepState],
                                parallel: int) -> bool:
        """The phase's steps, each as soon as the steps it needs have finished, at most
        ``parallel`` at once (engine/schedule.py has the rule). Each step is journaled by
        ``_run_step`` exactly as in the sequential loop. A failure, an interruption, a
        pause or a refusal starts nothing new; the steps already running finish (each ends
        journaled), then the phase ends as the sequential loop would have ended it."""
        needs = dependencies(phase)
        pending = list(phase.steps)  # runbook order: the order ready steps start in
        done: set[str] = set()
        running: dict[str, Any] = {}  # step id -> the Step, while its thread runs
        results: queue.Queue[tuple[Any, StepOutcome | None, BaseException | None]] = \
            queue.Queue()
        error: BaseException | None = None
        failed: Any = None  # the step whose failure ends the phase
        ok = True

        def work(step: Any) -> None:
            try:
                results.put((step, self._run_step(phase, step, "step", previous.get(step.id)),
                             None))
            except BaseException as e:  # raised again in the runner's thread, below
                results.put((step, None, e))

        while pending or running:
            stopping = error is not None or failed is not None or self._pause.is_set()
            if not stopping and self._cancel.is_set():
                error = Interrupted()
                stopping = True
            if not stopping:
                alone = any(runs_alone(s) for s in running.values())
                for step in list(pending):
                    if alone or len(running) >= parallel:
                        break
                    if not all(d in done for d in needs[step.id]):
                        continue
                    if runs_alone(step):
                        if running:
                            break  # it starts once the running steps have finished
                        alone = True
                    pending.remove(step)
                    running[step.id] = step
                    threading.Thread(target=work, args=(step,), name=f"phase-{step.id}",
                                     daemon=True).start()
            if not running:
                break  # nothing runs and nothing can start: the phase ends here
            try:
                step, outcome, exc = results.get(timeout=0.05)
            except queue.Empty:
                continue
            except KeyboardInterrupt:
                self.cancel()  # every running step stops; each is journaled interrupted
                continue
            del running[step.id]
            if exc is not None:
                error = error or exc
                continue
            assert outcome is not None
            if outcome.status == "failed" and step.on_failure != "continue":
                failed = failed or step
                continue
            done.add(step.id)
        if error is not None:
            raise error
        if failed is not None:
            if failed.on_failure != "abort":
                cleanup = next(c for c in phase.cleanup if c.id == failed.on_failure)
                self._run_step(phase, cleanup, "cleanup", None)
            return False
        if pending:  # stopped by a pause before every step started
            raise Paused
        if self._pause.is_set():
            raise Paused
        return ok

    # -- events and resources ------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        assert self.journal is not None
        with self._emit_lock:
            self.journal.record(event)  # the one record of the run
            self.state.apply(event)
            for sink in self.sinks:
                try:
                    sink(event)
                except Exception:  # a broken display must never stop a deployment
                    pass

    def _notify(self, event: Event) -> None:
        """Tell the sinks only: for an ending with no run recorded (nothing to journal)."""
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


def _is_secret_ref(v: Any) -> bool:
    return isinstance(v, dict) and set(v) == {"$secret"}


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())
