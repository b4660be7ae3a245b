"""The one place a runner is wired: a :class:`RunRequest` in, a :class:`Runner` out.

The CLI (``run``, ``resume``), headless practice and the TUI all build their runner here,
so a new collaborator of the runner is added once. It lives in the engine, and the action
registry is an argument: the engine imports no sibling package, and the UI may import only
the engine and the action registry (the contracts in docs/architecture.md), so each caller
passes ``elematrix_tui.actions.default_registry()`` (or a test's own registry).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .action import Questions
from .events import Sink
from .model import Runbook

if TYPE_CHECKING:
    from .registry import Registry
    from .runner import Runner, RunOptions


@dataclass
class RunRequest:
    """Everything a runner is built from (one ``run``/``resume`` of one deployment)."""

    runbook: Runbook
    deployment: str
    state_dir: Path
    params: dict[str, Any]
    questions: Questions
    sinks: list[Sink]
    runbook_path: Path | None = None
    options: RunOptions | None = None  # None: the defaults (every phase, nothing assumed)


def build_runner(req: RunRequest, registry: Registry) -> Runner:
    """The engine runner for ``req``, with the actions of ``registry``."""
    from .runner import Runner  # late: the TUI's start screen must not pay for it

    return Runner(req.runbook, deployment=req.deployment, state_dir=req.state_dir,
                  params=req.params, questions=req.questions, sinks=req.sinks,
                  registry=registry, options=req.options, runbook_path=req.runbook_path)


def typed_secrets(runbook: Runbook, params: dict[str, Any]) -> set[str]:
    """The secret parameters given a value in ``params``: in the TUI, typed (or generated)
    by the operator over the stored one ("stored: type to replace"), which is the explicit
    replace the engine otherwise wants as ``--replace-secret``."""
    return {p.name for p in runbook.params if p.type == "secret" and params.get(p.name)}
