"""The ``elematrix`` command line. The TUI is the default command; the rest is headless.

Only argparse is imported at start so ``elematrix --help`` stays fast; each command
imports what it needs. Exit codes: 0 passed, 1 a step or gate failed (or the run was
refused), 2 bad input, 130 interrupted (state saved, resumable).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine.model import Runbook
    from .engine.registry import Registry

EXIT_INPUT = 2


def _common(p: argparse.ArgumentParser, *, runbook_opts: bool = True) -> None:
    p.add_argument("--state-dir", metavar="DIR",
                   help="state directory (default: $ELEMATRIX_STATE_DIR or the user state dir)")
    if runbook_opts:
        p.add_argument("--deployment", metavar="NAME", help="the deployment to act on")
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="set a parameter (repeatable)")
        p.add_argument("--params", metavar="FILE.yaml", help="parameter values from a YAML file")


def _replace_secret(p: argparse.ArgumentParser) -> None:
    p.add_argument("--replace-secret", dest="replace_secrets", action="append", default=[],
                   metavar="NAME", help="let a given value replace this stored secret of the "
                                        "deployment (refused otherwise; repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="elematrix",
        description="Deploy a white-label Matrix/Element platform onto AWS EC2, phase by phase, "
                    "from YAML runbooks. With no command, opens the terminal UI.")
    parser.add_argument("--version", action="version", version="elematrix-tui 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("practice", help="the TUI against an embedded AWS emulator (no account)")
    _common(p, runbook_opts=False)
    p.add_argument("--deployment", metavar="NAME", default="practice")
    p.add_argument("--headless", action="store_true",
                   help="no TUI: run the practice phases and print as 'run' does")

    p = sub.add_parser("validate", help="check runbooks; errors as PATH:LINE:COL: message")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--params", metavar="FILE.yaml", help="also check a parameter file")

    p = sub.add_parser("plan", help="what would run, with rendered inputs; changes nothing")
    p.add_argument("runbook", metavar="RUNBOOK")
    _common(p)
    p.add_argument("--phase", dest="phases", action="append", metavar="ID")
    p.add_argument("--offline", action="store_true",
                   help="run no step's check and no read-only AWS look-up (preflight: "
                        "identity, AMI, instance type, cost; posture asserts); render only")
    p.add_argument("--json", action="store_true",
                   help="print the plan as JSON (stable keys: docs/plan.md)")

    p = sub.add_parser("run", help="headless run of a runbook")
    p.add_argument("runbook", metavar="RUNBOOK")
    _common(p)
    p.add_argument("--phase", dest="phases", action="append", metavar="ID",
                   help="run only this phase (repeatable)")
    p.add_argument("--yes", action="store_true", help="answer confirmations with yes")
    p.add_argument("--quiet", action="store_true", help="no log lines, only steps and summary")
    _replace_secret(p)

    p = sub.add_parser("resume", help="continue an interrupted run (TUI, or headless with --yes)")
    p.add_argument("run_id", nargs="?", metavar="RUN_ID")
    _common(p)
    p.add_argument("--yes", action="store_true", help="headless: answer confirmations with yes")
    p.add_argument("--quiet", action="store_true")
    _replace_secret(p)

    p = sub.add_parser("runs", help="runs with their status")
    _common(p, runbook_opts=False)
    p.add_argument("--deployment", metavar="NAME")

    p = sub.add_parser("report", help="a run's report from the journal")
    p.add_argument("run_id", metavar="RUN_ID")
    p.add_argument("--format", choices=["md", "json"], default="md")
    p.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    _common(p, runbook_opts=False)
    p.add_argument("--deployment", metavar="NAME")

    p = sub.add_parser("recover-secrets",
                       help="put a deployment's stack secrets back into the secret store "
                            "from its last rendering (after the store was lost)")
    _common(p, runbook_opts=False)
    p.add_argument("--deployment", metavar="NAME", required=True)
    p.add_argument("--from", dest="source", metavar="DIR",
                   help="the rendered stack to read (default: the deployment's stack dir)")

    p = sub.add_parser("doctor", help="lint a stack directory for the known pitfalls",
                       add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # `elematrix validate ... | head`: the reader left. Say nothing more (Python's
        # advice: point stdout at devnull so the interpreter's final flush is quiet too).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + 13  # as a shell reports a process ended by SIGPIPE


def _main(argv: list[str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["doctor"]:
        return _doctor(args_list[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as e:  # argparse exits 2 on usage errors, as our contract wants
        return int(e.code or 0)
    from .engine.errors import GuardError, InputError, LockedError

    try:
        handler = {
            None: _tui, "practice": _practice, "validate": _validate, "plan": _plan,
            "run": _run, "resume": _resume, "runs": _runs, "report": _report,
            "recover-secrets": _recover_secrets,
        }[args.command]
        return handler(args)
    except InputError as e:
        from .engine.text import clean

        for err in e.errors:
            print(clean(f"error: {err}"), file=sys.stderr)
        return EXIT_INPUT
    except (LockedError, GuardError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; state saved. 'elematrix resume' continues.", file=sys.stderr)
        return 130


# -- helpers ------------------------------------------------------------------------------
def _state_dir(args: argparse.Namespace) -> Path:
    from .engine.paths import state_dir

    return state_dir(getattr(args, "state_dir", None))


def _registry() -> Registry:
    from .actions import default_registry

    return default_registry()


def resolve_runbook_path(name: str) -> Path:
    """A path, or the name of a bundled runbook (``poc-ec2``) or one in the user's folder."""
    from .bundled import runbooks_dir
    from .engine.errors import InputError
    from .engine.paths import user_runbook_dir

    p = Path(name)
    if p.exists() or "/" in name or name.endswith((".yaml", ".yml")):
        if not p.exists():
            raise InputError(f"{name}: no such runbook file")
        return p
    user, bundled = user_runbook_dir() / f"{name}.yaml", runbooks_dir() / f"{name}.yaml"
    if user.exists() and bundled.exists():
        # Never silently: a copied runbook of the same name would run in place of ours.
        raise InputError(f"{name}: is both a bundled runbook and {user}; refusing to guess. "
                         f"Give the path to run yours ({user}), or rename it")
    for cand in (user, bundled):
        if cand.exists():
            return cand
    raise InputError(f"{name}: no such runbook file, and no bundled runbook of that name "
                     f"(bundled: {', '.join(bundled_runbooks())})")


