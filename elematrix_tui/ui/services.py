"""What the screens are given by the app, instead of reaching back into it.

The app builds these and passes them to each screen it opens, so no screen imports the
app (``ui/app.py`` imports the screens, never the other way round: no import cycle).
Plain dataclasses of values and callbacks: a test can give a screen its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..engine.model import Runbook
    from .bridge import RunnerFactory
    from .catalog import DeploymentEntry


@dataclass
class Session:
    """One TUI session: where its state is, and what every screen's banner says."""

    state_dir: Path
    practice: bool = False
    # Lines the operator must see first (practice emulator, secret store fallback...).
    notices: list[str] = field(default_factory=list)
    # Phases this session may run (None: all), e.g. practice without Docker.
    allowed_phases: list[str] | None = None


@dataclass(frozen=True)
class StartActions:
    """What the start screen's keys lead to (the app's flows)."""

    new_deployment: Callable[[Path | None], None]
    open_deployment: Callable[[DeploymentEntry], None]


@dataclass(frozen=True)
class RunServices:
    """What the run screen needs beyond its runbook and deployment."""

    session: Session
    runner_factory: RunnerFactory
    # Keep edited parameters: (deployment, runbook, runbook path, values).
    save_params: Callable[[str, Runbook, Path | None, dict[str, Any]], None]
    # A run ended with this exit code (the app leaves with the last one).
    run_ended: Callable[[int], None]
