"""``stack.adapt``: the operator's own stack, adapted to the HTTP-only host.

The configure phase of ``poc-ec2`` runs this step instead of ``stack.render`` when
``stack_source`` names a directory. The operator's files are copied to a scratch
directory, the doctor's HTTP-only adaptation (``stack/fix.py: plan_fix``) is applied to
the copy, and the result is written where the bundled rendering goes
(``<deployment_dir>/stack``), with the same outputs as ``stack.render``: every later step
(upload, compose, gates) applies unchanged. The operator's directory is only read.

Secrets found in the stack (Synapse's ``registration_shared_secret``,
``macaroon_secret_key``, ``form_secret`` and the database password) go to the keyring
under the bundled stack's names (``stack/values.py: SECRET_NAMES``); every diff and log
line masks them. What cannot be decided mechanically (the fix plan's manual list, a
server name other than the deployment's, a missing secret) is refused with the file and
line and what to do: exit 2, nothing written.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.action import Action, Check, Inputs, Result, StepContext
from ..engine.containment import DeploymentPath, deployment_path
from ..engine.errors import InputError, Located
from ..stack.values import SECRET_NAMES

# Directories of a stack that are never part of its configuration: VCS data, and the data
# a running TLS stack keeps beside its files (database, certificates). Copying them would
# upload a database or private keys.
_SKIP_DIRS = frozenset({".git", ".hg", ".svn", "postgres-data", "pgdata", "db-data",
                        "media_store", "certbot", "letsencrypt", "certs", "node_modules"})
# A stack's configuration is text; anything larger is data, not configuration.
_MAX_FILE_BYTES = 1 << 20

# Keys of homeserver.yaml whose value is a secret, by the keyring name they are stored as.
_HOMESERVER_SECRETS = {"registration_shared_secret": "registration_shared_secret",
                       "macaroon_secret_key": "macaroon_secret_key",
                       "form_secret": "form_secret"}
# Synapse's admin bootstrap (matrix.bootstrap) registers the admin with this one.
_REQUIRED_SECRETS = {"registration_shared_secret": "registration_shared_secret",
                     "postgres_password": "database.args.password"}


class AdaptInputs(Inputs):
    """The operator's stack directory and the deployment facts the adaptation needs."""

    # An absolute path (``~`` expanded) on this machine; only read.
    source: str
    # The deployment's server name (configure's server_name step): the stack must carry it.
    server_name: str
    # public_baseurl and Element's base_url become http://<public_address>.
    public_address: str
    # Where to write; the same default and containment as stack.render.
    out_dir: DeploymentPath | None = None


@dataclass
class Adaptation:
    """The adapted tree in memory: files, the secrets it carries, and notes for the log."""

    files: dict[str, str]
    # What is written: the bytes (a logo or any non-UTF-8 file is kept exactly; ``files`` is
    # only their text for the diff).
    raw: dict[str, bytes]
    # The operator's files as read: the diff of a first adaptation is against these.
    original: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    secret_files: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)


def _source(inputs: AdaptInputs) -> Path:
    src = Path(inputs.source).expanduser()
    if not src.is_absolute():
        raise InputError([Located("", 0, 0, f"stack_source: {inputs.source!r} is not an "
                                            "absolute path: give the full path of your stack "
                                            "directory (or 'bundled')")])
    if not src.is_dir():
        raise InputError([Located(str(src), 0, 0, "stack_source: no such directory: give "
                                                   "the directory holding your "
                                                   "docker-compose.yml (or 'bundled')")])
    return src


def _copy(src: Path, dst: Path) -> None:
    """Copy the stack's configuration files (no data directories, no symlinks out)."""
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS
                             and not (Path(dirpath) / d).is_symlink())
        rel = Path(dirpath).relative_to(src)
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file() or p.stat().st_size > _MAX_FILE_BYTES:
                continue
            (dst / rel).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dst / rel / name)


def _relocate(message: str, scratch: Path, src: Path) -> str:
    """A message about the scratch copy, pointing at the operator's own file instead."""
    return message.replace(str(scratch), str(src))


