"""Journal format migrations (see ``journal.py`` and docs/journal.md for the formats).

Format 1 (every release before journal formats existed) kept a ``steps`` table and a
``gates`` table beside the event log. Its runner wrote each step attempt to both, so the
log already holds nearly everything; what it lacks is moved into it here:

- passed gates (``gates`` rows) become ``gates.passed`` events;
- a cleanup step's role (the log only said "gate or not") is written into its events;
- an attempt the table has and the log lacks (a process killed between the two writes)
  becomes a ``step.started`` (and, if it ended, a ``step.finished``) event.

Then both tables are dropped and ``meta.journal_format`` is set, in one transaction: a
crash midway leaves the journal as it was. A copy of the file as it was is kept first,
beside it (``journal.sqlite.format1``), for an operator who must go back to an older
elematrix.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

_ENCODE = json.JSONEncoder(default=str, separators=(",", ":")).encode
_INSERT = "INSERT INTO events(run_id, ts, kind, step_id, data) VALUES(?,?,?,?,?)"


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def migrate_v1(db: sqlite3.Connection, path: Path, *, schema: str, format_key: str,
               version: int) -> None:
    """Bring a format-1 journal (open on ``db``, autocommit mode) to ``version``, in place.

    ``schema``, ``format_key`` and ``version`` are the journal's (``journal.py`` is their
    one home; passed in so this module does not import it)."""
    tables = _tables(db)
    if "steps" in tables or "gates" in tables:
        backup = path.with_name(path.name + ".format1")
        if not backup.exists():
            dest = sqlite3.connect(str(backup))
            try:
                db.backup(dest)
            finally:
                dest.close()
    db.executescript(schema)  # (it commits first) no-op for the tables format 1 has
    db.execute("BEGIN IMMEDIATE")
    try:
        if list(db.execute("SELECT 1 FROM meta WHERE key=?", (format_key,))):
            db.execute("COMMIT")  # another process migrated it while we waited
            return
        tables = _tables(db)
        if "steps" in tables:
            _move_steps(db)
        if "gates" in tables:
            for phase_id, run_id, passed_at in list(db.execute(
                    "SELECT phase_id, run_id, passed_at FROM gates ORDER BY passed_at")):
                db.execute(_INSERT, (run_id, passed_at, "gates.passed", None,
                                     _ENCODE({"phase_id": phase_id})))
        db.execute("DROP TABLE IF EXISTS steps")
        db.execute("DROP TABLE IF EXISTS gates")
        db.execute("INSERT OR REPLACE INTO meta VALUES(?,?)", (format_key, json.dumps(version)))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _move_steps(db: sqlite3.Connection) -> None:
    rows = list(db.execute(
        "SELECT run_id, step_id, phase_id, role, attempt, status, started, finished, inputs, "
        "outputs, message, diagnosis, fix FROM steps ORDER BY started, attempt"))
    logged: dict[tuple[str, str, int], list[tuple[int, str, dict[str, Any]]]] = {}
    for seq, run_id, kind, data in db.execute(
            "SELECT seq, run_id, kind, data FROM events "
            "WHERE kind IN ('step.started', 'step.finished')"):
        d = json.loads(data)
        key = (run_id, str(d.get("step_id")), int(d.get("attempt") or 0))
        logged.setdefault(key, []).append((seq, kind, d))
    for (run_id, step_id, phase_id, role, attempt, status, started, finished, inputs, outputs,
         message, diagnosis, fix) in rows:
        have = logged.get((run_id, step_id, attempt), [])
        if role == "cleanup":
            for seq, _, d in have:
                db.execute("UPDATE events SET data=? WHERE seq=?",
                           (_ENCODE({**d, "role": "cleanup"}), seq))
        kinds = {k for _, k, _ in have}
        if "step.started" not in kinds and attempt > 0:
            db.execute(_INSERT, (run_id, started, "step.started", step_id, _ENCODE({
                "phase_id": phase_id, "step_id": step_id, "title": step_id, "action": "",
                "attempt": attempt, "is_gate": role == "gate", "role": role,
                "inputs": json.loads(inputs or "{}")})))
        if "step.finished" not in kinds and status != "running":
            db.execute(_INSERT, (run_id, finished or started, "step.finished", step_id, _ENCODE({
                "phase_id": phase_id, "step_id": step_id, "status": status,
                "attempt": attempt, "duration": (finished or started) - started,
                "is_gate": role == "gate", "role": role, "message": message or "",
                "outputs": json.loads(outputs or "{}"), "diagnosis": diagnosis, "fix": fix,
                "restored": attempt == 0})))
