"""One step of a run: resume decision, ``when``, inputs, confirmation, check, apply in a
worker thread with a timeout, retries, outputs, ``expect`` — every outcome an event.

A mixin of ``Runner`` (cut from ``runner.py`` along this seam): the runner owns the run's
lifecycle, parameters and phases; this owns the step. The attributes below are the
runner's, named here so the step code is typed.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError

from .action import Action, ActionFailed, Check, Questions, Result
from .context import Context, ContextHost, Interrupted, RunOptions, StepOutcome, jsonable
from .errors import InputError, PromptCancelled
from .events import Event, GateResult, LogLine, Question, StepFinished, StepRetry, StepStarted
from .expressions import ExpressionError, is_truthy, render_string, render_value
from .journal import Journal
from .model import Phase, Runbook, Step
from .paths import deployment_dir
from .plan_model import change_lines
from .registry import Registry
from .secrets import MASK, Redactor
from .state import DECLINED, FINISHED, RunState, StepState


class Declined(Exception):
    """The operator declined a confirmation: the run stops before the step (state.DECLINED)."""


# Journal meta: the operator typed this deployment's name here for a destructive step.
META_KNOWN_HERE = "known_here"


class StepsMixin:
    """The step machinery of :class:`engine.runner.Runner`."""

    rb: Runbook
    deployment: str
    state_dir: Path
    options: RunOptions
    params: dict[str, Any]
    outputs: dict[str, dict[str, Any]]
    state: RunState
    redact: Redactor
    registry: Registry
    questions: Questions
    journal: Journal | None
    run_id: str
    _cancel: threading.Event
    _step_cancels: set[threading.Event]
    _seen_before: bool

    def _emit(self, event: Event) -> None:
        raise NotImplementedError  # the runner's: journal it, fold it, show it

    def _runner(self) -> ContextHost:
        return cast(ContextHost, self)  # this mixin is only ever part of a Runner

    def _variables(self) -> dict[str, Any]:
        # A copy of the outputs: a step running beside this one may add its own meanwhile.
        return {"params": self.params, "steps": dict(self.outputs),
                "deployment": self.deployment,
                "run_id": self.run_id,
                "deployment_dir": str(deployment_dir(self.state_dir, self.deployment))}

    def _run_step(self, phase: Phase, step: Step, role: str,
                  prev: StepState | None) -> StepOutcome:
        is_gate = role == "gate"
        if prev is not None and prev.status in FINISHED and not is_gate \
                and not self._process_local(step):
            # Finished in the run being resumed: keep its outputs, never apply again.
            self.outputs[step.id] = prev.outputs
            self._emit(StepFinished(self.run_id, phase_id=phase.id, step_id=step.id,
                                    status=prev.status, attempt=prev.attempt, duration=0.0,
                                    outputs=prev.outputs, message=prev.message or "",
                                    restored=True, is_gate=is_gate, role=role))
            return StepOutcome(prev.status, prev.outputs)
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
        ctx = Context(self._runner(), phase, step, attempt)
        # A step that was running when the process died, that must be confirmed, or whose
        # action reads exact facts (check_first) is checked first: if the change already
        # holds, nothing is applied (and nobody asked).
        if interrupted or step.confirm or step.destructive or action.check_first:
            check = self._call_check(action, ctx, inputs, step)
            if check is not None and check.in_sync:
                outputs = self._select_outputs(step, check.outputs, check.data)
                msg = "already in the desired state" + (
                    " (checked after an interrupted attempt)" if interrupted else "")
                return self._finish_without_apply(phase, step, role, "ok", outputs, msg, attempt)
            if (step.confirm or step.destructive) and not action.read_only:
                changes = change_lines(check, recorded=step.id in self.outputs)
                if not self._confirm(step, title, changes):
                    message = (f"the operator declined step {step.id!r}; nothing was changed "
                               f"by it. Run the phase again (or resume) when ready.")
                    self._finish_without_apply(phase, step, role, DECLINED, {}, message, attempt)
                    raise Declined(message)
        delay = step.retry.delay
        while True:
            ctx = Context(self._runner(), phase, step, attempt)
            self._step_cancels.add(ctx.cancel)
            self._emit(StepStarted(self.run_id, phase_id=phase.id, step_id=step.id, title=title,
                                   action=step.action, attempt=attempt, is_gate=is_gate,
                                   inputs=masked, role=role))
            started = time.monotonic()
            try:
                outcome = self._clean(self._attempt(action, ctx, inputs, step))
            finally:
                self._step_cancels.discard(ctx.cancel)
            duration = time.monotonic() - started
            if outcome.status == "interrupted":
                self._emit(StepFinished(self.run_id, phase_id=phase.id, step_id=step.id,
                                        status="interrupted", attempt=attempt, duration=duration,
                                        is_gate=is_gate, message=outcome.message, role=role))
                raise Interrupted
            if outcome.status == "failed" and outcome.retry \
                    and attempt - first_attempt + 1 < step.retry.attempts:
                self._emit(StepFinished(self.run_id, phase_id=phase.id, step_id=step.id,
                                        status="failed", attempt=attempt, duration=duration,
                                        is_gate=is_gate, message=self.redact(outcome.message),
                                        diagnosis=outcome.diagnosis, fix=outcome.fix,
                                        role=role))
                self._emit(StepRetry(self.run_id, step_id=step.id, attempt=attempt + 1,
                                     delay=delay, reason=self.redact(outcome.message)))
                if self._cancel.wait(delay):
                    raise Interrupted
                delay *= step.retry.backoff
                attempt += 1
                continue
            break
        if outcome.status in ("ok", "changed"):
            self.outputs[step.id] = outcome.outputs
            assert self.journal is not None
            for name, value in self._lock_values(step).items():
                if value is not None and value != "":
                    self.journal.set_meta(f"permanent.{name}", value)
        outputs = self.redact.value(outcome.outputs)
        message = self.redact(outcome.message)
        fix = outcome.fix or (self._fix(step) if outcome.status == "failed" else None)
        self._emit(StepFinished(self.run_id, phase_id=phase.id, step_id=step.id,
                                status=outcome.status, attempt=attempt, duration=duration,
                                is_gate=is_gate, message=message, outputs=outputs,
                                diagnosis=outcome.diagnosis, fix=fix, role=role))
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

    def _clean(self, o: StepOutcome) -> StepOutcome:
        """Redact every text an action produced before it is journaled or shown."""
        r = self.redact
        return StepOutcome(o.status, o.outputs, r(o.message),
                            r(o.diagnosis) if o.diagnosis else None, r(o.fix) if o.fix else None,
                            o.retry)

    def _fail_early(self, phase: Phase, step: Step, role: str, attempt: int, message: str,
                    fix: str | None = None) -> StepOutcome:
        message = self.redact(message)
        self._emit(StepStarted(self.run_id, phase_id=phase.id, step_id=step.id,
                               title=step.title or step.id, action=step.action, attempt=attempt,
                               is_gate=role == "gate", role=role))
        self._emit(StepFinished(self.run_id, phase_id=phase.id, step_id=step.id, status="failed",
                                attempt=attempt, duration=0.0, is_gate=role == "gate",
                                message=message, fix=fix or self._fix(step), role=role))
        if role == "gate":
            self._emit(GateResult(self.run_id, phase_id=phase.id, gate_id=step.id, passed=False,
                                  message=message, fix=fix or self._fix(step)))
        return StepOutcome("failed", message=message, fix=fix or self._fix(step))

    def _finish_without_apply(self, phase: Phase, step: Step, role: str, status: str,
                              outputs: dict[str, Any], message: str,
                              attempt: int) -> StepOutcome:
        outputs_masked = self.redact.value(outputs)
        if status == "ok":
            self.outputs[step.id] = outputs
        self._emit(StepStarted(self.run_id, phase_id=phase.id, step_id=step.id,
                               title=step.title or step.id, action=step.action, attempt=attempt,
                               is_gate=role == "gate", role=role))
        self._emit(StepFinished(self.run_id, phase_id=phase.id, step_id=step.id, status=status,
                                attempt=attempt, duration=0.0, is_gate=role == "gate",
                                message=message, outputs=outputs_masked, role=role))
        if role == "gate":
            self._emit(GateResult(self.run_id, phase_id=phase.id, gate_id=step.id,
                                  passed=status != "failed", message=message))
        return StepOutcome(status, outputs, message)

    def _mask_inputs(self, action: Action, rendered: dict[str, Any]) -> dict[str, Any]:
        masked = {k: (MASK if k in action.secret_inputs and v else v)
                  for k, v in rendered.items()}
        return self.redact.value(masked)  # type: ignore[no-any-return]

    def _confirm(self, step: Step, title: str, changes: list[str]) -> bool:
        destructive = step.destructive
        if destructive and not self._seen_before and self.state.changed:
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

    def _call_check(self, action: Action, ctx: Context, inputs: Any,
                    step: Step) -> Check | None:
        try:
            return action.check(ctx, inputs)
        except Exception as e:  # a failing check must not hide the step: apply decides
            ctx.log(f"check failed ({type(e).__name__}: {e}); the step will be applied",
                    "warning")
            return None

    def _attempt(self, action: Action, ctx: Context, inputs: Any, step: Step) -> StepOutcome:
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
                return StepOutcome("interrupted", message="interrupted by the operator")
            if timed_out:
                return StepOutcome(
                    "failed", message=f"timed out after {step.timeout:g} s",
                    diagnosis="the step did not finish within its timeout",
                    fix="look at the step's log for where it stopped; raise 'timeout:' in the "
                        "runbook if the work is just slow, then resume")
        if self._cancel.is_set() and "result" not in box:
            return StepOutcome("interrupted", message="interrupted by the operator")
        if "error" in box:
            err = box["error"]
            if isinstance(err, ActionFailed):
                return StepOutcome("failed", message=err.message, diagnosis=err.diagnosis,
                                    fix=err.fix, retry=err.retry)
            if isinstance(err, (KeyboardInterrupt, PromptCancelled)):
                return StepOutcome("interrupted", message="interrupted by the operator")
            if isinstance(err, InputError):
                # The operator's input, found bad only once the step looked at it (a stack
                # directory, say): exit 2 with the located message, as for any bad input.
                raise err
            for line in str(box.get("tb", "")).rstrip().splitlines()[-8:]:
                ctx.log(line, "stderr")
            return StepOutcome("failed", message=f"{type(err).__name__}: {err}",
                                diagnosis=f"the {step.action} action failed unexpectedly",
                                fix=self._fix(step)
                                or "see the log above; report a bug if it is ours")
        result: Result = box["result"]
        outputs = self._select_outputs(step, result.outputs, result.data)
        outcome = StepOutcome(result.status, outputs, result.message, result.diagnosis,
                               result.fix)
        if outcome.status in ("ok", "changed") and step.expect:
            bad = [f"{k} is {outputs.get(k)!r}, expected {v!r}" for k, v in step.expect.items()
                   if outputs.get(k) != v]
            if bad:
                return StepOutcome("failed", outputs, "; ".join(bad),
                                    diagnosis="the step ran but its result is not what the "
                                              "runbook expects", fix=self._fix(step))
        return outcome

    def _select_outputs(self, step: Step, outputs: dict[str, Any], data: Any) -> dict[str, Any]:
        out = dict(outputs)
        if step.outputs:
            import jmespath

            source = data if data is not None else outputs
            for name, expr in step.outputs.items():
                out[name] = jsonable(jmespath.search(expr, source))
        return out
