"""The headless face of the engine: a printer sink and questions answered on the terminal."""

from __future__ import annotations

import getpass
import io
import json
import signal
import sys
import threading
import time
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, TextIO, cast

from .engine import events as ev
from .engine.errors import InputError
from .engine.state import DECLINED, RUNNING, RunState
from .engine.text import clean, clean_line

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from .engine.model import Runbook
    from .engine.runner import RunOptions

_MARK = {"ok": "ok", "changed": "changed", "failed": "FAILED", "skipped": "skipped",
         "interrupted": "interrupted", DECLINED: DECLINED}


class HeadlessQuestions:
    """Answers the engine's questions on a terminal, or refuses when there is none."""

    def __init__(self, assume_yes: bool, stream: TextIO | None = None,
                 interactive: bool | None = None) -> None:
        self.assume_yes = assume_yes
        self.out = stream or sys.stderr
        # False where the terminal belongs to someone else (the TUI's drill): nothing is
        # read from stdin, every question is answered as with no terminal.
        self.interactive = (sys.stdin is not None and sys.stdin.isatty()
                            if interactive is None else interactive)

    def _ask(self, prompt: str) -> str:
        if not self.interactive:
            return ""
        self.out.write(clean(prompt))
        self.out.flush()
        return sys.stdin.readline().strip()

    def confirm(self, step_id: str, title: str, changes: list[str], *, destructive: bool,
                type_to_confirm: str | None) -> bool:
        # The engine asks despite --yes only when the name must be typed (a destructive
        # step of a deployment this state dir never saw): --yes never answers that.
        if self.assume_yes and not type_to_confirm:
            return True
        if not self.interactive:
            if self.assume_yes:
                print(f"step {step_id} needs the deployment name typed, which --yes does not "
                      f"do; run it on a terminal to type {type_to_confirm!r}", file=self.out)
            else:
                print(f"step {step_id} needs confirmation; run interactively or pass --yes",
                      file=self.out)
            return False
        print(clean(f"\n{title}"), file=self.out)
        for c in changes:
            print(f"  - {clean_line(c)}", file=self.out)
        if destructive and type_to_confirm:
            return self._ask(f"This is destructive. Type {type_to_confirm!r} to go on: ") \
                == type_to_confirm
        return self._ask("Go on? [y/N] ").lower() in ("y", "yes")

    def approve(self, step_id: str, prompt: str) -> tuple[bool, str, str]:
        if not self.interactive:
            return False, "nobody", "no terminal to ask for approval; run interactively"
        who = self._ask(f"{prompt}\nYour name: ") or getpass.getuser()
        answer = self._ask("Approve? [y/N] ").lower() in ("y", "yes")
        comment = self._ask("Comment: ")
        return answer, who, comment

    def secret(self, name: str, help: str) -> str:
        if not self.interactive:
            raise InputError(f"parameter {name!r} is a secret with no stored value: export "
                             f"ELEMATRIX_SECRET_{name.upper()}=... (kept in the keyring after "
                             f"the first run) or run interactively")
        return getpass.getpass(f"{name} ({help}): ")

    def choose(self, step_id: str, prompt: str, options: list[str]) -> str | None:
        # Never answered by --yes: trusting a host key is the operator's own decision.
        if not self.interactive:
            print(f"step {step_id}: {clean(prompt)}\n  refused: no terminal to confirm; pass the "
                  f"expected value as a parameter instead", file=self.out)
            return None
        print(clean(prompt), file=self.out)
        for i, opt in enumerate(options, 1):
            print(f"  {i}. {clean_line(opt)}", file=self.out)
        pick = self._ask("Number to accept, anything else refuses: ")
        if pick.isdigit() and 1 <= int(pick) <= len(options):
            return options[int(pick) - 1]
        return None


