"""The journal: one SQLite database (WAL) per deployment, the run state that survives a crash.

**The event log is the one record of what a run did.** Every event the runner emits
(``engine/events.py``) is appended to ``events``; step states, attempts, outputs, passed
gates, phase locks and what resume needs are all derived from it by one fold
(``engine/state.py``), here and in every view (TUI, headless summary, report). Format 1
also kept a ``steps`` table and a ``gates`` table beside the log: a second record that
could disagree with the first. Format 2 drops both (no cache either: a deployment's
structural events are a few hundred rows, folded in milliseconds, and a cache would be a
second record again).

Besides the log: ``runs`` is the index of runs (runbook file and digest, the parameters
used, pid and host, the final status for listing) — facts no event carries — and ``meta``
holds deployment facts (the AWS account of the first run, permanent parameter values,
remembered parameters, secret names, and ``journal_format``: the format version below).
Structural writes commit at once, so a SIGKILL loses at most the last few log lines; log
lines are committed in small batches to keep the hot path cheap. ``synchronous=NORMAL``
in WAL mode is durable across a process crash.

Formats (``meta.journal_format``; docs/journal.md): 1 = no version key, ``steps`` and
``gates`` tables; 2 = the event log alone. A format-1 journal is migrated in place when
opened (a copy of it is kept beside it first); one from a newer, unknown format is
refused (exit 2) and never written.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from . import events as ev
from .errors import InputError
from .migrate import migrate_v1
from .paths import deployment_dir
from .state import FINISHED, RunState, StepState

__all__ = ["FINISHED", "FORMAT", "Journal", "JournalError", "RunRow", "StepState",
           "list_deployments"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs(
  id TEXT PRIMARY KEY, runbook TEXT NOT NULL, runbook_path TEXT NOT NULL,
  runbook_sha TEXT NOT NULL, params TEXT NOT NULL, phases TEXT, status TEXT NOT NULL,
  started REAL NOT NULL, finished REAL, exit_code INTEGER, message TEXT,
  pid INTEGER, host TEXT, user TEXT);
CREATE TABLE IF NOT EXISTS events(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, ts REAL NOT NULL,
  kind TEXT NOT NULL, step_id TEXT, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id, seq);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# The journal format this version writes, and the meta key that holds it.
FORMAT = 2
META_FORMAT = "journal_format"
# Kinds that carry no state (most rows of a long run): skipped by every fold.
_STATELESS = ("log", "progress")


class JournalError(InputError):
    """A deployment's journal exists but cannot be used (corrupt, empty, newer): exit 2."""

_BATCHED = frozenset(_STATELESS)
# Built once: json.dumps re-creates an encoder per call, a third of a log line's cost.
_ENCODE = json.JSONEncoder(default=str, separators=(",", ":")).encode
_INSERT_EVENT = "INSERT INTO events(run_id, ts, kind, step_id, data) VALUES(?,?,?,?,?)"


@dataclass(frozen=True)
class RunRow:
    id: str
    runbook: str
    runbook_path: str
    runbook_sha: str
    params: dict[str, Any]
    phases: list[str] | None
    status: str
    started: float
    finished: float | None
    exit_code: int | None
    message: str | None
    pid: int | None
    host: str | None
    user: str | None