def _manual_error(item: str, src: Path) -> Located:
    # fix.py's manual items start with "<file>[:line[:col]]: ..." relative to the stack.
    head, _, rest = item.partition(": ")
    parts = head.split(":")
    line = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    col = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
    path = parts[0] if rest else ""
    if path and not Path(path).is_absolute():
        path = str(src / path)
    return Located(path, line, col, (rest or item) + " (not adapted mechanically: change "
                                                      "it in your stack, then run again)")


def adapt(inputs: AdaptInputs) -> Adaptation:
    """Work out the adapted tree (reads the operator's directory, writes only scratch).

    Raises :class:`InputError` listing every problem that needs the operator, located.
    """
    from ..stack.doctor import DoctorInputError, diagnose
    from ..stack.fix import apply_plan, plan_fix
    from ..stack.load import load_stack
    from ..stack.model import service_env

    src = _source(inputs)
    with tempfile.TemporaryDirectory(prefix="elematrix-adapt-") as tmp:
        scratch = Path(tmp) / "stack"
        scratch.mkdir()
        _copy(src, scratch)
        original = _tree(scratch)
        try:
            diagnosis = diagnose(scratch, target="http")
        except DoctorInputError as e:
            raise InputError([Located(str(src), 0, 0, "stack_source: "
                                      + _relocate(str(e), scratch, src))]) from e
        findings = [_relocate(f.format_text(), scratch, src) for f in diagnosis]
        plan = plan_fix(scratch, inputs.public_address)
        errors = [_manual_error(_relocate(m, scratch, src), src) for m in plan.manual]
        # Every check below reads the operator's files as written (before the adaptation),
        # so a located message names the line in their file.
        stack = load_stack(scratch)
        hs = stack.homeserver
        if hs is None:
            errors.append(Located(str(src), 0, 0, "stack_source: no homeserver.yaml found: "
                                                  "the stack must carry Synapse's config"))
            raise InputError(errors)
        hs_rel = hs.path.relative_to(scratch).as_posix()
        data = hs.doc.data
        name = data.get("server_name")
        if name != inputs.server_name:
            errors.append(Located(str(src / hs_rel), hs.doc.line("server_name") if name else 0,
                                  1, f"server_name is {name!r}, the deployment's is "
                                     f"{inputs.server_name!r}: it is permanent (every user id "
                                     f"carries it); run with --set server_name={name}"
                                  if name else "no server_name: add it"))
        errors.extend(_names(stack, scratch, src, args_of(data)))
        found: dict[str, str] = {}
        secret_files: set[str] = {hs_rel}
        for key, store in _HOMESERVER_SECRETS.items():
            if isinstance(data.get(key), str) and data[key]:
                found[store] = data[key]
        args = args_of(data)
        if isinstance(args.get("password"), str) and args["password"]:
            found["postgres_password"] = args["password"]
        # The database container's password: from compose, .env or an env_file.
        dotenv_add: dict[Path, str] = {}
        for svc in stack.services("postgres"):
            ev = service_env(svc, "POSTGRES_PASSWORD")
            if ev is None:
                continue
            secret_files.add(ev.file.relative_to(scratch).as_posix())
            if not ev.checked and "postgres_password" in found and ev.deploy_time == [
                    "POSTGRES_PASSWORD"] and ev.raw.strip() in ("${POSTGRES_PASSWORD}",
                                                                 "$POSTGRES_PASSWORD", ""):
                # Compose takes it from the shell at deploy time, which the host never has:
                # the .env beside the compose file carries Synapse's own database password.
                env_path = svc.compose.path.parent / ".env"
                dotenv_add[env_path] = found["postgres_password"]
                secret_files.add(env_path.relative_to(scratch).as_posix())
            elif not ev.checked:
                errors.append(Located(str(src / ev.file.relative_to(scratch)), ev.line, 1,
                                      f"the database password comes from "
                                      f"{', '.join(ev.deploy_time)} at deploy time: put it in "
                                      f"the .env beside the compose file"))
            elif "postgres_password" not in found:
                found["postgres_password"] = ev.value
        for needed, key in _REQUIRED_SECRETS.items():
            if needed not in found:
                errors.append(Located(str(src / hs_rel), 0, 0,
                                      f"no {key} in homeserver.yaml: add one (the admin "
                                      f"bootstrap and the database need it)"))
        if errors:
            raise InputError(errors)
        apply_plan(plan)
        for env, value in dotenv_add.items():
            old = env.read_text(encoding="utf-8") if env.exists() else ""
            sep = "" if not old or old.endswith("\n") else "\n"
            env.write_text(f"{old}{sep}# Synapse's database password (elematrix stack.adapt)\n"
                           f"POSTGRES_PASSWORD={value}\n", encoding="utf-8")
        files = _tree(scratch)
        raw = {p.relative_to(scratch).as_posix(): p.read_bytes()
               for p in sorted(scratch.rglob("*")) if p.is_file()}
        # Any file holding a secret value is written 0600, whatever its name.
        for rel, text in files.items():
            if any(v in text for v in found.values()):
                secret_files.add(rel)
        return Adaptation(files, raw, original, found, secret_files & set(files), list(plan.notes),
                          findings)


