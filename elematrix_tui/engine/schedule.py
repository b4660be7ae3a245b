"""Which steps of a phase may run at the same time: the dependency rule, in one place.

A step waits for (its dependencies):

- every step before it in the phase, when it has no ``needs:`` (the default: a runbook
  written before ``needs:`` existed runs one step after another, exactly as before);
- with ``needs:`` (also ``needs: []``): the steps it names, plus every step of the phase
  its expressions read (``steps.<id>`` in ``with``, ``when``, ``locks`` or ``fix``), so a
  runbook cannot forget a dependency its own expressions already state.

Steps that may ask the operator (``confirm: true``, ``destructive: true``) run alone: the
runner starts one only when nothing else of the phase runs, and starts nothing beside it
(:func:`runs_alone`). Two prompts never overlap, and no other step's log scrolls past a
question. Questions an action asks by itself (an SSH host key to trust) are serialised by
the runner (one question at a time), whatever runs.

Gates and cleanup steps are not scheduled here: gates run one after another once every
step of the phase has finished (they close the phase), cleanup only when named by a
failed step's ``on_failure``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from .action import Questions
from .expressions import ExpressionError, analyse, has_expression
from .model import Phase, Step

# How many steps of one phase run at once at most (RunOptions.parallel's default). Small:
# the work is waiting on AWS and SSH, and every running step holds a thread and may hold
# an SSH channel.
DEFAULT_PARALLEL = 4


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def expression_steps(step: Step) -> set[str]:
    """The step ids a step's expressions read (``steps.<id>``), wherever they are."""
    texts = list(_strings(step.with_))
    if step.when is not None:
        texts.append(step.when if has_expression(step.when) else "{{ " + step.when + " }}")
    if isinstance(step.locks, dict):
        texts += list(_strings(step.locks))
    if step.fix:
        texts.append(step.fix)
    out: set[str] = set()
    for text in texts:
        if not has_expression(text):
            continue
        try:
            refs, _ = analyse(text)
        except ExpressionError:
            continue  # the loader reports it; the step fails on it when it renders
        out |= {r.name for r in refs if r.root == "steps"}
    return out


def dependencies(phase: Phase) -> dict[str, list[str]]:
    """Each step of ``phase.steps`` -> the ids of the phase's steps it waits for, in
    runbook order. Only earlier steps count (the loader refuses a later one)."""
    out: dict[str, list[str]] = {}
    earlier: list[str] = []
    for step in phase.steps:
        if step.needs is None:
            out[step.id] = list(earlier)
        else:
            wanted = set(step.needs) | expression_steps(step)
            out[step.id] = [s for s in earlier if s in wanted]
        earlier.append(step.id)
    return out


def runs_alone(step: Step) -> bool:
    """A step that may ask for a confirmation runs with nothing beside it."""
    return step.confirm or step.destructive


def concurrent(phase: Phase) -> bool:
    """Whether any two steps of the phase may run at once (else the plain sequential loop)."""
    return any(s.needs is not None for s in phase.steps)


class OneQuestionAtATime:
    """The operator's ``Questions``, asked one at a time whichever step (thread) asks: a
    second question waits until the first is answered (two prompts never overlap)."""

    def __init__(self, inner: Questions) -> None:
        self.inner = inner
        self._lock = threading.Lock()

    def confirm(self, step_id: str, title: str, changes: list[str], *, destructive: bool,
                type_to_confirm: str | None) -> bool:
        with self._lock:
            return self.inner.confirm(step_id, title, changes, destructive=destructive,
                                      type_to_confirm=type_to_confirm)

    def approve(self, step_id: str, prompt: str) -> tuple[bool, str, str]:
        with self._lock:
            return self.inner.approve(step_id, prompt)

    def secret(self, name: str, help: str) -> str:
        with self._lock:
            return self.inner.secret(name, help)

    def choose(self, step_id: str, prompt: str, options: list[str]) -> str | None:
        with self._lock:
            return self.inner.choose(step_id, prompt, options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # anything else a front end's questions offer