def bundled_runbooks() -> list[str]:
    """The names of the bundled runbooks (``bundled.py`` finds them)."""
    from .bundled import bundled_runbook_names

    return bundled_runbook_names()


def _load(path: Path) -> Runbook:
    from .engine.loader import load_runbook

    return load_runbook(path, _registry())


def _params(args: argparse.Namespace, rb: Runbook) -> dict[str, Any]:
    from .engine.errors import InputError, Located
    from .engine.loader import load_params_file

    values: dict[str, Any] = {}
    if getattr(args, "params", None):
        values.update(load_params_file(args.params, rb))
    errors = []
    for item in getattr(args, "sets", []) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            errors.append(Located("--set", 0, 0, f"{item!r}: expected KEY=VALUE"))
            continue
        values[key.strip()] = value
    # Secrets can come from the environment so they never appear in `ps` or shell history.
    for p in rb.params:
        env = os.environ.get(f"ELEMATRIX_SECRET_{p.name.upper()}")
        if p.type == "secret" and env and p.name not in values:
            values[p.name] = env
    if errors:
        raise InputError(errors)
    return values


def _open_or_skip(root: Path, dep: str, *, named: bool) -> Any:
    """A deployment's journal; an unreadable one is an error when named, else skipped with a
    warning (one bad journal must not stop commands about the others)."""
    from .engine.errors import InputError
    from .engine.journal import Journal

    try:
        return Journal.open(root, dep)
    except InputError as e:
        if named:
            raise
        print(f"warning: skipped deployment {dep!r}: {e}", file=sys.stderr)
        return None


def _need_deployment(args: argparse.Namespace) -> str:
    from .engine.errors import InputError

    if not args.deployment:
        raise InputError("--deployment NAME is required: the named target this run belongs to "
                         "(e.g. --deployment staging)")
    return str(args.deployment)


