"""What a deployment remembers between sessions, kept in its journal (the one store).

Two journal meta keys: ``params`` holds the deployment's non-secret parameter values (the
runner merges a run's values in at the end of a run that did not fail; the TUI writes the
values saved in its parameter form), and ``choices`` holds what the TUI's new-deployment
screen asked for that is not a parameter (the runbook, the AWS profile and region picked).

Older versions of the TUI kept both in ``tui.json`` beside the journal. Reading or writing a
deployment's settings migrates such a file once into the journal and renames it
``tui.json.migrated``; nothing writes ``tui.json`` any more. Secrets never reach this store:
values of parameters the caller names as secrets, or that the journal records as a stored
secret's name, are dropped.

Only the standard library and the journal (sqlite3) are imported: the start screen lists
every deployment's settings before its first frame.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .journal import Journal
from .paths import deployment_dir
from .resolve import META_PARAMS, META_SECRET_NAMES

if TYPE_CHECKING:
    from .model import Runbook

# The deployment's remembered values are the journal's META_PARAMS (engine/resolve.py).
# Journal meta: the TUI's choices that are not parameters (see CHOICES).
META_CHOICES = "choices"
# The keys of META_CHOICES, as the TUI (and tui.json before it) names them.
CHOICES = ("runbook_name", "runbook_path", "aws_profile", "aws_region")
# The file older TUIs kept these in, and the name it is given once migrated.
LEGACY_FILE = "tui.json"
MIGRATED_SUFFIX = ".migrated"


def _plain(value: Any) -> Any:
    """JSON-able as the journal stores it (a Path becomes its text, as tui.json did)."""
    return json.loads(json.dumps(value, default=str))


def _legacy_path(state_dir: Path, deployment: str) -> Path:
    return deployment_dir(state_dir, deployment) / LEGACY_FILE


def _read_legacy(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: nothing to carry over, but it is still moved aside
    return data if isinstance(data, dict) else {}


def _merge(journal: Journal, settings: dict[str, Any], *, covers: Collection[str],
           never: Collection[str]) -> None:
    """Write ``settings`` (tui.json's shape) into the journal. Choices replace the stored
    ones; of the remembered parameter values, those named in ``covers`` are replaced by
    the given ones (a value cleared in the form is forgotten), the others kept (another
    runbook's). Names in ``never``, and every stored secret's name, are never written."""
    # The runner's record of the deployment's stored secrets (names only). Imported here,
    # not at the top: the start screen imports this module before its first frame.

    drop = set(never) | set(journal.get_meta(META_SECRET_NAMES) or [])
    choices = dict(journal.get_meta(META_CHOICES) or {})
    choices.update({k: settings[k] for k in CHOICES if k in settings})
    journal.set_meta(META_CHOICES, _plain(choices))
    given = settings.get("params")
    if isinstance(given, dict):
        params = {k: v for k, v in (journal.get_meta(META_PARAMS) or {}).items()
                  if k not in drop and k not in covers}
        params.update({k: v for k, v in given.items() if k not in drop and v is not None})
        journal.set_meta(META_PARAMS, _plain(params))


def migrate_legacy(state_dir: Path, deployment: str) -> bool:
    """Carry a deployment's ``tui.json`` into its journal once; True when one was moved.

    The file's values are the ones the TUI last saved, so they win over the journal's
    remembered ones (as they did when the TUI passed them to every run)."""
    path = _legacy_path(state_dir, deployment)
    legacy = _read_legacy(path)
    if legacy is None:
        return False
    journal = Journal.open(state_dir, deployment)
    try:
        params = legacy.get("params")
        _merge(journal, legacy, covers=list(params) if isinstance(params, dict) else [],
               never=())
    finally:
        journal.close()
    try:
        os.replace(path, path.with_name(path.name + MIGRATED_SUFFIX))
    except FileNotFoundError:
        pass  # another window migrated it meanwhile: the same values, merged the same way
    return True


def settings_from(journal: Journal) -> dict[str, Any]:
    """A deployment's settings (``runbook_name``, ..., ``params``) from its open journal."""
    out: dict[str, Any] = dict(journal.get_meta(META_CHOICES) or {})
    params = journal.get_meta(META_PARAMS)
    if params:
        out["params"] = dict(params)
    return out


def read_settings(state_dir: Path, deployment: str) -> dict[str, Any]:
    """A deployment's settings; {} for one with no journal (nothing is created)."""
    migrate_legacy(state_dir, deployment)
    if not Journal.exists(state_dir, deployment):
        return {}
    journal = Journal.open(state_dir, deployment)
    try:
        return settings_from(journal)
    finally:
        journal.close()


def write_settings(state_dir: Path, deployment: str, settings: dict[str, Any], *,
                   runbook: Runbook | None = None) -> None:
    """Remember the TUI's choices and parameter values for a deployment (in its journal).

    With ``runbook``, its parameters are the ones ``settings["params"]`` covers, and the
    values of its secret and one-shot (``remember: false``) parameters are never written."""
    covers: list[str] = []
    never: list[str] = []
    if runbook is not None:
        covers = [p.name for p in runbook.params]
        never = [p.name for p in runbook.params if p.type == "secret" or not p.remember]
    migrate_legacy(state_dir, deployment)
    journal = Journal.open(state_dir, deployment)
    try:
        _merge(journal, settings, covers=covers, never=never)
    finally:
        journal.close()
