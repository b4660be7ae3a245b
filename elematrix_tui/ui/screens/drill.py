"""The restore drill of one deployment, run from the start screen (``D``).

The same drill as ``elematrix run restore --deployment NAME --set drill=true``
(``elematrix_tui.drill``, docs/day-two.md): three ordinary headless runs against
``NAME-drill``, in a worker thread. Their lines come through the drill's ``lines``
callback (never a redirected ``sys.stdout``) into a log pane; the verdict, RPO and RTO
come from the drill's outcome, and a failed drill shows the command that tears
``NAME-drill`` down. ``escape`` goes back once the drill has ended.

The drill thread never waits on the UI: it appends to a queue the screen drains on a
timer (``call_from_thread`` blocks until the app's loop answers, and would hang a drill
whose app had gone). If the app goes while the drill runs (ctrl+c), the drill goes on to
its end, teardown included (the process waits for it), and its lines go to stderr.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, Static

from ..widgets.log_pane import LogPane

if TYPE_CHECKING:
    from ...drill import DrillOutcome

# The log pane's "step" column for the drill's lines.
_LOG_STEP = "drill"
# How often the screen drains the drill's lines (the run screen's log ticks as often).
TICK_S = 0.1


def confirm_text(source: str) -> str:
    """The confirmation's body: what the drill does, from the drill's own words."""
    from ...drill import what_it_does

    return "The restore drill:\n" + "\n".join(f"• {line}" for line in what_it_does(source))


class DrillScreen(Screen[None]):
    """Runs the drill once, on mount; shows its lines live and its verdict."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, state_dir: Path, source: str) -> None:
        super().__init__()
        self.state_dir = state_dir
        self.source = source
        self.outcome: DrillOutcome | None = None
        self.running = False
        self._lines: deque[str] = deque()
        self._end: tuple[DrillOutcome | None, str] | None = None  # (outcome, why not run)
        self._lock = threading.Lock()
        self._detached = False  # the screen is gone: lines go to stderr

    def compose(self) -> ComposeResult:
        from ...drill import drill_name

        yield Static(f"[b]restore drill[/b] · {escape(self.source)} → "
                     f"{escape(drill_name(self.source))}: running…", id="drill-head")
        yield LogPane(id="drill-log")
        yield Static("", id="drill-verdict")
        yield Footer()

    def on_mount(self) -> None:
        self.running = True
        self.set_interval(TICK_S, self._drain)
        self._run()

    def on_unmount(self) -> None:
        with self._lock:
            self._detached = True
            left = list(self._lines)
            self._lines.clear()
        if self.running:
            for text in left:
                print(text, file=sys.stderr, flush=True)

    def _line(self, text: str) -> None:
        # In the drill's thread, once per line: never waits on the UI.
        with self._lock:
            if not self._detached:
                self._lines.append(text)
                return
        print(text, file=sys.stderr, flush=True)

    def _finish(self, outcome: DrillOutcome | None, why: str = "") -> None:
        with self._lock:
            self._end = (outcome, why)

    def _drain(self) -> None:
        with self._lock:
            batch = list(self._lines)
            self._lines.clear()
            end, self._end = self._end, None
        if batch:
            self.query_one(LogPane).add([(_LOG_STEP, "stdout", t) for t in batch])
        if end is not None:
            outcome, why = end
            if outcome is None:
                self._refused(why)
            else:
                self._show(outcome)

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _run(self) -> None:
        from ... import drill
        from ...engine.errors import InputError

        # The operator's go was the confirmation on the start screen: the runs' own
        # confirm steps are answered as with --yes (a terminal question cannot be asked
        # from here; run_headless asks none when it has a lines callback).
        req = drill.DrillRequest(source=self.source, state_dir=self.state_dir, sets={},
                                 assume_yes=True, lines=self._line)
        try:
            outcome = drill.drill_outcome(req)
        except InputError as e:
            self._finish(None, "; ".join(map(str, e.errors)))
            return
        except Exception as e:  # shown, never a traceback over the screen
            self._finish(None, f"{type(e).__name__}: {e}")
            return
        self._finish(outcome)

    def _head(self, rest: str) -> None:
        self.query_one("#drill-head", Static).update(
            f"[b]restore drill[/b] · {escape(self.source)}: {rest}")

    def _refused(self, why: str) -> None:
        self.running = False
        self._head("[red]not run[/red]")
        self.query_one("#drill-verdict", Static).update(
            f"[red]The drill did not start:[/red] {escape(why)}")
        self.query_one(LogPane).refresh_title()

    def _show(self, outcome: DrillOutcome) -> None:
        from ...drill import teardown_command

        self.running = False
        self.outcome = outcome
        self.query_one(LogPane).refresh_title()
        runs = ", ".join(f"{k} {'passed' if c == 0 else 'failed'}"
                         for k, c in outcome.codes.items())
        verdict = ("[green]passed[/green]" if outcome.code == 0 else
                   "[magenta]interrupted[/magenta]" if outcome.code == 130 else
                   "[red]failed[/red]")
        self._head(f"{verdict} ({escape(runs)})")
        lines = []
        if outcome.rto_s is not None:
            rpo = "?" if outcome.rpo_s is None else f"{outcome.rpo_s:.0f} s"
            lines.append(f"backup {escape(outcome.backup or '?')}: RPO {rpo}, "
                         f"RTO {outcome.rto_s:.1f} s")
        lines.append(f"{escape(self.source)}: " + (
            "unchanged (journal, state directory)" if outcome.source_unchanged else
            "[red]CHANGED: its journal or state directory differs[/red]"))
        if outcome.code != 0:
            state = ("was torn down" if outcome.torn_down else
                     "[b]may still exist on AWS (and cost money)[/b]")
            lines.append(f"{escape(outcome.drill)} {state}; to tear it down:")
            lines.append(f"  {escape(teardown_command(outcome.drill))}")
        self.query_one("#drill-verdict", Static).update("\n".join(lines))

    def action_back(self) -> None:
        if self.running:
            # Leaving would not stop the thread; the teardown at its end must not be lost
            # from view.
            self.notify("The drill is running; its teardown comes at its end. Wait for "
                        "its verdict.", severity="warning")
            return
        self.app.pop_screen()