# -- commands -----------------------------------------------------------------------------
def _validate(args: argparse.Namespace) -> int:
    from .engine.errors import RunbookError
    from .engine.loader import load_params_file

    bad = False
    for name in args.paths:
        try:
            path = resolve_runbook_path(name)
            rb = _load(path)
            steps = sum(len(ph.steps) + len(ph.gates) for ph in rb.phases)
            if args.params:
                load_params_file(args.params, rb)
            print(f"{path}: ok ({len(rb.phases)} phases, {steps} steps and gates)")
            _print_local_effects(rb)
        except RunbookError as e:
            from .engine.text import clean

            bad = True
            for err in e.errors:
                print(clean(str(err)), file=sys.stderr)
    return EXIT_INPUT if bad else 0


def _print_local_effects(rb: Runbook) -> None:
    """validate: name every step that acts on this machine (a runbook is trusted code)."""
    import textwrap

    from .engine.text import clean
    from .engine.trust import local_effects

    effects = local_effects(rb, _registry())
    if not effects:
        return
    print(f"  acts on THIS machine ({len(effects)}; read them before running it):")
    # Steps that share one effect are listed together: sixteen identical lines would hide
    # the one line that differs, which is the one an operator must not miss.
    groups: dict[tuple[str, str], list[str]] = {}
    for e in effects:
        groups.setdefault((e.action, e.text), []).append(f"{e.phase_id}/{e.step_id}")
    for (action, text), steps in groups.items():
        if len(steps) == 1:
            print(clean(f"    {steps[0]} ({action}): {text}"))
            continue
        print(clean(f"    {len(steps)} steps ({action}): {text}:"))
        for line in textwrap.wrap(", ".join(steps), width=88):
            print(clean(f"      {line}"))


def _run(args: argparse.Namespace) -> int:
    from .engine.runner import Runner, RunOptions
    from .headless import HeadlessQuestions, Printer, StopSignals

    path = resolve_runbook_path(args.runbook)
    rb = _load(path)
    deployment = _need_deployment(args)
    params = _params(args, rb)
    printer = Printer(quiet=args.quiet)
    runner = Runner(rb, deployment=deployment, state_dir=_state_dir(args), params=params,
                    questions=HeadlessQuestions(assume_yes=args.yes), sinks=[printer],
                    registry=_registry(), runbook_path=path,
                    options=RunOptions(phases=args.phases, assume_yes=args.yes,
                                       replace_secrets=set(args.replace_secrets)))
    with StopSignals(deployment) as stop:
        code = runner.run()
    printer.summary(runner)
    return stop.exit_code(code)


def _find_run(args: argparse.Namespace) -> tuple[str, str]:
    """(deployment, run_id) of the run to resume."""
    from .engine.errors import InputError
    from .engine.journal import Journal, list_deployments

    root = _state_dir(args)
    deployments = [args.deployment] if args.deployment else list_deployments(root)
    candidates = []
    for dep in deployments:
        if not Journal.exists(root, dep):
            continue
        j = _open_or_skip(root, dep, named=bool(args.deployment))
        if j is None:
            continue
        try:
            for run in j.runs():
                if args.run_id and run.id != args.run_id:
                    continue
                if run.status != "passed":
                    candidates.append((run.started, dep, run.id))
        finally:
            j.close()
    if not candidates:
        what = f"run {args.run_id}" if args.run_id else "unfinished run"
        where = f" of deployment {args.deployment!r}" if args.deployment else ""
        raise InputError(f"found no {what}{where} to resume in {root}; "
                         f"'elematrix runs' lists the runs")
    if not args.run_id and not args.deployment and len({c[1] for c in candidates}) > 1:
        raise InputError("several deployments have unfinished runs; name one with "
                         "--deployment NAME or give the RUN_ID ('elematrix runs' lists them)")
    _, dep, run_id = max(candidates)
    return dep, run_id


