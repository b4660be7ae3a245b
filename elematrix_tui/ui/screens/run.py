"""The run screen: phases and steps, live log, step detail, gates, and the controls.

The engine runs in a thread worker. Its sink (an :class:`EventPump`) only queues
events; a 10 Hz tick drains the queue, folds events into the :class:`RunModel` and
writes the tick's log lines in one batch. Questions come through :class:`TuiQuestions`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static, Tree

from ...engine import events as ev
from ...engine.model import Runbook
from ...engine.state import DECLINED
from ..bridge import EventPump, RunnerLike, RunRequest
from ..markup import escape
from ..model import RunModel
from ..questions import TuiQuestions
from ..widgets.gate_panel import GatePanel
from ..widgets.log_pane import LogPane
from ..widgets.phase_tree import NodeData, PhaseTree
from ..widgets.step_detail import StepDetail
from .banner import banner_text, notices_markdown
from .modals import YesNoModal
from .run_journal import fold_events, read_journal
from .run_report import export_report

if TYPE_CHECKING:
    from ..services import RunServices

# Ten repaints a second: a log reads fine at that rate, and each repaint of a busy screen
# competes with the engine thread for the GIL (see bench/bench_tui.py).
TICK = 1 / 10


class RunScreen(Screen[int]):
    """Drive one deployment through its runbook, phase by phase."""

    CSS_PATH = "run.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "run_phase", "Run phase"),
        Binding("e", "rerun_failed", "Re-run"),
        Binding("p", "pause", "Pause"),
        Binding("f", "filter_log", "Filter"),
        Binding("x", "export_report", "Report"),
        Binding("s", "run_step", "Run selected step", show=False),
        Binding("k", "skip_step", "Skip selected step", show=False),
        Binding("P", "edit_params", "Edit parameters", show=False),
        Binding("v", "view_plan", "Plan of the selected phase", show=False),
        Binding("escape", "back", "Back", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit_app", "Quit"),
    ]

    class RunEnded(Message):
        """Posted by the worker thread when ``run``/``resume`` returned."""

        def __init__(self, exit_code: int, error: str | None) -> None:
            super().__init__()
            self.exit_code = exit_code
            self.error = error

    def __init__(self, runbook: Runbook, *, deployment: str, params: dict[str, Any],
                 services: RunServices, runbook_path: Path | None = None,
                 resume_run: str | None = None) -> None:
        super().__init__()
        self.services = services
        self.session = services.session
        self.runbook = runbook
        self.runbook_path = runbook_path
        self.deployment = deployment
        self.params = params
        self.resume_run = resume_run
        self.model = RunModel(runbook)
        self.pump = EventPump()
        self.runner: RunnerLike | None = None
        self.running = False
        self.quitting = False
        self.last_exit: int | None = None
        self.last_run_id: str | None = None
        self.questions: TuiQuestions | None = None
        # True until the journal has been folded in; a run asked for meanwhile waits.
        self.restoring = True
        self._pending_start: dict[str, Any] | None = None

    # -- layout -----------------------------------------------------------------
    def compose(self) -> ComposeResult:
        banner = banner_text(self.session)
        if banner:
            yield Static(banner, id="banner")
        yield Static(self._head(), id="run-head")
        with Horizontal(id="body"):
            with Vertical(id="left"):
                yield PhaseTree(self.model, id="tree")
                yield GatePanel(id="gates")
            with Vertical(id="right"):
                yield StepDetail(id="detail")
                yield LogPane(id="logpane")
        yield Footer()

    def _head(self) -> str:
        m = self.model
        title = self.runbook.title or self.runbook.runbook
        state = m.status
        if self.restoring:
            state = "reading the journal…"
        elif m.status == "idle" and self.resume_run:
            state = f"interrupted run {self.resume_run}: r resumes it"
        elif m.run_id:
            state = f"{m.status} · run {m.run_id}"
            if len(m.running) > 1:
                state += f" · {len(m.running)} steps at once: {', '.join(m.running)}"
        cost = self.monthly_cost()
        cost_text = f" · est. USD {cost:.2f}/month" if cost is not None else ""
        return (f"[b]{escape(self.deployment)}[/b] · {escape(title)} · "
                f"{escape(state)}{cost_text}")

    def monthly_cost(self) -> float | None:
        """The preflight's cost estimate (output ``monthly_usd``), once a step reported it."""
        for sv in self.model.steps.values():
            usd = sv.outputs.get("monthly_usd")
            if isinstance(usd, int | float) and not isinstance(usd, bool):
                return float(usd)
        return None

    def on_mount(self) -> None:
        self.questions = TuiQuestions(self.app, self.deployment, before_ask=self._tick)
        self.set_interval(TICK, self._tick)
        self.query_one(PhaseTree).focus()
        self._refresh_head()
        self._restore()

    # -- journal replay -----------------------------------------------------------
    @work(thread=True, group="restore", exit_on_error=False)
    def _restore(self) -> None:
        """Read the journal off the UI thread (a 100k-line run takes a second to decode)."""
        self.app.call_from_thread(self._restored, *read_journal(
            self.session.state_dir, self.deployment, self.resume_run))

    def _restored(self, passed: set[str], show: str | None, rows: list[Any],
                  error: str | None) -> None:
        if error:
            self.notify(f"Could not read the journal: {error}", severity="warning", markup=False)
        self.model.passed |= passed
        if show is not None:
            self._replay(show, rows)
        self.model.recompute_locks()
        self.restoring = False
        tree = self.query_one(PhaseTree)
        tree.rebuild()
        nxt = self.model.next_phase()
        if nxt is not None:
            tree.select_id(nxt.phase_id)
        self._refresh_head()
        self._show_selected()
        if self._pending_start is not None:
            kwargs, self._pending_start = self._pending_start, None
            self.start(**kwargs)

    def _replay(self, run_id: str, rows: list[Any]) -> None:
        self.query_one(LogPane).add(fold_events(self.model, rows, run_id, self.resume_run))
        self.last_run_id = self.model.run_id

    # -- the tick -------------------------------------------------------------------
    def _tick(self) -> None:
        events = self.pump.drain()
        if not events:
            return
        # Log lines only feed the log pane and everything else only the model, so the two
        # can be split (each keeps its order). A 100k-line stream then costs one list
        # comprehension and one write_lines per tick, not a call chain per line.
        log_cls = ev.LogLine
        lines = [(e.step_id, e.stream, e.line) for e in events
                 if e.__class__ is log_cls]
        if lines:
            self.query_one(LogPane).add(lines)
            if len(lines) == len(events):
                return
        changed: set[str] = set()
        follow: str | None = None
        for e in events:
            if e.__class__ is log_cls:
                continue
            changed |= self.model.apply(e)
            if isinstance(e, ev.StepStarted) or (
                    isinstance(e, ev.StepFinished) and e.status == "failed"):
                follow = e.step_id
            if isinstance(e, ev.StepFinished) and isinstance(
                    e.outputs.get("monthly_usd"), int | float):
                # Say it before the next steps create anything that costs money.
                self.notify(f"Estimated cost ~USD {e.outputs['monthly_usd']:.2f}/month "
                            f"(from {e.step_id}). p pauses before the next step.", timeout=15,
                            markup=False)
                changed.add("run")
        if changed:
            self.query_one(PhaseTree).refresh_ids(changed)
            if "run" in changed:
                self._refresh_head()
        if follow is not None:
            self.query_one(PhaseTree).select_id(follow)
        if changed or follow is not None:
            self._show_selected()

    def _refresh_head(self) -> None:
        self.query_one("#run-head", Static).update(self._head())

    def _selected(self) -> NodeData | None:
        return self.query_one(PhaseTree).selected()

    def _selected_phase_id(self) -> str | None:
        sel = self._selected()
        if sel is None:
            return None
        kind, key = sel
        if kind == "phase":
            return key
        sv = self.model.steps.get(key)
        return sv.phase_id if sv is not None else None

    def _show_selected(self) -> None:
        detail = self.query_one(StepDetail)
        sel = self._selected()
        pid = self._selected_phase_id()
        if sel is not None:
            kind, key = sel
            if kind == "step" and key in self.model.steps:
                detail.show_step(self.model.steps[key])
            elif kind == "phase":
                pv = self.model.phase(key)
                if pv is not None:
                    detail.show_phase(pv)
        pv = self.model.phase(pid) if pid else self.model.next_phase()
        self.query_one(GatePanel).show(pv)

    @on(Tree.NodeHighlighted)
    def _highlighted(self) -> None:
        self._show_selected()

    # -- running --------------------------------------------------------------------
    def start(self, *, phases: list[str] | None = None, steps: list[str] | None = None,
              skip: list[str] | None = None, resume: str | None = None) -> bool:
        """Build a runner and start it in the worker; False when one is already running."""
        if self.running:
            self.notify("A run is in progress: pause (p) or wait for it.", severity="warning")
            return False
        if self.restoring:
            self._pending_start = {"phases": phases, "steps": steps, "skip": skip,
                                   "resume": resume}
            return True
        assert self.questions is not None
        self.questions.reset()
        req = RunRequest(runbook=self.runbook, runbook_path=self.runbook_path,
                         deployment=self.deployment, state_dir=self.session.state_dir,
                         params=dict(self.params), questions=self.questions,
                         sinks=[self.pump], phases=phases, steps=steps, skip=list(skip or []))
        try:
            runner = self.services.runner_factory(req)
        except Exception as exc:
            self.notify(f"Cannot start the run: {exc}", severity="error", timeout=10, markup=False)
            return False
        self.runner = runner
        self.running = True
        self.model.status = "running"
        self._refresh_head()
        self._engine(runner, resume)
        return True

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def _engine(self, runner: RunnerLike, resume: str | None) -> None:
        # One place handles every engine error: it becomes a RunEnded with the message.
        error: str | None = None
        try:
            code = runner.resume(resume) if resume else runner.run()
        except Exception as exc:
            code, error = 1, f"{type(exc).__name__}: {exc}"
        self.post_message(self.RunEnded(code, error))

    def on_run_screen_run_ended(self, message: RunEnded) -> None:
        self._tick()
        self.query_one(LogPane).refresh_title()
        self.running = False
        self.runner = None
        self.last_exit = message.exit_code
        self.services.run_ended(message.exit_code)
        if self.model.run_id:
            self.last_run_id = self.model.run_id
        if self.model.status == "running":
            # The engine ended without a RunFinished (it crashed): say so on screen.
            self.model.apply(ev.RunFinished(run_id=self.model.run_id or "", exit_code=message.
                                            exit_code, status="failed" if message.exit_code
                                            else "passed", message=message.error or ""))
            self.query_one(PhaseTree).refresh_ids(set(self.model.steps) |
                                                  {p.phase_id for p in self.model.phases})
        self._refresh_head()
        self._show_selected()
        if message.error:
            self.notify(f"The engine stopped: {message.error}", severity="error", timeout=15,
                        markup=False)
        elif message.exit_code == 0:
            self.notify("Run passed.")
        elif self.model.status == DECLINED:
            self.notify("Declined: nothing was changed. r runs the phase again when ready.",
                        severity="warning")
        elif message.exit_code == 130:
            self.notify("Run interrupted; state saved. r resumes.", severity="warning")
        else:
            failed = self.model.failed_steps()
            what = failed[0].label if failed else "a step"
            self.notify(f"Run failed at {what}. See the diagnosis; e re-runs.",
                        severity="error", markup=False)
        if self.quitting:
            self.app.exit(self.last_exit, return_code=message.exit_code)

    # -- actions ---------------------------------------------------------------------
    def action_run_phase(self) -> None:
        """Run the selected phase (or the next ready one); resume an interrupted run first."""
        rid = self.resume_run
        if rid is None and self.model.status in ("paused", "interrupted"):
            rid = self.last_run_id or self.model.run_id
        if rid is not None:
            if self.start(resume=rid):
                self.resume_run = None
            return
        pid = self._selected_phase_id()
        pv = self.model.phase(pid) if pid else None
        if pv is not None and pv.state == "passed":
            # Guided: once the selected phase passed, `r` moves on to the next one.
            nxt = self.model.next_phase()
            if nxt is not None and nxt.state != "locked":
                pv = nxt
        if pv is None or pv.state == "locked":
            nxt = self.model.next_phase()
            if pv is not None and pv.state == "locked":
                self.notify(f"{pv.label} is locked: {pv.reason}", severity="warning", markup=False)
                return
            pv = nxt
        if pv is None:
            self.notify("Every phase passed.")
            return
        allowed = self.session.allowed_phases
        if allowed is not None and pv.phase_id not in allowed:
            self.notify(f"{pv.label} cannot run in this session (only "
                        f"{', '.join(allowed)}); ? shows why (the notes of this session).",
                        severity="warning", markup=False)
            return
        self.start(phases=[pv.phase_id])

    def action_run_step(self) -> None:
        """Run only the selected step."""
        sel = self._selected()
        if sel is None or sel[0] != "step":
            self.notify("Select a step first.", severity="warning")
            return
        sv = self.model.steps[sel[1]]
        self.start(phases=[sv.phase_id], steps=[sv.step_id])

    def action_rerun_failed(self) -> None:
        """Continue the failed run from its failed step; finished steps keep their outputs."""
        failed = self.model.failed_steps()
        if not failed:
            self.notify("No failed step to re-run.")
            return
        rid = self.last_run_id or self.model.run_id
        if rid and self.model.status in ("failed", "stopped"):
            self.start(resume=rid)
        else:
            self.start(phases=[failed[0].phase_id])

    def action_skip_step(self) -> None:
        """Skip the selected step where the runbook allows it (recorded in the journal)."""
        sel = self._selected()
        if sel is None or sel[0] != "step":
            self.notify("Select a step first.", severity="warning")
            return
        sv = self.model.steps[sel[1]]
        if not sv.skippable:
            self.notify(f"The runbook does not allow skipping {sv.label}.", severity="warning",
                        markup=False)
            return
        self.start(phases=[sv.phase_id], skip=[sv.step_id])

    def action_pause(self) -> None:
        """Stop after the current step; the run stays resumable."""
        if self.runner is None:
            self.notify("Nothing is running.")
            return
        self.runner.request_pause()
        self.notify("Pausing after the current step…")

    def action_filter_log(self) -> None:
        """Filter the log to the selected step; again to show every step."""
        pane = self.query_one(LogPane)
        sel = self._selected()
        if pane.step_filter is not None or sel is None or sel[0] != "step":
            pane.set_filter(None)
        else:
            pane.set_filter(sel[1])

    def action_export_report(self) -> None:
        """Write the Markdown report of the last run and show its path."""
        rid = self.last_run_id or self.model.run_id
        if not rid:
            self.notify("No run to report yet.", severity="warning")
            return
        try:
            path = export_report(self.session.state_dir, self.deployment, rid, self.model)
        except Exception as exc:
            self.notify(f"Report failed: {exc}", severity="error", markup=False)
            return
        self.notify(f"Report written: {path}", timeout=15, markup=False)

    def action_view_plan(self) -> None:
        """The engine's plan of the selected phase (rendered inputs, secrets masked)."""
        pid = self._selected_phase_id()
        self._build_plan([pid] if pid else None)

    @work(thread=True, group="plan", exclusive=True, exit_on_error=False)
    def _build_plan(self, phases: list[str] | None) -> None:
        try:
            from ...actions import default_registry
            from ...engine.plan import build_plan

            text: Any = build_plan(self.runbook, deployment=self.deployment,
                                   state_dir=self.session.state_dir, params=dict(self.params),
                                   phases=phases, registry=default_registry())
        except Exception as exc:
            text = f"The plan cannot be built: {exc}"
        self.app.call_from_thread(self._show_plan, text)

    def _show_plan(self, text: str) -> None:
        from .plan import PlanScreen

        self.app.push_screen(PlanScreen(text))

    def action_edit_params(self) -> None:
        """Change the deployment's parameters (the engine refuses changes to permanent ones)."""
        if self.running:
            self.notify("A run is in progress: pause (p) first.", severity="warning")
            return
        from .params import ParamFormScreen

        def saved(values: dict[str, Any] | None) -> None:
            if values is None:
                return
            self.params = values
            self.services.save_params(self.deployment, self.runbook, self.runbook_path, values)
            self.notify("Parameters saved; the next run uses them.")

        self.app.push_screen(ParamFormScreen(self.runbook, dict(self.params), self.deployment,
                                             existing=True), callback=saved)

    def action_help(self) -> None:
        from .help import HelpScreen

        self.app.push_screen(HelpScreen(notices_markdown(self.session)))

    def action_back(self) -> None:
        if self.running:
            self.notify("A run is in progress: pause (p) first.", severity="warning")
            return
        if len(self.app.screen_stack) > 2:
            self.dismiss(self.last_exit or 0)

    def stop_engine(self) -> None:
        """Refuse open questions and interrupt the runner (the journal keeps the state)."""
        if self.questions is not None:
            self.questions.abort()
        if self.runner is not None:
            self.runner.cancel()

    def on_unmount(self) -> None:
        self.stop_engine()

    def action_quit_app(self) -> None:
        """Quit; while a step runs, ask first, then interrupt (the journal keeps the state)."""
        if not self.running:
            self.app.exit(self.last_exit, return_code=self.last_exit or 0)
            return

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            self.quitting = True
            self.stop_engine()
            # If the engine does not stop within 10 s, leave anyway: the journal is on disk.
            self.set_timer(10, lambda: self.app.exit(130, return_code=130))

        self.app.push_screen(
            YesNoModal("Quit while a step runs?",
                       "The run is interrupted and saved; start elematrix again to resume it.",
                       yes="Quit", no="Keep running"), callback=answered)

