"""The elematrix Textual app and its entry point :func:`run_app` (called by ``cli.py``).

Flows: start screen -> new deployment -> parameter form -> run screen, or start screen
-> a deployment (resuming its interrupted run when there is one) -> run screen.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual.app import App
from textual.binding import Binding, BindingType

from ..engine.text import clean
from . import catalog
from .markup import escape
from .screens.start import StartScreen
from .services import RunServices, Session, StartActions

# Only the start screen is imported eagerly: the first frame must not wait for pydantic,
# the engine or the other screens (measured by bench/bench_tui.py: tui.first_frame_s).
if TYPE_CHECKING:
    from textual.command import Provider
    from textual.notifications import SeverityLevel

    from ..engine.model import Runbook
    from .bridge import RunnerFactory
    from .screens.new_deployment import NewDeployment
    from .screens.run import RunScreen

# Params the new-deployment screen fills in when the runbook declares them.
PROFILE_PARAMS = ("aws_profile",)
REGION_PARAMS = ("aws_region", "region")


def runbook_error_text(exc: Exception) -> str:
    """Located runbook errors (``PATH:LINE:COL: message``), one per line."""
    errors = getattr(exc, "errors", None)
    if isinstance(errors, list) and errors:
        out = []
        for e in errors[:8]:
            loc = ":".join(str(x) for x in (getattr(e, "path", ""), getattr(e, "line", ""),
                                            getattr(e, "col", "")) if x not in ("", None))
            out.append(f"{loc}: {getattr(e, 'msg', None) or getattr(e, 'message', e)}")
        return "\n".join(out)
    return str(exc)


class ElematrixApp(App[int]):
    """Guided, resumable runbook runs. Observes the engine; answers its questions."""

    TITLE = "elematrix"
    # Toasts at the top right, over the detail pane's first lines: never over the log's
    # last lines (the newest output), and never over a dialog's buttons at 80x24.
    CSS = """
    ToastRack { dock: top; align: right top; margin-bottom: 0; margin-top: 1; }
    Toast { max-width: 50; }
    """
    COMMANDS: ClassVar[set[Any]] = {*App.COMMANDS, lambda: _screen_actions()}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+c", "quit_from_anywhere", "Quit", show=False, priority=True),
    ]

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = True) -> None:
        """Every toast, from any screen: engine and host text shown, never obeyed."""
        super().notify(clean(message), title=clean(title), severity=severity, timeout=timeout,
                       markup=markup)

    def __init__(self, state_dir: Path, *, runbook: Path | None = None,
                 deployment: str | None = None, resume_run: str | None = None,
                 practice: bool = False, params: dict[str, Any] | None = None,
                 phases: list[str] | None = None, notices: list[str] | None = None,
                 runner_factory: RunnerFactory | None = None) -> None:
        super().__init__()
        # What every screen is given (screens never reach back into the app).
        self.session = Session(state_dir=state_dir, practice=practice,
                               notices=list(notices or []),
                               allowed_phases=list(phases) if phases else None)
        self.state_dir = state_dir
        self._runner_factory = runner_factory
        self.initial_runbook = runbook
        self.initial_deployment = deployment
        self.initial_resume = resume_run
        self.initial_params = dict(params or {})
        self.last_exit: int | None = None
        # SIGTERM/SIGHUP handling, switched on by run_app (a real terminal, not a test app).
        self.handle_stop_signals = False
        self.stopped_by: int | None = None
        if practice:
            self.sub_title = "practice"

    @property
    def runner_factory(self) -> RunnerFactory:
        """The engine's runner unless a test gave another (imported on first use)."""
        if self._runner_factory is None:
            from .bridge import engine_runner_factory

            self._runner_factory = engine_runner_factory
        return self._runner_factory

    def run_services(self) -> RunServices:
        """What a run screen is given: the session, the runner factory, and the app's
        flows it may call (keep edited parameters, the last exit code)."""

        def run_ended(code: int) -> None:
            self.last_exit = code

        return RunServices(session=self.session, runner_factory=self.runner_factory,
                           save_params=self.update_params, run_ended=run_ended)

    def on_mount(self) -> None:
        if self.handle_stop_signals:
            import asyncio
            import signal

            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGHUP):
                loop.add_signal_handler(sig, self.stop_on_signal, int(sig))
        self.push_screen(StartScreen(self.session, StartActions(
            new_deployment=lambda path: self.new_deployment(runbook=path),
            open_deployment=self.open_deployment)))
        # The notices are not toasted: three stacked toasts hid the log's last lines. The
        # banner counts them and the help screen (?) shows them in full.
        if self.initial_resume:
            name = self.initial_deployment or catalog.find_run(self.state_dir,
                                                               self.initial_resume)
            if name is None:
                self.notify(f"No deployment holds run {self.initial_resume}.",
                            severity="error", markup=False)
                return
            self.open_deployment(self._entry(name), resume_run=self.initial_resume)
        elif self.initial_deployment:
            entry = self._entry(self.initial_deployment)
            if self.initial_runbook is not None and not entry.settings:
                self._start_with_runbook(self.initial_deployment, self.initial_runbook)
            elif entry.runbook_path is None and not entry.settings:
                self.new_deployment(runbook=self.initial_runbook,
                                    name=self.initial_deployment)
            else:
                self.open_deployment(entry, params=self.initial_params)
        elif self.initial_runbook:
            self.new_deployment(runbook=self.initial_runbook)

    def _start_with_runbook(self, name: str, path: Path) -> None:
        """A deployment named on the command line with its runbook (``elematrix practice``):
        straight to the run screen when the given params cover every required one."""
        from .screens.new_deployment import NewDeployment
        from .screens.run import RunScreen

        rb = self.load_runbook(path)
        if rb is None:
            return
        params = dict(self.initial_params)
        if rb.param("deployment"):
            params.setdefault("deployment", name)
        missing = [p.name for p in rb.params
                   if p.is_required and p.type != "secret" and p.name not in params]
        if missing:
            self.parameter_form(NewDeployment(name=name, runbook_path=path, aws_profile=None,
                                              aws_region=None))
            return
        self.save_deployment(name, rb, path, params, aws_profile=None, aws_region=None)
        self.push_screen(RunScreen(rb, deployment=name, params=params, runbook_path=path,
                                   services=self.run_services()))

    def _entry(self, name: str) -> catalog.DeploymentEntry:
        for e in catalog.list_deployments(self.state_dir):
            if e.name == name:
                return e
        return catalog.DeploymentEntry(name=name)

    # -- flows --------------------------------------------------------------------
    def load_runbook(self, path: Path) -> Runbook | None:
        try:
            return catalog.load_runbook_file(path)
        except Exception as exc:
            self.notify(f"Runbook {path.name} has errors:\n{escape(runbook_error_text(exc))}",
                        severity="error", timeout=20)
            return None

    def new_deployment(self, *, runbook: Path | None = None, name: str | None = None) -> None:
        """New deployment screen, then the parameter form, then the run screen."""
        from .screens.new_deployment import NewDeploymentScreen

        runbooks = catalog.list_runbooks()
        if runbook is not None and all(r.path != runbook for r in runbooks):
            n, t = catalog.title_of(runbook)
            runbooks.append(catalog.RunbookEntry(n, t, runbook, "user"))
        existing = {d.name for d in catalog.list_deployments(self.state_dir)}
        screen = NewDeploymentScreen(runbooks, existing, runbook=runbook)

        def chosen(nd: NewDeployment | None) -> None:
            if nd is not None:
                self.parameter_form(nd)

        self.push_screen(screen, callback=chosen)
        if name:
            screen.call_after_refresh(lambda: setattr(screen.query_one("#name"), "value", name))

    def parameter_form(self, nd: NewDeployment) -> None:
        from .screens.params import ParamFormScreen
        from .screens.run import RunScreen

        rb = self.load_runbook(nd.runbook_path)
        if rb is None:
            return
        values: dict[str, Any] = dict(self.initial_params)
        for p in PROFILE_PARAMS:
            if rb.param(p) and nd.aws_profile:
                values[p] = nd.aws_profile
        for p in REGION_PARAMS:
            if rb.param(p) and nd.aws_region:
                values[p] = nd.aws_region

        def filled(params: dict[str, Any] | None) -> None:
            if params is None:
                return
            self.save_deployment(nd.name, rb, nd.runbook_path, params,
                                 aws_profile=nd.aws_profile, aws_region=nd.aws_region)
            self.push_screen(RunScreen(rb, deployment=nd.name, params=params,
                                       runbook_path=nd.runbook_path,
                                       services=self.run_services()))

        self.push_screen(ParamFormScreen(rb, values, nd.name), callback=filled)

    def save_deployment(self, name: str, rb: Runbook, path: Path, params: dict[str, Any], *,
                        aws_profile: str | None, aws_region: str | None) -> None:
        """Remember the deployment's choices and parameters in its journal (the one store);
        secret and one-shot values are never written."""
        catalog.write_settings(self.state_dir, name, {
            "runbook_name": rb.runbook,
            "runbook_path": str(path),
            "aws_profile": aws_profile,
            "aws_region": aws_region,
            "params": params,
        }, runbook=rb)

    def update_params(self, name: str, rb: Runbook, path: Path | None,
                      params: dict[str, Any]) -> None:
        """Save edited parameters, keeping the deployment's other settings."""
        choices: dict[str, Any] = {"params": params}
        if path is not None:
            choices["runbook_path"] = str(path)
        catalog.write_settings(self.state_dir, name, choices, runbook=rb)

    def open_deployment(self, entry: catalog.DeploymentEntry, *, resume_run: str | None = None,
                        params: dict[str, Any] | None = None) -> None:
        """The run screen of an existing deployment, resuming its interrupted run if any."""
        from .screens.run import RunScreen

        path = entry.runbook_path
        if path is None and entry.runbook:
            for r in catalog.list_runbooks():
                if r.name == entry.runbook:
                    path = r.path
                    break
        if path is None:
            self.notify(f"Cannot tell which runbook {entry.name} uses.", severity="error",
                        markup=False)
            return
        rb = self.load_runbook(path)
        if rb is None:
            return
        values = dict(entry.settings.get("params") or {})
        values.update(params or {})
        self.push_screen(RunScreen(rb, deployment=entry.name, params=values, runbook_path=path,
                                   resume_run=resume_run or entry.interrupted_run,
                                   services=self.run_services()))

    def _run_screens(self) -> list[RunScreen]:
        if "elematrix_tui.ui.screens.run" not in sys.modules:
            return []  # never opened: nothing to stop
        from .screens.run import RunScreen

        return [s for s in self.screen_stack if isinstance(s, RunScreen)]

    def action_quit_from_anywhere(self) -> None:
        """ctrl+c: the same as q on the run screen (asks while a step runs), even over a modal."""
        for s in self._run_screens():
            if s.running:
                s.action_quit_app()
                return
        self.exit(self.last_exit, return_code=self.last_exit or 0)

    def stop_on_signal(self, signum: int) -> None:
        """SIGTERM/SIGHUP: a confirmed quit, as Ctrl-C then "Quit" would do: the run is
        interrupted and journaled, then the app leaves with 128 + the signal's number."""
        if self.stopped_by is not None:
            return
        self.stopped_by = signum
        code = 128 + signum
        for s in self._run_screens():
            if s.running:
                s.quitting = True  # the run screen leaves once the engine has stopped
                s.stop_engine()
                # The journal is on disk: leave anyway if the engine takes too long.
                s.set_timer(10, lambda: self.exit(code, return_code=code))
                return
        self.exit(code, return_code=code)

    def exit(self, result: int | None = None, return_code: int = 0,
             message: Any = None) -> None:
        """Leave the app; an engine still waiting on a question gets "no" and is cancelled."""
        for s in self._run_screens():
            s.stop_engine()
        if self.stopped_by is not None:
            return_code = 128 + self.stopped_by
        super().exit(result, return_code=return_code, message=message)