def _resume(args: argparse.Namespace) -> int:
    from .engine.errors import InputError
    from .engine.journal import Journal
    from .engine.runner import Runner, RunOptions
    from .headless import HeadlessQuestions, Printer, StopSignals

    deployment, run_id = _find_run(args)
    root = _state_dir(args)
    j = Journal.open(root, deployment)
    row = j.run(run_id)
    j.close()
    assert row is not None
    path = Path(row.runbook_path)
    if not path.exists():
        raise InputError(f"run {run_id} used {path}, which no longer exists; restore the file "
                         f"to resume")
    if not args.yes:
        return _tui(args, runbook=path, deployment=deployment, resume_run=run_id)
    rb = _load(path)
    printer = Printer(quiet=args.quiet)
    runner = Runner(rb, deployment=deployment, state_dir=root, params=_params(args, rb),
                    questions=HeadlessQuestions(assume_yes=True), sinks=[printer],
                    registry=_registry(), runbook_path=path,
                    options=RunOptions(assume_yes=True,
                                       replace_secrets=set(args.replace_secrets)))
    with StopSignals(deployment) as stop:
        code = runner.resume(run_id)
    printer.summary(runner)
    return stop.exit_code(code)


def _plan(args: argparse.Namespace) -> int:
    from .engine.plan import build_plan
    from .planview import render_text

    path = resolve_runbook_path(args.runbook)
    rb = _load(path)
    deployment = _need_deployment(args)
    live = frozenset() if args.offline else frozenset({"aws.preflight", "aws.assert"})
    plan = build_plan(rb, deployment=deployment, state_dir=_state_dir(args),
                      params=_params(args, rb), phases=args.phases, registry=_registry(),
                      live_actions=live, check=not args.offline)
    print(plan.to_json() if args.json else render_text(plan))
    return 0


