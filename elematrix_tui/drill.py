"""The restore drill: a backup proven by restoring it into a throwaway deployment.

``elematrix run restore --deployment NAME --set drill=true`` (docs/day-two.md). The drill
is another deployment, ``NAME-drill``, with its own journal, tags, keyring entries and
teardown; the engine knows nothing of drills: this front end runs three ordinary runs of
bundled runbooks against the drill deployment, one after another, each through
``headless.run_headless`` exactly as ``elematrix run`` would:

1. ``poc-ec2`` phases infra, configure and deploy for ``NAME-drill``, with the source's
   remembered parameters (its SSH CIDR, sizes, ports...; the source's server name, which
   a restored database needs) and the source's stored secrets copied into the drill's
   keyring entries first (the stack's secrets, the admin's and the canary users'
   passwords), and again right before the restore (the drill's bootstrap stored an admin
   token of its own): the restored database then matches them;
2. ``restore`` with ``source=NAME``: its ``copy_backup`` step copies the chosen backup
   server-side from the source's bucket into the drill's (the drill's instance role reads
   only its own bucket; the source's permissions are never widened), then the restore
   and every gate (the source's canary back byte-identical, both canary users log in,
   the admin logs in, E2EE);
3. ``teardown`` of ``NAME-drill`` with its bucket, also when step 1 or 2 failed; then the
   drill's keyring entries are deleted.

The source is only read (its journal, its keyring entries, its bucket's objects): its
journal and state directory are compared before and after, and a difference fails the
drill. RPO and RTO are the restore run's report outputs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .actions import default_registry
from .engine.catalog import resolve_runbook
from .engine.context import RunOptions
from .engine.errors import GuardError, InputError, Located, LockedError
from .engine.journal import Journal
from .engine.loader import load_runbook
from .engine.model import Runbook
from .engine.params import ParamValueError, coerce, parse_bool
from .engine.paths import deployment_dir, deployment_name_error
from .engine.resolve import META_PARAMS, META_PERMANENT, META_SECRET_NAMES
from .engine.secrets import SecretStore
from .headless import run_headless

# The drill deployment's name: the source's with this suffix.
DRILL_SUFFIX = "-drill"
# The parameter of the restore runbook that asks for a drill (the CLI takes it out).
DRILL_PARAM = "drill"
DEPLOY_RUNBOOK = "poc-ec2"
RESTORE_RUNBOOK = "restore"
TEARDOWN_RUNBOOK = "teardown"
DEPLOY_PHASES = ["infra", "configure", "deploy"]
# Files of a deployment's directory that change when only read (SQLite's WAL files).
_VOLATILE = ("journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm", "lock")
# Remembered values that describe the source's own machine, never the drill's: its host
# key fingerprints (the drill's instance has keys of its own, read from its console).
NOT_CARRIED = frozenset({"ssh_host_key"})


def drill_name(source: str) -> str:
    """The throwaway deployment a drill of ``source`` uses."""
    return source + DRILL_SUFFIX


def teardown_command(drill: str) -> str:
    """What the operator runs when a drill could not tear itself down."""
    return (f"elematrix run teardown --deployment {drill} --set confirm_deployment={drill} "
            "--yes")


def wants_drill(sets: list[str]) -> tuple[bool, list[str]]:
    """Whether ``--set drill=...`` asks for a drill, and the other ``--set`` items.
    A value that is not yes/no is a located input error."""
    rest: list[str] = []
    want = False
    for item in sets:
        key, sep, value = item.partition("=")
        if key.strip() != DRILL_PARAM:
            rest.append(item)
            continue
        flag = parse_bool(value) if sep else None
        if flag is None:
            raise InputError([Located("--set", 0, 0, f"{item!r}: drill takes true or false "
                                      "(a restore into a throwaway <name>-drill deployment)")])
        want = flag
    return want, rest


@dataclass
class DrillRequest:
    """One drill: the source deployment and what the operator gave on the command line."""

    source: str
    state_dir: Path
    # --set values other than drill=: a restore parameter goes to the restore run, a
    # poc-ec2 parameter overrides the source's remembered value for the drill's deploy.
    sets: Mapping[str, str]
    assume_yes: bool = False
    quiet: bool = False
    # Where the drill's lines and its runs' output go, one line a call; None prints them
    # on stdout (the CLI). The TUI passes a callback: it never redirects sys.stdout, and
    # its runs ask no question on the terminal (see headless.run_headless ``lines``).
    lines: Callable[[str], None] | None = None


@dataclass
class DrillOutcome:
    """What a drill ended with: the exit code (the CLI contract of :func:`run_drill`), each
    run's code, the restore's RPO/RTO when it reported them, whether the drill deployment
    was torn down and whether the source is unchanged."""

    code: int
    drill: str
    codes: dict[str, int] = field(default_factory=dict)
    backup: str | None = None
    rpo_s: float | None = None
    rto_s: float | None = None
    torn_down: bool = False
    source_unchanged: bool = True


def what_it_does(source: str) -> list[str]:
    """The drill, in the words the TUI's confirmation shows (docs/day-two.md)."""
    drill = drill_name(source)
    return [
        f"deploys a throwaway deployment {drill} (poc-ec2 {', '.join(DEPLOY_PHASES)}) with "
        f"{source}'s parameters and secrets: a new EC2 instance, security group, role and "
        "backup bucket of its own",
        f"restores {source}'s latest backup into {drill} and runs every gate (the canary "
        "back byte-identical, logins, E2EE); reports RPO and RTO",
        f"costs money on AWS while it runs (an instance of {source}'s size, for the length "
        "of a deploy and a restore)",
        f"tears {drill} down afterwards, bucket included, also when a run failed (if the "
        "teardown fails, the command to finish it is shown)",
        f"{source} itself is never touched: only its journal, secrets and backups are read",
    ]