def _screen_actions() -> type[Provider]:
    from .commands import ScreenActions

    return ScreenActions


def run_app(state_dir: Path, *, runbook: Path | None = None, deployment: str | None = None,
            resume_run: str | None = None, practice: bool = False,
            params: dict[str, Any] | None = None, phases: list[str] | None = None,
            notices: list[str] | None = None) -> int:
    """Run the TUI until the operator quits; return the process exit code.

    ``phases`` limits what this session may run; ``notices`` are shown at the top of
    every screen (practice mode says what is emulated and what is not)."""
    app = ElematrixApp(state_dir, runbook=runbook, deployment=deployment,
                       resume_run=resume_run, practice=practice, params=params,
                       phases=phases, notices=notices)
    app.handle_stop_signals = True
    app.run()
    if app.stopped_by is not None:
        import signal

        print(f"{signal.Signals(app.stopped_by).name} received: elematrix stopped; an "
              f"interrupted run keeps its state, 'elematrix resume' continues it.",
              file=sys.stderr)
    return app.return_code or 0


def _default_state_dir() -> Path:
    env = os.environ.get("ELEMATRIX_STATE_DIR")
    if env:
        return Path(env)
    try:
        from ..engine.paths import state_dir
    except ImportError:
        import platformdirs

        return Path(platformdirs.user_state_dir("elematrix"))
    return state_dir()


if __name__ == "__main__":  # ``python -m elematrix_tui.ui.app`` before cli.py existed
    sys.exit(run_app(_default_state_dir()))
