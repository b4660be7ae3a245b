"""The runbook catalogue: the one place that knows which runbooks there are, and finds one
by name, for the CLI and the TUI alike.

Two folders: the bundled runbooks (``bundled.runbooks_dir()``) and the operator's own
(``paths.user_runbook_dir()``: ``ELEMATRIX_RUNBOOK_DIR``, else ``runbooks/`` under the
config dir). Pure standard library plus the engine's bounded YAML loader (imported late):
the TUI's start screen lists runbooks before its first frame.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..bundled import bundled_runbook_names, runbooks_dir
from .errors import InputError
from .paths import user_runbook_dir

# The file names a runbook may have; a runbook's name is its file name without them.
SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class RunbookEntry:
    """A runbook file the operator can pick."""

    name: str
    title: str
    path: Path
    source: str  # bundled | user


_TOP_KEY = re.compile(r"^(runbook|title):[ \t]*(.*?)[ \t]*$", re.MULTILINE)


def title_of(path: Path) -> tuple[str, str]:
    """The runbook's name and title, read from its top-level keys without parsing it all:
    the start screen lists every runbook and must paint fast (a full YAML parse of the
    bundled runbooks took most of the first frame)."""
    # The engine's bounded loader: a runbook file in the folder cannot exhaust memory
    # (an alias bomb) just by being listed.
    from .yamlloc import MAX_BYTES, load_located

    try:
        if path.stat().st_size > MAX_BYTES:
            return path.stem, "(too large to be a runbook)"
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return path.stem, "(unreadable runbook)"
    found = {k: v for k, v in _TOP_KEY.findall(text)}
    if "runbook" in found:
        out = []
        for key in ("runbook", "title"):
            raw = found.get(key, "")
            val, bad = load_located(raw, str(path)) if raw else ("", [])
            if bad or not isinstance(val, (str, int, float, bool, type(None))):
                val = raw  # shown as written: never a structure expanded into a title
            out.append(str(val)[:200] if val is not None else "")
        return out[0] or path.stem, out[1]
    data, problems = load_located(text, str(path))
    if problems:
        return path.stem, "(not valid YAML)"
    if not isinstance(data, dict):
        return path.stem, "(not a runbook)"
    return str(data.get("runbook", path.stem)), str(data.get("title", ""))


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((p for s in SUFFIXES for p in folder.glob(f"*{s}")), key=lambda p: p.name)


def list_runbooks(user_dir: Path | None = None) -> list[RunbookEntry]:
    """Bundled runbooks first, then the operator's, each sorted by file name."""
    out: list[RunbookEntry] = []
    try:
        bundled = _files(runbooks_dir())
    except FileNotFoundError:
        bundled = []
    for path in bundled:
        out.append(RunbookEntry(*title_of(path), path, "bundled"))
    for path in _files(user_dir if user_dir is not None else user_runbook_dir()):
        out.append(RunbookEntry(*title_of(path), path, "user"))
    return out


def resolve_runbook(name: str) -> Path:
    """A path, or the name of a bundled runbook (``poc-ec2``) or of one in the operator's
    folder. Raises InputError (exit 2) for a name found nowhere, or found in both."""
    p = Path(name)
    if p.exists() or "/" in name or name.endswith(SUFFIXES):
        if not p.exists():
            raise InputError(f"{name}: no such runbook file")
        return p
    udir = user_runbook_dir()
    user = [udir / f"{name}{s}" for s in SUFFIXES if (udir / f"{name}{s}").is_file()]
    bundled = [runbooks_dir() / f"{name}{s}" for s in SUFFIXES
               if (runbooks_dir() / f"{name}{s}").is_file()]
    if user and bundled:
        # Never silently: a copied runbook of the same name would run in place of ours.
        raise InputError(f"{name}: is both a bundled runbook and {user[0]}; refusing to "
                         f"guess. Give the path to run yours ({user[0]}), or rename it")
    if len(user) > 1:
        raise InputError(f"{name}: both {user[0]} and {user[1]} exist; refusing to guess. "
                         f"Give the path of the one to run")
    if user or bundled:
        return (user or bundled)[0]
    raise InputError(f"{name}: no such runbook file, and no bundled runbook of that name "
                     f"(bundled: {', '.join(bundled_runbook_names())}; yours are read from "
                     f"{udir})")