class Journal:
    """Read and write one deployment's journal. Thread-safe (one connection, one lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        _refuse_empty(path)
        try:
            self._db = sqlite3.connect(str(path), check_same_thread=False,
                                       isolation_level=None, timeout=10)
        except sqlite3.Error as e:
            raise JournalError(f"{path}: cannot open the journal: {e}") from None
        try:
            version = self._format()
            if version > FORMAT:
                raise JournalError(
                    f"{path}: this journal was written by a newer elematrix (journal format "
                    f"{version}; this version reads formats 1 to {FORMAT}). It is left as it "
                    f"is: use that newer elematrix for this deployment (or upgrade this one)")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            if version < FORMAT:
                migrate_v1(self._db, path, schema=SCHEMA, format_key=META_FORMAT,
                           version=FORMAT)
            self._db.executescript(SCHEMA)
            self._db.execute("SELECT count(*) FROM runs").fetchone()
        except JournalError:
            self._db.close()
            raise
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise JournalError(
                f"{path}: the journal cannot be read ({e}). It is left as it is. Restore it "
                f"from a backup; or, to start this deployment afresh, move the file away "
                f"(its recorded outputs, account binding, passed gates and permanent values "
                f"are then forgotten)") from None
        self._last_commit = time.monotonic()
        self._in_tx = False
        # Log and progress rows wait here and are written in one executemany: a streamed
        # 100k-line log must not cost 100k statements. Any other write flushes them first,
        # so the event order (seq) is kept.
        self._buffer: list[tuple[Any, ...]] = []

    def _format(self) -> int:
        """The file's journal format (1: before versions), read without writing."""
        try:
            rows = list(self._db.execute("SELECT value FROM meta WHERE key=?", (META_FORMAT,)))
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return 1
            raise
        if not rows:
            return 1
        try:
            version = json.loads(rows[0][0])
        except ValueError:
            version = None
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise JournalError(f"{self.path}: meta {META_FORMAT} is {rows[0][0]!r}, not a "
                               f"journal format; the journal is left as it is")
        return version

    @classmethod
    def open(cls, state_dir: Path, deployment: str) -> Journal:
        d = deployment_dir(state_dir, deployment)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = d / "journal.sqlite"
        if not path.exists():
            _create(path)
        return cls(path)

    @staticmethod
    def exists(state_dir: Path, deployment: str) -> bool:
        return (deployment_dir(state_dir, deployment) / "journal.sqlite").exists()

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- writing ---------------------------------------------------------------------
    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        with self._lock:
            self._begin()
            self._write_buffer()
            self._db.execute(sql, args)
            self._commit()

    def _begin(self) -> None:
        if not self._in_tx:
            self._db.execute("BEGIN")
            self._in_tx = True

    def _write_buffer(self) -> None:
        if self._buffer:
            self._db.executemany(_INSERT_EVENT, self._buffer)
            self._buffer = []

    def _commit(self) -> None:
        if self._in_tx:
            self._db.execute("COMMIT")
            self._in_tx = False
        self._last_commit = time.monotonic()

    def flush(self) -> None:
        with self._lock:
            if self._buffer:
                self._begin()
                self._write_buffer()
            self._commit()

    def add_run(self, run: RunRow) -> None:
        self._exec("INSERT INTO runs VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   (run.id, run.runbook, run.runbook_path, run.runbook_sha,
                    json.dumps(run.params), json.dumps(run.phases), run.status, run.started,
                    run.finished, run.exit_code, run.message, run.pid, run.host, run.user))

    def update_run(self, run_id: str, **fields: Any) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)
        self._exec(f"UPDATE runs SET {cols} WHERE id=?", (*fields.values(), run_id))

    def record(self, event: ev.Event) -> None:
        """Append one event to the log: the one record of the run (see the module doc)."""
        data = event.to_dict()
        kind = data.pop("kind")
        data.pop("run_id", None)
        ts = data.pop("ts")
        step_id = data.get("step_id") or data.get("gate_id")
        row = (event.run_id, ts, kind, step_id, _ENCODE(data))
        if kind not in _BATCHED:
            self._exec(_INSERT_EVENT, row)
            return
        with self._lock:
            self._buffer.append(row)
            if len(self._buffer) >= 500 or time.monotonic() - self._last_commit > 0.25:
                self.flush()

    def set_meta(self, key: str, value: Any) -> None:
        self._exec("INSERT OR REPLACE INTO meta VALUES(?,?)", (key, json.dumps(value)))

    # -- reading ---------------------------------------------------------------------
    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, args))

    def get_meta(self, key: str) -> Any:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self._query("SELECT key, value FROM meta")}

    def runs(self) -> list[RunRow]:
        """Every run of this deployment, newest first."""
        return [_run(r) for r in self._query("SELECT * FROM runs ORDER BY started DESC")]

    def run(self, run_id: str) -> RunRow | None:
        rows = self._query("SELECT * FROM runs WHERE id=?", (run_id,))
        return _run(rows[0]) if rows else None

    def read_events(self, run_id: str | None = None, *,
                    with_logs: bool = False) -> list[ev.Event]:
        """The typed events of one run (default: of every run), in the order written.

        Log lines and progress are left out unless ``with_logs``: they carry no state."""
        self.flush()
        sql = "SELECT run_id, ts, kind, data FROM events"
        where: list[str] = []
        args: list[Any] = []
        if run_id is not None:
            where.append("run_id=?")
            args.append(run_id)
        if not with_logs:
            where.append(f"kind NOT IN ({','.join('?' * len(_STATELESS))})")
            args += _STATELESS
        if where:
            sql += " WHERE " + " AND ".join(where)
        out: list[ev.Event] = []
        for rid, ts, kind, data in self._query(sql + " ORDER BY seq", tuple(args)):
            d = json.loads(data)
            d.update(kind=kind, ts=ts, run_id=rid)
            e = ev.parse_event(d)
            if e is not None:
                out.append(e)
        return out

    def state(self, run_id: str | None = None) -> RunState:
        """The fold of this deployment's events (or of one run's): see ``engine/state.py``."""
        return RunState.fold(self.read_events(run_id))

    def attempts(self, run_id: str) -> list[StepState]:
        """Every step attempt of a run, in the order they started."""
        info = self.state(run_id).run(run_id)
        return list(info.attempts) if info is not None else []

    def step_states(self, run_id: str) -> dict[str, StepState]:
        """The latest attempt of each step in a run."""
        return self.state(run_id).resume_from(run_id)

    def latest_outputs(self) -> dict[str, dict[str, Any]]:
        """For each step id, the outputs of its latest successful attempt in any run."""
        return self.state().outputs

    def events(self, run_id: str, kinds: tuple[str, ...] | None = None,
               step_id: str | None = None) -> list[dict[str, Any]]:
        self.flush()
        sql = "SELECT seq, ts, kind, step_id, data FROM events WHERE run_id=?"
        args: list[Any] = [run_id]
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += kinds
        if step_id:
            sql += " AND step_id=?"
            args.append(step_id)
        sql += " ORDER BY seq"
        out = []
        for seq, ts, kind, sid, data in self._query(sql, tuple(args)):
            d = json.loads(data)
            d.update(seq=seq, ts=ts, kind=kind)
            d.setdefault("step_id", sid)  # a log line's own "" stays a string
            out.append(d)
        return out

    def has_changes(self) -> bool:
        """Whether any run of this journal changed something (a step ended ``changed``)."""
        return self.state().changed

    def passed_gates(self) -> dict[str, str]:
        """phase id -> the run in which its gates last passed (in this deployment)."""
        return dict(self.state().passed)


