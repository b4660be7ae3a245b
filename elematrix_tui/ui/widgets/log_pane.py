"""The live log: a capped ``Log`` fed in batches, with a filter to one step.

The pane keeps the most recent lines of every step in a ring buffer so that the
filter can be switched on and off without asking the engine; the full log is in the
journal.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Log

from ...engine.text import clean_line

# Visible lines: enough to scroll back through a long command, small enough to stay fast.
VISIBLE_LINES = 10_000
# Lines kept for re-filtering; older ones are only in the journal.
KEPT_LINES = 50_000


class LogPane(Vertical):
    """Title row + ``Log``. Feed it with :meth:`add` once per tick."""

    DEFAULT_CSS = """
    LogPane { height: 1fr; border: round $primary-darken-2; }
    LogPane > #log-title { height: 1; width: 1fr; color: $text-muted; padding: 0 1; }
    LogPane > Log { height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.kept: deque[tuple[str, str, str]] = deque(maxlen=KEPT_LINES)
        self.step_filter: str | None = None
        self.total = 0
        self._title_at = 0.0
        self._title_stale = False

    def compose(self) -> ComposeResult:
        yield Label(self._title(), id="log-title")
        yield Log(max_lines=VISIBLE_LINES, highlight=False, id="log")

    def _title(self) -> str:
        scope = f"step {self.step_filter}" if self.step_filter else "all steps"
        return f"Log · {scope} · {self.total} lines · f: filter"

    @staticmethod
    def _fmt(step_id: str, stream: str, line: str, with_step: bool) -> str:
        mark = "! " if stream == "stderr" else ""
        # Host output: escape sequences and embedded newlines are shown, never obeyed.
        line = clean_line(line)
        return f"{step_id} │ {mark}{line}" if with_step else f"{mark}{line}"

    def add(self, lines: Iterable[tuple[str, str, str]]) -> None:
        """Append (step_id, stream, line) tuples: one ``write_lines`` for the whole batch."""
        batch = list(lines)
        if not batch:
            return
        self.kept.extend(batch)
        self.total += len(batch)
        flt = self.step_filter
        if flt is None:
            out = [self._fmt(s, st, ln, True) for s, st, ln in batch[-VISIBLE_LINES:]]
        else:
            out = [self._fmt(s, st, ln, False) for s, st, ln in batch if s == flt]
        if out:
            self.query_one(Log).write_lines(out)
        # The line count in the title changes every tick during a stream; redrawing the
        # title row that often costs a relayout, so it is refreshed at most twice a second.
        now = time.monotonic()
        if now - self._title_at >= 0.5:
            self._title_at = now
            self.query_one("#log-title", Label).update(self._title())
        else:
            self._title_stale = True

    def refresh_title(self) -> None:
        """Bring a throttled title up to date (the run screen calls it when a run ends)."""
        if self._title_stale:
            self._title_stale = False
            self._title_at = time.monotonic()
            self.query_one("#log-title", Label).update(self._title())

    def set_filter(self, step_id: str | None) -> None:
        """Show one step's lines (or all with None), rebuilt from the kept lines."""
        self.step_filter = step_id
        log = self.query_one(Log)
        log.clear()
        if step_id is None:
            lines = [self._fmt(s, st, ln, True) for s, st, ln in self.kept]
        else:
            lines = [self._fmt(s, st, ln, False) for s, st, ln in self.kept if s == step_id]
        log.write_lines(lines[-VISIBLE_LINES:])
        self.query_one("#log-title", Label).update(self._title())

    def clear(self) -> None:
        self.kept.clear()
        self.total = 0
        self.query_one(Log).clear()
        self.query_one("#log-title", Label).update(self._title())