class Printer:
    """Prints steps and log lines as they happen, and a summary table at the end.

    The summary is the engine's fold of the same events (``engine.state.RunState``), the
    one the TUI, resume and the report use."""

    # A terminal redraws the progress line in place at most this often; a pipe (CI logs)
    # gets a plain line at most every PLAIN_EVERY seconds per step, so a ten-minute wait is
    # a few dozen lines, not thousands.
    TTY_EVERY = 0.2
    PLAIN_EVERY = 10.0

    def __init__(self, quiet: bool = False, stream: TextIO | None = None,
                 tty: bool | None = None) -> None:
        self.quiet = quiet
        self.out = stream or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.state = RunState()
        self._last_progress = 0.0
        self._reports: dict[str, int] = {}  # step id -> progress reports in this attempt
        self._live = False  # a progress line is on screen, not ended by a newline

    def progress_line(self, e: ev.Progress) -> str:
        """One wait as a line: step, elapsed / expected, how many reports, the attempt,
        the action's own message (``~ wait_ok 42s / ~3m · 7 checks · attempt 2: ...``)."""
        st = self.state.steps().get(e.step_id)
        parts = [f"{e.elapsed:.0f}s" + (f" / ~{_short(e.expected)}" if e.expected else "")]
        if e.done is not None and e.total:
            parts.append(f"{100 * e.done / e.total:.0f}%")
        n = self._reports.get(e.step_id, 0)
        parts.append(f"{n} check{'' if n == 1 else 's'}")
        if st is not None and st.attempt > 1:
            parts.append(f"attempt {st.attempt}")
        return f"   ~ {e.step_id} {' · '.join(parts)}: {clean_line(e.message)}"

    @property
    def rows(self) -> list[tuple[str, str, str, int, float, str]]:
        """(phase, step, result, attempts, seconds, message) of each step that ended."""
        info = self.state.run()
        if info is None:
            return []
        return [(st.phase_id, st.step_id,
                 "restored" if st.restored else _MARK.get(st.status, st.status),
                 st.attempt, st.duration or 0.0, st.message)
                for st in info.steps.values() if st.status not in ("pending", *RUNNING)]

    def __call__(self, e: ev.Event) -> None:
        def w(text: str) -> None:
            # Host output, AWS messages and runbook titles reach the terminal only cleaned.
            self.out.write(clean(text))

        self.state.apply(e)
        if isinstance(e, ev.Progress):
            self._progress(e)
            return
        if isinstance(e, ev.StepStarted):
            self._reports.pop(e.step_id, None)
        if self._live and not (self.quiet and isinstance(e, ev.LogLine)):
            self.out.write("\n")  # end the progress line before anything else is printed
            self._live = False
        if isinstance(e, ev.RunStarted):
            w(f"{'resuming' if e.resumed else 'run'} {e.run_id}: {e.runbook} -> "
              f"deployment {e.deployment}\n")
        elif isinstance(e, ev.PhaseStarted):
            w(f"\n== phase {e.phase_id}: {e.title}\n")
        elif isinstance(e, ev.PhaseLocked):
            w(f"\n== LOCKED {e.phase_id}: {e.reason}\n")
        elif isinstance(e, ev.StepStarted):
            if not self.quiet:
                w(f"-> {e.step_id} ({e.action}){' [gate]' if e.is_gate else ''}"
                  f"{f' attempt {e.attempt}' if e.attempt > 1 else ''}: {e.title}\n")
        elif isinstance(e, ev.LogLine):
            if not self.quiet:
                # Steps of a phase may run at once (needs:): then each line says whose it is.
                running = sum(st.status in RUNNING for st in self.state.steps().values())
                who = f"{e.step_id}: " if running > 1 and e.step_id else ""
                w(f"   | {who}{clean_line(e.line)}\n")
        elif isinstance(e, ev.StepRetry):
            w(f"   ! retrying {e.step_id} in {e.delay:g} s (attempt {e.attempt}): {e.reason}\n")
        elif isinstance(e, ev.StepFinished):
            tag = "restored" if e.restored else _MARK.get(e.status, e.status)
            w(f"{'GATE ' if e.is_gate else ''}[{tag}] {e.step_id} {e.duration:.2f}s"
              f"{f' - {e.message}' if e.message else ''}\n")
            if e.status == "failed":
                if e.diagnosis:
                    w(f"   why: {e.diagnosis}\n")
                if e.fix:
                    w(f"   fix: {e.fix}\n")
        elif isinstance(e, ev.RunFinished):
            w(f"\nrun {e.run_id} {e.status} (exit {e.exit_code})"
              f"{f': {e.message}' if e.message else ''}\n")
        self.out.flush()

    def _progress(self, e: ev.Progress) -> None:
        self._reports[e.step_id] = self._reports.get(e.step_id, 0) + 1
        if self.quiet:
            return
        now = time.monotonic()
        if now - self._last_progress < (self.TTY_EVERY if self.tty else self.PLAIN_EVERY) \
                and self._reports[e.step_id] > 1:
            return
        self._last_progress = now
        line = clean(self.progress_line(e))
        if self.tty:
            # Redrawn in place: carriage return, erase the line (ECMA-48 EL, CSI 2 K).
            self.out.write(f"\r\x1b[2K{line}")
            self._live = True
        else:
            self.out.write(f"{line}\n")
        self.out.flush()

    def summary(self, runner: Any) -> None:
        rows = self.rows
        if not rows:
            return

        def w(text: str) -> None:
            self.out.write(clean(text))

        w(f"\n{'PHASE':<12} {'STEP':<28} {'RESULT':<12} {'TRIES':>5} {'TIME':>8}\n")
        for phase, step, tag, attempt, duration, _ in rows:
            w(f"{phase:<12} {step:<28} {tag:<12} {attempt:>5} {duration:>7.2f}s\n")
        if runner.run_id:
            w(f"\nreport: elematrix report {runner.run_id}\n")
        self.out.flush()


