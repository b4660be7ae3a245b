"""Where elematrix keeps its state. One function each, so tests patch a single place."""

from __future__ import annotations

import os
import re
from pathlib import Path

DEPLOYMENT_RE = re.compile(r"^[a-z][a-z0-9-]{1,30}$")
# The rule above in words, for every message that refuses a name (CLI, runner, TUI form).
DEPLOYMENT_RULE = "2-31 characters: a lower-case letter, then lower-case letters, digits or '-'"


def deployment_name_error(name: str) -> str | None:
    """Why ``name`` cannot name a deployment, or None."""
    if DEPLOYMENT_RE.fullmatch(name):
        return None
    return f"deployment name {name!r}: {DEPLOYMENT_RULE}"


def state_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """``--state-dir``, else ``ELEMATRIX_STATE_DIR``, else the platform's user state dir."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("ELEMATRIX_STATE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "elematrix"


def config_dir() -> Path:
    """User configuration (the opt-in secrets file lives here, never under the state dir)."""
    env = os.environ.get("ELEMATRIX_CONFIG_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "elematrix"


def deployment_dir(root: Path, deployment: str) -> Path:
    return root / "deployments" / deployment


def user_runbook_dir() -> Path:
    """The operator's own runbooks: ``ELEMATRIX_RUNBOOK_DIR``, else ``runbooks`` in the
    config dir. The CLI and the TUI both find runbooks by name here (engine/catalog.py)."""
    env = os.environ.get("ELEMATRIX_RUNBOOK_DIR")
    if env:
        return Path(env).expanduser()
    return config_dir() / "runbooks"