def _runs(args: argparse.Namespace) -> int:
    from .engine.errors import InputError
    from .engine.journal import Journal, list_deployments
    from .engine.lock import DeploymentLock
    from .engine.paths import deployment_dir

    root = _state_dir(args)
    rows = []
    unreadable: list[str] = []
    for dep in ([args.deployment] if args.deployment else list_deployments(root)):
        if not Journal.exists(root, dep):
            continue
        try:
            j = Journal.open(root, dep)
        except InputError as e:  # one bad journal must not hide the other deployments
            print(f"error: {e}", file=sys.stderr)
            unreadable.append(dep)
            continue
        held = DeploymentLock(deployment_dir(root, dep) / "lock").is_held()
        for run in j.runs():
            status = run.status
            if status == "running" and not held:
                status = "interrupted"  # its process died: no one holds the lock
            dur = (run.finished or run.started) - run.started
            rows.append((run.started, run.id, dep, run.runbook, status, f"{dur:.1f}s"))
        j.close()
    rows.sort(reverse=True)
    for dep in unreadable:
        print(f"deployment {dep}: UNREADABLE journal, its runs are not listed (error above)")
    if not rows:
        print(f"no runs in {root}")
        return 0
    import time

    print(f"{'RUN':<24} {'DEPLOYMENT':<16} {'RUNBOOK':<12} {'STATUS':<12} {'STARTED':<19} "
          f"DURATION")
    for started, rid, dep, rbname, status, duration in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
        print(f"{rid:<24} {dep:<16} {rbname:<12} {status:<12} {when:<19} {duration}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .engine.errors import InputError
    from .engine.journal import Journal, list_deployments
    from .engine.report import build_report

    root = _state_dir(args)
    for dep in ([args.deployment] if args.deployment else list_deployments(root)):
        if not Journal.exists(root, dep):
            continue
        j = _open_or_skip(root, dep, named=bool(args.deployment))
        if j is None:
            continue
        try:
            if j.run(args.run_id) is not None:
                text = build_report(j, args.run_id, args.format)
                if args.output:
                    Path(args.output).write_text(text)
                    print(f"report written to {args.output}")
                else:
                    sys.stdout.write(text)
                return 0
        finally:
            j.close()
    raise InputError(f"no run {args.run_id!r} in {root}; 'elematrix runs' lists the runs")


def _recover_secrets(args: argparse.Namespace) -> int:
    """Fill the store's missing stack secrets from the rendering; never replace one."""
    from .engine.errors import InputError
    from .engine.lock import DeploymentLock
    from .engine.paths import DEPLOYMENT_RE, deployment_dir
    from .engine.secrets import SecretStore
    from .stack.recover import RecoverError, recover_secrets

    dep = str(args.deployment)
    if not DEPLOYMENT_RE.fullmatch(dep):
        raise InputError(f"deployment name {dep!r} is not valid")
    ddir = deployment_dir(_state_dir(args), dep)
    source = Path(args.source) if args.source else ddir / "stack"
    try:
        found = recover_secrets(source)
    except RecoverError as e:
        raise InputError(str(e)) from None
    store = SecretStore()
    lock = DeploymentLock(ddir / "lock")
    lock.acquire(dep, "recover-secrets")
    restored, kept, conflicts = [], [], []
    try:
        for name, value in sorted(found.items()):
            have = store.get(dep, name)
            if have is None:
                store.set(dep, name, value)
                restored.append(name)
            elif have == value:
                kept.append(name)
            else:
                conflicts.append(name)
    finally:
        lock.release()
    if restored:
        print(f"recovered from {source} into {store.description}: {', '.join(restored)}")
    if kept:
        print(f"already stored with the same value: {', '.join(kept)}")
    if conflicts:
        print(f"error: the store holds different values for {', '.join(conflicts)} than "
              f"{source}; nothing of those was changed. Decide which is right by hand.",
              file=sys.stderr)
        return 1
    return 0


def _doctor(argv: list[str]) -> int:
    try:
        from .stack.doctor import main as doctor_main
    except ImportError:
        print("error: the doctor is not available in this build", file=sys.stderr)
        return EXIT_INPUT
    return doctor_main(argv)


def _tui(args: argparse.Namespace, *, runbook: Path | None = None, deployment: str | None = None,
         resume_run: str | None = None, practice: bool = False,
         params: dict[str, Any] | None = None, phases: list[str] | None = None,
         notices: list[str] | None = None) -> int:
    try:
        from .ui.app import run_app
    except ImportError as e:
        print(f"error: the terminal UI cannot start: {e}", file=sys.stderr)
        return 1
    return int(run_app(_state_dir(args), runbook=runbook, deployment=deployment,
                       resume_run=resume_run, practice=practice, params=params,
                       phases=phases, notices=notices))


def _practice(args: argparse.Namespace) -> int:
    from .engine.errors import InputError
    from .engine.paths import DEPLOYMENT_RE, deployment_dir
    from .practice import PRACTICE_RUNBOOK, PracticeUnavailable, practice_session

    if not DEPLOYMENT_RE.fullmatch(args.deployment):
        raise InputError(f"deployment name {args.deployment!r}: a lower-case letter, then "
                         f"lower-case letters, digits or '-' (2-31 characters)")
    ddir = deployment_dir(_state_dir(args), args.deployment)
    try:
        # Only the emulator's start raises PracticeUnavailable.
        with practice_session(args.deployment, ddir) as s:
            path = resolve_runbook_path(PRACTICE_RUNBOOK)
            if args.headless:
                return _practice_headless(args, path, s.params, s.phases, s.notices)
            return _tui(args, runbook=path, deployment=args.deployment, practice=True,
                        params=s.params, phases=s.phases, notices=s.notices)
    except PracticeUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _practice_headless(args: argparse.Namespace, path: Path, params: dict[str, Any],
                       phases: list[str] | None, notices: list[str]) -> int:
    from .engine.journal import Journal
    from .engine.runner import Runner, RunOptions
    from .headless import HeadlessQuestions, Printer, StopSignals

    for n in notices[:-1] if phases else notices:
        print(n)
    rb = _load(path)
    root = _state_dir(args)
    resume_of = None
    if Journal.exists(root, args.deployment):
        j = Journal.open(root, args.deployment)
        runs = [r for r in j.runs() if r.status != "passed"]
        j.close()
        resume_of = runs[0].id if runs else None
    printer = Printer()
    runner = Runner(rb, deployment=args.deployment, state_dir=root, params=params,
                    questions=HeadlessQuestions(assume_yes=True), sinks=[printer],
                    registry=_registry(), runbook_path=path,
                    options=RunOptions(phases=phases, assume_yes=True))
    with StopSignals(args.deployment) as stop:
        code = runner.resume(resume_of) if resume_of else runner.run()
    code = stop.exit_code(code)
    printer.summary(runner)
    if code == 0 and phases:
        print(f"\n{notices[-1]}")
    return code


if __name__ == "__main__":
    sys.exit(main())