def _create(path: Path) -> None:
    """Create a journal atomically: built under a temporary name, then linked into place.

    So a journal at its path always holds at least its schema, and a 0-byte one can only
    be damage from outside (refused by ``_refuse_empty``), never a run killed while the
    file was being created (SQLite creates the file empty and writes it later).
    """
    for stale in path.parent.glob(f"{path.name}.new-*"):
        stale.unlink(missing_ok=True)  # left by a process killed while creating one
    tmp = path.with_name(f"{path.name}.new-{os.getpid()}")
    db = sqlite3.connect(str(tmp), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
        db.execute("INSERT INTO meta VALUES(?,?)", (META_FORMAT, json.dumps(FORMAT)))
    finally:
        db.close()  # checkpoints the WAL into the file and removes it
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # never replaces a journal another process created meanwhile
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _refuse_empty(path: Path) -> None:
    """A 0-byte journal is a lost one, not a new deployment: starting afresh over it would
    drop the account binding, the permanent values and the passed gates without a word."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    wal = path.with_name(path.name + "-wal")
    if size == 0 and not (wal.exists() and wal.stat().st_size > 0):
        raise JournalError(
            f"{path}: the journal is empty (0 bytes): this deployment's history is lost, "
            f"so elematrix will not treat it as a new deployment. Restore the file from a "
            f"backup; or, if you mean to start afresh, delete it (the account binding, passed "
            f"gates and permanent values such as server_name are then forgotten)")


def _run(r: tuple[Any, ...]) -> RunRow:
    return RunRow(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]) if r[5] else None,
                  r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13])


def list_deployments(state_dir: Path) -> list[str]:
    root = state_dir / "deployments"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "journal.sqlite").exists())
