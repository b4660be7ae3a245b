"""What the start screen lists: runbooks, AWS profiles, deployments and their runs.

Pure Python (no textual). The runbooks come from the engine's catalogue
(``engine/catalog.py``, the one the CLI uses too) and a deployment's remembered settings
from its journal (``engine/settings.py``). File locations come from functions that tests
point elsewhere through environment variables (``ELEMATRIX_RUNBOOK_DIR``,
``AWS_CONFIG_FILE``).
"""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine import settings as store

# The runbook catalogue is the engine's (the CLI's too); the screens reach it through here.
from ..engine.catalog import RunbookEntry as RunbookEntry
from ..engine.catalog import list_runbooks as list_runbooks
from ..engine.catalog import title_of as title_of

if TYPE_CHECKING:
    from ..engine.model import Runbook


@dataclass
class RunInfo:
    """One recorded run of a deployment."""

    run_id: str
    status: str
    runbook: str = ""
    runbook_path: str = ""
    started: float | None = None


@dataclass
class DeploymentEntry:
    """A deployment found in the state dir, with its last run."""

    name: str
    runbook: str = ""
    runbook_path: Path | None = None
    last_status: str = "never run"
    last_run: str | None = None
    interrupted_run: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def aws_profiles(config_file: Path | None = None,
                 credentials_file: Path | None = None) -> dict[str, str | None]:
    """Profile name -> its region, read from the AWS config files (no boto3 needed)."""
    home = Path.home() / ".aws"
    cfg_path = config_file or Path(os.environ.get("AWS_CONFIG_FILE", home / "config"))
    cred_path = credentials_file or Path(
        os.environ.get("AWS_SHARED_CREDENTIALS_FILE", home / "credentials"))
    profiles: dict[str, str | None] = {}
    cfg = configparser.ConfigParser()
    try:
        cfg.read(cfg_path, encoding="utf-8")
    except configparser.Error:
        cfg = configparser.ConfigParser()
    for section in cfg.sections():
        if section == "default":
            name = "default"
        elif section.startswith("profile "):
            name = section[len("profile "):].strip()
        else:
            continue  # sso-session and services sections are not profiles
        profiles[name] = cfg.get(section, "region", fallback=None)
    creds = configparser.ConfigParser()
    try:
        creds.read(cred_path, encoding="utf-8")
    except configparser.Error:
        creds = configparser.ConfigParser()
    for section in creds.sections():
        profiles.setdefault(section, None)
    return dict(sorted(profiles.items(), key=lambda kv: (kv[0] != "default", kv[0])))


AWS_REGIONS = [
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "eu-west-1",
    "eu-west-2", "eu-west-3", "eu-central-1", "eu-north-1", "eu-south-1", "ap-south-1",
    "ap-northeast-1", "ap-northeast-2", "ap-southeast-1", "ap-southeast-2", "sa-east-1",
]


def deployments_dir(state_dir: Path) -> Path:
    return state_dir / "deployments"


def read_settings(state_dir: Path, name: str) -> dict[str, Any]:
    """A deployment's remembered runbook, AWS profile/region and non-secret params."""
    return store.read_settings(state_dir, name)


def write_settings(state_dir: Path, name: str, settings: dict[str, Any], *,
                   runbook: Runbook | None = None) -> None:
    """Remember runbook, AWS profile/region and non-secret params of a deployment (in its
    journal; ``runbook``'s secret and one-shot values are never written)."""
    store.write_settings(state_dir, name, settings, runbook=runbook)


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def open_journal(state_dir: Path, name: str) -> Any | None:
    """The deployment's journal, or None when there is none (or no journal module yet)."""
    if not (deployments_dir(state_dir) / name / "journal.sqlite").exists():
        return None
    try:
        from ..engine.journal import Journal
    except ImportError:
        return None
    return Journal.open(state_dir, name)


def close_journal(journal: Any) -> None:
    close = getattr(journal, "close", None)
    if callable(close):
        close()


def journal_runs(journal: Any) -> list[RunInfo]:
    """Runs of a journal, oldest first."""
    out: list[RunInfo] = []
    for r in journal.runs():
        out.append(RunInfo(run_id=str(_get(r, "run_id") or _get(r, "id")),
                           status=str(_get(r, "status", "unknown")),
                           runbook=str(_get(r, "runbook", "") or ""),
                           runbook_path=str(_get(r, "runbook_path", "") or ""),
                           started=_get(r, "started") or _get(r, "started_at")))
    out.sort(key=lambda r: (r.started or 0.0))
    return out


RESUMABLE = frozenset({"interrupted", "running", "paused"})


def list_deployments(state_dir: Path) -> list[DeploymentEntry]:
    """Every deployment in the state dir; interrupted ones first, then by name."""
    root = deployments_dir(state_dir)
    if not root.is_dir():
        return []
    out: list[DeploymentEntry] = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        entry = DeploymentEntry(name=d.name)
        journal = None
        try:
            store.migrate_legacy(state_dir, d.name)
            journal = open_journal(state_dir, d.name)
            if journal is not None:
                entry.settings = store.settings_from(journal)
            runs = journal_runs(journal) if journal is not None else []
        except Exception:  # a broken journal must not hide the other deployments
            runs = []
            entry.last_status = "journal unreadable"
        finally:
            if journal is not None:
                close_journal(journal)
        entry.runbook = str(entry.settings.get("runbook_name", "") or "")
        rb = entry.settings.get("runbook_path")
        entry.runbook_path = Path(rb) if rb else None
        if runs:
            last = runs[-1]
            entry.last_status = last.status
            entry.last_run = last.run_id
            entry.runbook = entry.runbook or last.runbook
            if entry.runbook_path is None and last.runbook_path:
                entry.runbook_path = Path(last.runbook_path)
            if last.status in RESUMABLE:
                entry.interrupted_run = last.run_id
        out.append(entry)
    out.sort(key=lambda e: (e.interrupted_run is None, e.name))
    return out


def passed_phases(journal: Any) -> set[str]:
    """Phases whose gates passed in this deployment (what unlocks the next phase)."""
    try:
        return set(journal.passed_gates())
    except AttributeError:
        return set()


def find_run(state_dir: Path, run_id: str) -> str | None:
    """The deployment that holds ``run_id``."""
    for entry in list_deployments(state_dir):
        journal = open_journal(state_dir, entry.name)
        if journal is None:
            continue
        try:
            if any(r.run_id == run_id for r in journal_runs(journal)):
                return entry.name
        finally:
            close_journal(journal)
    return None


def load_runbook_file(path: Path) -> Runbook:
    """Load a runbook through the engine's loader (located errors); plain pydantic before it."""
    from ..actions import default_registry
    from ..engine.loader import load_runbook


    return load_runbook(path, default_registry())