def args_of(data: dict[str, Any]) -> dict[str, Any]:
    """homeserver.yaml's ``database.args`` (empty when absent or not a mapping)."""
    db = data.get("database")
    args = db.get("args") if isinstance(db, dict) else None
    return args if isinstance(args, dict) else {}


# What the deploy phase's steps name (runbooks/poc-ec2.yaml: compose.up services, the
# postgres.locale db_user/database, compose.exec on synapse): a stack that names them
# otherwise would fail there, late, after the upload.
DEPLOY_NAMES = {"postgres": "postgres", "synapse": "synapse", "nginx": "nginx"}
DB_NAME = DB_USER = "synapse"


def _names(stack: Any, scratch: Path, src: Path, args: dict[str, Any]) -> list[Located]:
    out: list[Located] = []
    for role, want in DEPLOY_NAMES.items():
        svcs = stack.services(role)
        if not svcs:
            out.append(Located(str(src), 0, 0, f"no {role} service found in the compose "
                                                f"file: the deploy phase starts `{want}`"))
        elif not any(s.name == want for s in svcs):
            s = svcs[0]
            out.append(Located(str(src / s.compose.path.relative_to(scratch)),
                               s.compose.doc.line("services", s.name), 1,
                               f"the {role} service is named `{s.name}`; the deploy phase "
                               f"starts and checks `{want}`: rename the service to `{want}`"))
    for key, want in (("user", DB_USER), ("database", DB_NAME)):
        if args.get(key) not in (None, want):
            hs = stack.homeserver
            out.append(Located(str(src / hs.path.relative_to(scratch)),
                               hs.doc.line("database", "args", key), 1,
                               f"database.args.{key} is {args.get(key)!r}; the deploy phase "
                               f"checks the database `{DB_NAME}` as user `{DB_USER}`: use "
                               f"`{want}` (a new host starts with an empty database)"))
    return out


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8", errors="replace")
            for p in sorted(root.rglob("*")) if p.is_file()}


def _out_dir(ctx: StepContext, inputs: AdaptInputs) -> Path:
    return deployment_path(ctx.deployment_dir, inputs.out_dir or "stack", what="out_dir")


def _secret_conflicts(ctx: StepContext, found: dict[str, str]) -> list[str]:
    """Stored secrets that differ from the stack's (values never shown)."""
    return [n for n, v in found.items() if (ctx.get_secret(n) or v) != v]


def _compare(out: Path, ad: Adaptation) -> tuple[list[str], list[str]]:
    from ..stack.render import _may_replace, _read_tree, diff_trees

    _may_replace(out)
    current = _read_tree(out)
    changed, _ = diff_trees(current, ad.files, ad.secrets)
    # The first time, the diff that matters is the adaptation of the operator's files.
    _, diff = diff_trees(current or ad.original, ad.files, ad.secrets)
    for rel in sorted(ad.secret_files):
        p = out / rel
        if rel not in changed and p.exists() and stat.S_IMODE(p.stat().st_mode) != 0o600:
            changed.append(rel)
    return changed, diff


