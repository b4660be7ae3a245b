"""The journal: one SQLite database (WAL) per deployment, the run state that survives a crash.

It holds runs, step attempts (status, rendered inputs with secrets masked, outputs,
timings), deployment facts (``meta``: the AWS account of the first run, permanent
parameter values), the gates each phase has passed, and an append-only event log from
which the report is built. Structural writes commit at once, so a SIGKILL loses at most
the last few log lines; log lines are committed in small batches to keep the hot path
cheap. ``synchronous=NORMAL`` in WAL mode is durable across a process crash.
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

from .errors import InputError
from .paths import deployment_dir

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs(
  id TEXT PRIMARY KEY, runbook TEXT NOT NULL, runbook_path TEXT NOT NULL,
  runbook_sha TEXT NOT NULL, params TEXT NOT NULL, phases TEXT, status TEXT NOT NULL,
  started REAL NOT NULL, finished REAL, exit_code INTEGER, message TEXT,
  pid INTEGER, host TEXT, user TEXT);
CREATE TABLE IF NOT EXISTS steps(
  run_id TEXT NOT NULL, step_id TEXT NOT NULL, phase_id TEXT NOT NULL, role TEXT NOT NULL,
  attempt INTEGER NOT NULL, status TEXT NOT NULL, started REAL NOT NULL, finished REAL,
  inputs TEXT, outputs TEXT, message TEXT, diagnosis TEXT, fix TEXT,
  PRIMARY KEY(run_id, step_id, attempt));
CREATE TABLE IF NOT EXISTS events(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, ts REAL NOT NULL,
  kind TEXT NOT NULL, step_id TEXT, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id, seq);
CREATE TABLE IF NOT EXISTS gates(
  phase_id TEXT PRIMARY KEY, run_id TEXT NOT NULL, passed_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

FINISHED = ("ok", "changed", "skipped")


class JournalError(InputError):
    """A deployment's journal exists but cannot be used (corrupt, empty): exit 2, located."""

_BATCHED = frozenset({"log", "progress"})
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


@dataclass(frozen=True)
class StepRow:
    run_id: str
    step_id: str
    phase_id: str
    role: str
    attempt: int
    status: str
    started: float
    finished: float | None
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    message: str | None
    diagnosis: str | None
    fix: str | None


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
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._db.execute("SELECT count(*) FROM runs").fetchone()
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

    def start_attempt(self, run_id: str, step_id: str, phase_id: str, role: str, attempt: int,
                      inputs: dict[str, Any]) -> None:
        self._exec("INSERT OR REPLACE INTO steps(run_id, step_id, phase_id, role, attempt, "
                   "status, started, inputs) VALUES(?,?,?,?,?,?,?,?)",
                   (run_id, step_id, phase_id, role, attempt, "running", time.time(),
                    json.dumps(inputs, default=str)))

    def finish_attempt(self, run_id: str, step_id: str, attempt: int, status: str,
                       outputs: dict[str, Any], message: str = "", diagnosis: str | None = None,
                       fix: str | None = None) -> None:
        self._exec("UPDATE steps SET status=?, finished=?, outputs=?, message=?, diagnosis=?, "
                   "fix=? WHERE run_id=? AND step_id=? AND attempt=?",
                   (status, time.time(), json.dumps(outputs, default=str), message, diagnosis,
                    fix, run_id, step_id, attempt))

    def record_restored(self, run_id: str, step_id: str, phase_id: str, role: str,
                        status: str, outputs: dict[str, Any], message: str) -> None:
        """A step taken as done without running it (check found it in sync)."""
        now = time.time()
        self._exec("INSERT OR REPLACE INTO steps VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
                   (run_id, step_id, phase_id, role, 0, status, now, now, "{}",
                    json.dumps(outputs, default=str), message, None, None))

    def add_event(self, run_id: str, kind: str, step_id: str | None, data: dict[str, Any],
                  ts: float) -> None:
        row = (run_id, ts, kind, step_id, _ENCODE(data))
        if kind not in _BATCHED:
            self._exec(_INSERT_EVENT, row)
            return
        with self._lock:
            self._buffer.append(row)
            if len(self._buffer) >= 500 or time.monotonic() - self._last_commit > 0.25:
                self.flush()

    def pass_gate(self, phase_id: str, run_id: str) -> None:
        self._exec("INSERT OR REPLACE INTO gates VALUES(?,?,?)", (phase_id, run_id, time.time()))

    def clear_gate(self, phase_id: str) -> None:
        self._exec("DELETE FROM gates WHERE phase_id=?", (phase_id,))

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

    def attempts(self, run_id: str) -> list[StepRow]:
        return [_step(r) for r in self._query(
            "SELECT * FROM steps WHERE run_id=? ORDER BY started, attempt", (run_id,))]

    def step_states(self, run_id: str) -> dict[str, StepRow]:
        """The latest attempt of each step in a run."""
        out: dict[str, StepRow] = {}
        for row in self.attempts(run_id):
            prev = out.get(row.step_id)
            if prev is None or (row.attempt, row.started) >= (prev.attempt, prev.started):
                out[row.step_id] = row
        return out

    def latest_outputs(self) -> dict[str, dict[str, Any]]:
        """For each step id, the outputs of its latest successful attempt in any run."""
        out: dict[str, dict[str, Any]] = {}
        for step_id, outputs in self._query(
                "SELECT step_id, outputs FROM steps WHERE status IN ('ok','changed') "
                "ORDER BY finished"):
            out[step_id] = json.loads(outputs or "{}")
        return out

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
            d.update(seq=seq, ts=ts, kind=kind, step_id=sid)
            out.append(d)
        return out

    def has_changes(self) -> bool:
        """Whether any run of this journal changed something (a step ended ``changed``)."""
        return bool(self._query("SELECT 1 FROM steps WHERE status='changed' LIMIT 1"))

    def passed_gates(self) -> dict[str, str]:
        """phase id -> the run in which its gates last passed (in this deployment)."""
        return {str(a): str(b) for a, b in self._query("SELECT phase_id, run_id FROM gates")}


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


def _step(r: tuple[Any, ...]) -> StepRow:
    return StepRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8] or "{}"),
                   json.loads(r[9] or "{}"), r[10], r[11], r[12])


def list_deployments(state_dir: Path) -> list[str]:
    root = state_dir / "deployments"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "journal.sqlite").exists())