def _load(name: str) -> tuple[Runbook, Path]:
    path = resolve_runbook(name)
    return load_runbook(path, default_registry()), path


def source_fingerprint(state_dir: Path, deployment: str) -> str:
    """A digest of what a deployment's state holds: its journal's runs, meta, events and
    recorded outputs, and every other file of its directory (name, size, mtime)."""
    ddir = deployment_dir(state_dir, deployment)
    h = hashlib.sha256()
    with Journal(ddir / "journal.sqlite") as journal:
        runs = [(r.id, r.runbook, r.status, r.exit_code, r.finished) for r in journal.runs()]
        h.update(json.dumps([runs, journal.meta(), len(journal.read_events()),
                             journal.latest_outputs()], sort_keys=True, default=str).encode())
    for p in sorted(ddir.rglob("*")):
        if p.is_file() and p.name not in _VOLATILE:
            st = p.stat()
            h.update(f"{p.relative_to(ddir)} {st.st_size} {st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@dataclass
class _Source:
    remembered: dict[str, Any]
    secret_names: list[str]
    server_name: str


def _read_source(state_dir: Path, source: str) -> _Source:
    path = deployment_dir(state_dir, source) / "journal.sqlite"
    with Journal(path) as journal:
        remembered = dict(journal.get_meta(META_PARAMS) or {})
        names = sorted(journal.get_meta(META_SECRET_NAMES) or [])
        outputs = journal.latest_outputs()
        locked = journal.get_meta(META_PERMANENT + "server_name")
    server = str(locked or outputs.get("server_name", {}).get("server_name") or "")
    if not server or not outputs.get("backup_bucket", {}).get("bucket") \
            or "canary" not in outputs:
        raise InputError(f"--deployment {source}: poc-ec2's deploy phase has not run for it "
                         "(no server name, backup bucket or canary recorded), so there is no "
                         f"backup to drill: elematrix run poc-ec2 --deployment {source} first")
    return _Source(remembered, names, server)


def _split_sets(sets: Mapping[str, str], deploy: Runbook, restore: Runbook
                ) -> tuple[dict[str, str], dict[str, str]]:
    deploy_names = {p.name for p in deploy.params}
    restore_names = {p.name for p in restore.params} - {"source"}
    errors: list[Located] = []
    to_deploy: dict[str, str] = {}
    to_restore: dict[str, str] = {}
    for key, value in sets.items():
        if key == "source":
            errors.append(Located("--set", 0, 0, "source: a drill restores the backup of "
                                  "--deployment itself; drop --set source"))
        elif key not in deploy_names | restore_names:
            errors.append(Located("--set", 0, 0, f"{key}: neither a parameter of the restore "
                                  "runbook nor of poc-ec2 (which the drill deploys with)"))
        for rb, into in ((deploy, to_deploy), (restore, to_restore)):
            param = rb.param(key)
            if param is None or (rb is restore and key == "source"):
                continue
            try:  # the runs would refuse it too, but after the drill began: say it now
                coerce(param, value)
            except ParamValueError as e:
                errors.append(Located("--set", 0, 0, f"{key}: {e} ({rb.runbook})"))
            into[key] = value
    if errors:
        raise InputError(errors)
    return to_deploy, to_restore


def _deploy_params(src: _Source, deploy: Runbook, overrides: Mapping[str, str]
                   ) -> dict[str, Any]:
    names = {p.name for p in deploy.params
             if p.type != "secret" and p.remember and p.name not in NOT_CARRIED}
    params: dict[str, Any] = {k: v for k, v in src.remembered.items() if k in names}
    # The restored database is of the source's server name (restore.sh refuses another).
    params["server_name"] = src.server_name
    params.update(overrides)
    return params


def _copy_secrets(store: SecretStore, source: str, drill: str, names: list[str]) -> list[str]:
    copied = []
    for name in names:
        value = store.get(source, name)
        if value is not None:
            store.set(drill, name, value)
            copied.append(name)
    return copied


def _drill_secret_names(state_dir: Path, drill: str) -> set[str]:
    if not Journal.exists(state_dir, drill):
        return set()
    with Journal(deployment_dir(state_dir, drill) / "journal.sqlite") as journal:
        return set(journal.get_meta(META_SECRET_NAMES) or [])


def _restore_report(state_dir: Path, drill: str) -> dict[str, Any]:
    if not Journal.exists(state_dir, drill):  # the restore run refused before it began
        return {}
    with Journal(deployment_dir(state_dir, drill) / "journal.sqlite") as journal:
        outputs = journal.latest_outputs()
    return {**outputs.get("copy_backup", {}), **outputs.get("report", {})}


def run_drill(req: DrillRequest) -> int:
    """The drill as the CLI runs it: :func:`drill_outcome`'s exit code."""
    return drill_outcome(req).code


def drill_outcome(req: DrillRequest) -> DrillOutcome:
    """Deploy ``<source>-drill``, restore the source's backup into it with every gate, tear
    it down; print RPO, RTO and that the source is unchanged (on ``req.lines`` when given).
    The outcome's exit code follows the CLI contract: 0 every run passed, 1 a run failed
    (the drill is torn down all the same, or the command to do it is printed), 2 bad input
    (nothing run; raised as InputError), 130 interrupted."""
    source, state_dir = req.source, req.state_dir
    drill = drill_name(source)
    if (bad := deployment_name_error(source)) is not None:
        raise InputError(bad)
    if (bad := deployment_name_error(drill)) is not None:
        raise InputError(f"--deployment {source}: the drill's deployment would be {drill!r}, "
                         f"and {bad.split(': ', 1)[-1]}")
    if not Journal.exists(state_dir, source):
        raise InputError(f"--deployment {source}: no such deployment in {state_dir} "
                         "('elematrix runs' lists the runs of each)")
    deploy, deploy_path = _load(DEPLOY_RUNBOOK)
    restore, restore_path = _load(RESTORE_RUNBOOK)
    teardown, teardown_path = _load(TEARDOWN_RUNBOOK)
    to_deploy, to_restore = _split_sets(req.sets, deploy, restore)
    src = _read_source(state_dir, source)
    before = source_fingerprint(state_dir, source)
    store = SecretStore()

    def say(text: str) -> None:
        if req.lines is not None:
            req.lines(f"drill: {text}")
        else:
            print(f"drill: {text}", flush=True)

    say(f"deploying {drill} (poc-ec2 {', '.join(DEPLOY_PHASES)}) with {source}'s parameters "
        f"and secrets; server name {src.server_name}")
    copied = _copy_secrets(store, source, drill, src.secret_names)
    options = RunOptions(phases=list(DEPLOY_PHASES), assume_yes=req.assume_yes)
    codes: dict[str, int] = {}
    try:
        codes["deploy"] = run_headless(deploy, deployment=drill, state_dir=state_dir,
                                       params=_deploy_params(src, deploy, to_deploy),
                                       runbook_path=deploy_path, options=options,
                                       quiet=req.quiet, lines=req.lines)
    except InputError:
        # Refused before anything ran: the copies are all the drill had written.
        for name in copied:
            store.delete(drill, name)
        raise
    if codes["deploy"] == 0:
        # Once restored, the database is the source's: every stored secret must be the
        # source's again (the drill's own bootstrap stored an admin token of its own, which
        # the restored database does not know).
        copied = sorted(set(copied) | set(_copy_secrets(store, source, drill,
                                                        src.secret_names)))
        say(f"restoring {source}'s backup {to_restore.get('backup', 'latest')!r} into {drill}")
        try:
            codes["restore"] = run_headless(
                restore, deployment=drill, state_dir=state_dir,
                params={**to_restore, "source": source}, runbook_path=restore_path,
                options=RunOptions(assume_yes=req.assume_yes), quiet=req.quiet, lines=req.lines)
        except (InputError, LockedError, GuardError) as e:
            # The drill is deployed by now: it is torn down below all the same.
            why = "; ".join(map(str, e.errors)) if isinstance(e, InputError) else str(e)
            say(f"the restore run was refused: {why}")
            codes["restore"] = 1
    if 130 in codes.values():
        say(f"interrupted: {drill} is left as it is. Tear it down with: "
            f"{teardown_command(drill)}")
        return DrillOutcome(130, drill, codes)
    say(f"tearing {drill} down (teardown, bucket included)")
    codes["teardown"] = run_headless(
        teardown, deployment=drill, state_dir=state_dir,
        params={"confirm_deployment": drill}, runbook_path=teardown_path,
        options=RunOptions(assume_yes=req.assume_yes), quiet=req.quiet, lines=req.lines)
    if codes["teardown"] == 0:
        for name in sorted(set(copied) | _drill_secret_names(state_dir, drill)):
            store.delete(drill, name)
    else:
        say(f"the teardown of {drill} did not finish: run {teardown_command(drill)}")
    unchanged = source_fingerprint(state_dir, source) == before
    outcome = DrillOutcome(1, drill, codes, torn_down=codes["teardown"] == 0,
                           source_unchanged=unchanged)
    if "restore" in codes:
        rep = _restore_report(state_dir, drill)
        if "rto_s" in rep:
            outcome.backup = str(rep.get("source_prefix", rep.get("backup")))
            outcome.rto_s = float(rep["rto_s"])
            outcome.rpo_s = float(rep["rpo_s"]) if rep.get("rpo_s") is not None else None
            say(f"backup {rep.get('source_prefix', rep.get('backup'))}: "
                f"RPO {rep.get('rpo_s')} s, RTO {float(rep['rto_s']):.1f} s")
    say(f"source {source}: " + ("unchanged (journal, state directory)" if unchanged else
                                "CHANGED: its journal or state directory differs"))
    ok = all(c == 0 for c in codes.values()) and unchanged
    say(" ".join(f"{k} {'passed' if c == 0 else 'failed'}" for k, c in codes.items())
        + ("" if "restore" in codes else " (restore not run: the deploy failed)"))
    outcome.code = 0 if ok else 1
    return outcome


__all__ = ["DRILL_SUFFIX", "DrillOutcome", "DrillRequest", "drill_name", "drill_outcome",
           "run_drill", "source_fingerprint", "teardown_command", "wants_drill",
           "what_it_does"]
