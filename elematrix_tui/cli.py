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
    p.add_argument("--json", action="store_true",
                   help="one engine event per line on stdout (JSON, secrets masked), for CI")
    _replace_secret(p)

    p = sub.add_parser("resume", help="continue an interrupted run (TUI, or headless with --yes)")
    p.add_argument("run_id", nargs="?", metavar="RUN_ID")
    _common(p)
    p.add_argument("--yes", action="store_true", help="headless: answer confirmations with yes")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true",
                   help="headless: one engine event per line on stdout (JSON, secrets masked)")
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

    p = sub.add_parser("status", help="the live deployment against what its runs converged: "
                                      "ok / drifted / unknown per fact; exit 1 when drifted")
    p.add_argument("deployment", metavar="DEPLOYMENT")
    p.add_argument("--runbook", default="poc-ec2", metavar="RUNBOOK",
                   help="the runbook that built it (default: poc-ec2)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    _common(p, runbook_opts=False)

    p = sub.add_parser("audit", help="the live posture judged against the runbook's intent "
                                     "(Prowler; --native: the gates' checks); exit 1 when "
                                     "something fails that the runbook does not accept")
    p.add_argument("deployment", metavar="DEPLOYMENT")
    p.add_argument("--runbook", default="poc-ec2", metavar="RUNBOOK",
                   help="the runbook that built it (default: poc-ec2)")
    p.add_argument("--json", action="store_true", help="print the audit as JSON")
    p.add_argument("--native", action="store_true",
                   help="no Prowler: the posture and hardened gates' checks of the same "
                        "control ids")
    _common(p, runbook_opts=False)

    p = sub.add_parser("schema", help="print the JSON Schema of a runbook or a parameter file "
                                      "(for editors: the YAML language server)")
    p.add_argument("what", choices=["runbook", "params"])
    p.add_argument("runbook", nargs="?", metavar="RUNBOOK",
                   help="params: type each parameter of this runbook")

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
            "recover-secrets": _recover_secrets, "schema": _schema, "status": _status,
            "audit": _audit,
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
    """A path, or a runbook's name, found in the one catalogue (``engine/catalog.py``:
    the bundled runbooks and ``ELEMATRIX_RUNBOOK_DIR``, the same the TUI lists)."""
    from .engine.catalog import resolve_runbook

    return resolve_runbook(name)


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


def _need_deployment(args: argparse.Namespace) -> str:
    from .engine.errors import InputError

    if not args.deployment:
        raise InputError("--deployment NAME is required: the named target this run belongs to "
                         "(e.g. --deployment staging)")
    return str(args.deployment)


# -- commands -----------------------------------------------------------------------------
def _schema(args: argparse.Namespace) -> int:
    from .engine.errors import InputError
    from .engine.schema import dumps, params_schema, runbook_schema

    if args.what == "runbook":
        if args.runbook:
            raise InputError("schema runbook: takes no RUNBOOK (the format is the same for all)")
        sys.stdout.write(dumps(runbook_schema(_registry())))
    else:
        rb = _load(resolve_runbook_path(args.runbook)) if args.runbook else None
        sys.stdout.write(dumps(params_schema(rb)))
    return 0


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
    from .engine.runner import RunOptions
    from .headless import run_headless

    path = resolve_runbook_path(args.runbook)
    rb = _load(path)
    deployment = _need_deployment(args)
    if rb.runbook == "restore":
        from .drill import DrillRequest, run_drill, wants_drill

        drill, args.sets = wants_drill(list(args.sets or []))
        if drill:
            from .engine.errors import InputError, Located

            if args.params or args.json:
                raise InputError("--set drill=true takes its values from --set only (not "
                                 "--params or --json)")
            if bad := [i for i in args.sets if "=" not in i or not i.partition("=")[0].strip()]:
                raise InputError([Located("--set", 0, 0, f"{i!r}: expected KEY=VALUE")
                                  for i in bad])
            sets = dict(item.partition("=")[::2] for item in args.sets)
            return run_drill(DrillRequest(source=deployment, state_dir=_state_dir(args),
                                          sets={k.strip(): v for k, v in sets.items()},
                                          assume_yes=args.yes, quiet=args.quiet))
    return run_headless(rb, deployment=deployment, state_dir=_state_dir(args),
                        params=_params(args, rb), runbook_path=path, quiet=args.quiet,
                        json_lines=args.json,
                        options=RunOptions(phases=args.phases, assume_yes=args.yes,
                                           replace_secrets=set(args.replace_secrets)))


def _resume(args: argparse.Namespace) -> int:
    from .engine.errors import InputError
    from .engine.journal import Journal
    from .engine.runner import RunOptions
    from .headless import run_headless
    from .history import find_run

    root = _state_dir(args)
    deployment, run_id = find_run(root, args.deployment, args.run_id)
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
    return run_headless(rb, deployment=deployment, state_dir=root, params=_params(args, rb),
                        runbook_path=path, quiet=args.quiet, resume_of=run_id,
                        json_lines=args.json,
                        options=RunOptions(assume_yes=True,
                                           replace_secrets=set(args.replace_secrets)))


def _plan(args: argparse.Namespace) -> int:
    from .engine.plan import build_plan
    from .planview import render_text

    path = resolve_runbook_path(args.runbook)
    rb = _load(path)
    deployment = _need_deployment(args)
    if rb.runbook == "restore":
        from .drill import drill_name, wants_drill

        drill, args.sets = wants_drill(list(args.sets or []))
        if drill:
            from .engine.errors import InputError, Located

            raise InputError([Located("--set", 0, 0, (
                f"drill=true: the drill is three runs against {drill_name(deployment)} (poc-ec2, "
                "restore, teardown), a deployment that exists only while it runs; plan "
                f"poc-ec2 for it (elematrix plan poc-ec2 --deployment {drill_name(deployment)}) "
                f"or run it: elematrix run restore --deployment {deployment} --set drill=true"))])
    live = frozenset() if args.offline else frozenset({"aws.preflight", "aws.assert"})
    plan = build_plan(rb, deployment=deployment, state_dir=_state_dir(args),
                      params=_params(args, rb), phases=args.phases, registry=_registry(),
                      live_actions=live, check=not args.offline)
    print(plan.to_json() if args.json else render_text(plan))
    return 0


def _runs(args: argparse.Namespace) -> int:
    from .history import list_runs

    return list_runs(_state_dir(args), args.deployment)


def _report(args: argparse.Namespace) -> int:
    from .history import write_report

    return write_report(_state_dir(args), args.deployment, args.run_id, args.format,
                        args.output)


def _recover_secrets(args: argparse.Namespace) -> int:
    """Fill the store's missing stack secrets from the rendering; never replace one."""
    from .engine.errors import InputError
    from .engine.lock import DeploymentLock
    from .engine.paths import deployment_dir, deployment_name_error
    from .engine.secrets import SecretStore
    from .stack.recover import RecoverError, recover_secrets

    dep = str(args.deployment)
    if (bad := deployment_name_error(dep)) is not None:
        raise InputError(bad)
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
    from .engine.paths import deployment_dir, deployment_name_error
    from .practice import (
        PRACTICE_RUNBOOK,
        PracticeUnavailable,
        practice_session,
        run_practice_headless,
    )

    if (bad := deployment_name_error(args.deployment)) is not None:
        raise InputError(bad)
    ddir = deployment_dir(_state_dir(args), args.deployment)
    try:
        # Only the emulator's start raises PracticeUnavailable.
        with practice_session(args.deployment, ddir) as s:
            path = resolve_runbook_path(PRACTICE_RUNBOOK)
            if args.headless:
                return run_practice_headless(_load(path), path, _state_dir(args),
                                             args.deployment, s)
            return _tui(args, runbook=path, deployment=args.deployment, practice=True,
                        params=s.params, phases=s.phases, notices=s.notices)
    except PracticeUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _existing_deployment_runbook(args: argparse.Namespace) -> Runbook:
    """The runbook of ``args.runbook`` for ``args.deployment``, which must already exist
    (status and audit read what a run recorded; they never start a deployment)."""
    from .engine.errors import InputError
    from .engine.journal import Journal
    from .engine.paths import deployment_name_error

    if (bad := deployment_name_error(args.deployment)) is not None:
        raise InputError(bad)
    if not Journal.exists(_state_dir(args), args.deployment):
        raise InputError(f"no deployment {args.deployment!r} in {_state_dir(args)}; "
                         f"'elematrix runs' lists the deployments' runs")
    return _load(resolve_runbook_path(args.runbook))


def _status(args: argparse.Namespace) -> int:
    """Exit 0: every checked fact holds; 1: something drifted; 2: bad input."""
    from .engine.status import build_status

    rb = _existing_deployment_runbook(args)
    status = build_status(rb, deployment=args.deployment, state_dir=_state_dir(args),
                          registry=_registry())
    print(status.to_json() if args.json else status.to_text())
    return status.exit_code


def _audit(args: argparse.Namespace) -> int:
    """Exit 0: nothing fails unexplained; 1: something does (or Prowler failed); 2: bad
    input or no Prowler (the message says how to install it)."""
    from .audit.prowler import ProwlerError
    from .audit.run import AuditUnavailable, run_audit

    rb = _existing_deployment_runbook(args)
    try:
        report = run_audit(rb, deployment=args.deployment, state_dir=_state_dir(args),
                           registry=_registry(), native=args.native)
    except AuditUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_INPUT
    except ProwlerError as e:
        print(f"error: {e}\n(`elematrix audit --native` runs the gates' checks instead)",
              file=sys.stderr)
        return 1
    print(report.to_json() if args.json else report.to_text())
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