def _write(out: Path, ad: Adaptation) -> None:
    """Swap the adapted tree in, the way render_stack does (stack/render.py: swap_in)."""
    from ..stack.render import _MARKER_TEXT, MARKER, swap_in

    def fill(tmp: Path) -> None:
        for rel, data in {**ad.raw, MARKER: _MARKER_TEXT.encode()}.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            # Created with its final mode: a secret is never readable by others, even briefly.
            mode = 0o600 if rel in ad.secret_files else 0o644
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(p, mode)

    swap_in(out, fill)


class Adapt(Action[AdaptInputs]):
    """Adapt the operator's own stack to the HTTP-only host; write the copy it deploys."""

    name = "stack.adapt"
    Inputs = AdaptInputs
    # The bundled stack's secret names: what the later steps (bootstrap, backup) read.
    stored_secrets = frozenset(SECRET_NAMES)

    def local_effects(self, with_: dict[str, Any]) -> list[str]:
        return [f"reads your stack in {with_.get('source')} on THIS machine (never writes it)"]

    def describe(self, inputs: AdaptInputs) -> str:
        return f"adapt the stack in {inputs.source} to HTTP-only for {inputs.public_address}"

    def _outputs(self, out: Path, ad: Adaptation, changed: list[str],
                 diff: list[str]) -> dict[str, Any]:
        return {"path": str(out), "files": sorted(ad.files), "changed_files": changed,
                "diff_lines": len(diff)}

    def check(self, ctx: StepContext, inputs: AdaptInputs) -> Check:
        """The whole masked diff against the deployment's copy; in place when equal."""
        ad = adapt(inputs)
        for v in ad.secrets.values():
            ctx.add_secret(v)
        conflicts = _secret_conflicts(ctx, ad.secrets)
        if conflicts:
            return Check(in_sync=None, changes=[_conflict_message(conflicts)])
        out = _out_dir(ctx, inputs)
        changed, diff = _compare(out, ad)
        stored = [f"store secret {n} from the stack in the keyring" for n in ad.secrets
                  if ctx.get_secret(n) is None]
        if not changed and not stored:
            return Check(in_sync=True, outputs=self._outputs(out, ad, [], []))
        return Check(in_sync=False, changes=[*stored, *diff],
                     outputs=self._outputs(out, ad, [], []))

    def apply(self, ctx: StepContext, inputs: AdaptInputs) -> Result:
        ad = adapt(inputs)
        for v in ad.secrets.values():
            ctx.add_secret(v)
        conflicts = _secret_conflicts(ctx, ad.secrets)
        if conflicts:
            raise InputError(_conflict_message(conflicts))
        for line in ad.findings:
            ctx.log(line, "stdout")
        for n, v in ad.secrets.items():
            if ctx.get_secret(n) is None:
                ctx.set_secret(n, v)
                ctx.log(f"secret {n} from your stack stored in the keyring")
        out = _out_dir(ctx, inputs)
        changed, diff = _compare(out, ad)
        for line in diff:
            ctx.log(line, "diff")
        for note in ad.notes:
            ctx.log(f"note: {note}")
        if changed:
            _write(out, ad)
        ctx.log(f"adapted {len(ad.files)} files of {inputs.source} into {out}: "
                f"{len(changed)} changed (your directory is unchanged)")
        return Result(status="changed" if changed else "ok",
                      outputs=self._outputs(out, ad, changed, diff),
                      message=f"{len(changed)} file(s) changed" if changed else "unchanged")


def _conflict_message(names: list[str]) -> str:
    return (f"the keyring holds other values for {', '.join(names)} than your stack: this "
            f"deployment was set up with other secrets (the bundled stack, or another "
            f"stack). Use a new deployment name, or remove those secrets from the keyring "
            f"on purpose first")