def _short(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


class JsonLines:
    """``--json``: every engine event as one JSON object per line (``Event.to_dict``).

    The events are the journal's own: the engine masks secrets before it emits them
    (inputs, outputs, messages and log lines pass its redactor), and this sink masks once
    more with the run's redactor when it has one, so a CI log never holds a secret.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.out = stream or sys.stdout
        self.redact: Any = None

    def __call__(self, e: ev.Event) -> None:
        text = json.dumps(e.to_dict(), default=str, ensure_ascii=False)
        if self.redact is not None:
            text = self.redact(text)
        self.out.write(text + "\n")
        self.out.flush()


class LineStream(io.TextIOBase):
    """A text stream that hands each complete line to a callback (the TUI's drill screen),
    so a headless run's output can go there without touching ``sys.stdout``. Not a
    terminal: the printer writes plain progress lines, never carriage returns."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        super().__init__()
        self.emit = emit
        self._part = ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, s: str) -> int:
        *done, self._part = (self._part + s).split("\n")
        for line in done:
            self.emit(line)
        return len(s)

    def flush(self) -> None:
        # A progress line is flushed before it ends: it is shown only once ended.
        pass


# The runner's exit code for an interrupted run (state saved, resumable).
_EXIT_INTERRUPTED = 130


class StopSignals:
    """SIGTERM and SIGHUP stop a headless run exactly as Ctrl-C does.

    By default they kill the process outright, leaving the run marked "running" with no
    message. Here the first one raises KeyboardInterrupt in the main thread, so the runner
    journals the run as interrupted; the exit code is then 128 + the signal's number (the
    shell's convention, as 130 is for SIGINT) and a message says how to resume. Further
    signals while the state is being saved are ignored.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self, deployment: str, stream: TextIO | None = None) -> None:
        self.deployment = deployment
        self.out = stream or sys.stderr
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            raise KeyboardInterrupt

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    def exit_code(self, code: int) -> int:
        """The code to exit with; prints how to resume when a signal stopped the run."""
        if self.signum is None:
            return code
        name = signal.Signals(self.signum).name
        print(f"{name} received: the run was interrupted and its state saved; "
              f"'elematrix resume --deployment {self.deployment}' continues it.", file=self.out)
        return 128 + self.signum if code == _EXIT_INTERRUPTED else code


def run_headless(rb: Runbook, *, deployment: str, state_dir: Path, params: dict[str, Any],
                 runbook_path: Path, options: RunOptions, quiet: bool = False,
                 resume_of: str | None = None, json_lines: bool = False,
                 lines: Callable[[str], None] | None = None) -> int:
    """Run (or resume ``resume_of``) on the terminal: the engine's runner, wired once
    (``engine.wiring``), printing as it goes and a summary at the end; SIGTERM/SIGHUP stop
    it as Ctrl-C does. Returns the exit code. ``elematrix run``, ``resume --yes`` and
    ``practice --headless`` all come here. ``json_lines``: stdout carries only the
    events, one JSON object a line (:class:`JsonLines`); questions and signals still speak
    on stderr, and the summary is left out (the last line is ``run.finished``). ``lines``:
    every line (output, questions' refusals, the summary) goes to this callback instead of
    stdout/stderr, and no question is asked on the terminal (the TUI's drill)."""
    from .actions import default_registry
    from .engine.wiring import RunRequest, build_runner

    # A TextIOBase is a text stream at run time; typing's TextIO is a separate protocol.
    stream = cast("TextIO", LineStream(lines)) if lines is not None else None
    printer = Printer(quiet=quiet, stream=stream)
    sink: Any = JsonLines(stream) if json_lines else printer
    questions = HeadlessQuestions(assume_yes=options.assume_yes, stream=stream,
                                  interactive=False if lines is not None else None)
    runner = build_runner(RunRequest(
        runbook=rb, deployment=deployment, state_dir=state_dir, params=params,
        questions=questions, sinks=[sink],
        runbook_path=runbook_path, options=options), default_registry())
    if isinstance(sink, JsonLines):
        sink.redact = runner.redact
    with StopSignals(deployment, stream) as stop:
        code = runner.resume(resume_of) if resume_of else runner.run()
    if not json_lines:
        printer.summary(runner)
    return stop.exit_code(code)
