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
import re
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine.action import Action, Check, Inputs, Result, StepContext
from ..engine.containment import DeploymentPath, deployment_path
from ..engine.errors import InputError, Located
from ..engine.params import generate_secret
from ..stack.values import SECRET_LENGTH, SECRET_NAMES, StackValues

if TYPE_CHECKING:
    from ..stack.fix import FixPlan
    from ..stack.layout import StackLayout
    from ..stack.model import Service, Stack, YamlFile

# Directories of a stack that are never part of its configuration: VCS data, and the data
# a running TLS stack keeps beside its files (database, certificates). Copying them would
# upload a database or private keys.
_SKIP_DIRS = frozenset({".git", ".hg", ".svn", "postgres-data", "pgdata", "db-data",
                        "media_store", "certbot", "letsencrypt", "certs", "node_modules"})
# A stack's configuration is text; anything larger is data, not configuration.
_MAX_FILE_BYTES = 1 << 20

# Synapse's own secrets in homeserver.yaml, by the keyring name they are stored as. Only
# Synapse and (for the password) the stack's PostgreSQL use them, and a new host starts
# with an empty database: a placeholder here can be replaced by a generated value.
_HOMESERVER_SECRETS: dict[str, tuple[str, ...]] = {
    "registration_shared_secret": ("registration_shared_secret",),
    "macaroon_secret_key": ("macaroon_secret_key",),
    "form_secret": ("form_secret",),
    "postgres_password": ("database", "args", "password"),
}
# Synapse's admin bootstrap (matrix.bootstrap) registers the admin with the first; the
# database needs the second. Absent (not a placeholder): refused, never invented.
_REQUIRED_SECRETS = ("registration_shared_secret", "postgres_password")
# weak_secret's verdicts that mean "nobody chose this value": generated. A short or
# non-random value someone did choose is refused instead (never overridden silently).
_GENERATE_FOR = ("empty", "a placeholder")


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
    # What the product's backup.sh, restore.sh and systemd units are rendered with (the
    # bundled stack's values and defaults: stack/values.py).
    deployment: str = StackValues.model_fields["deployment"].default
    backup_bucket: str = StackValues.model_fields["backup_bucket"].default
    aws_region: str = StackValues.model_fields["aws_region"].default
    remote_dir: str = StackValues.model_fields["remote_dir"].default


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
    # The layout facts later steps read (stack/layout.py: StackLayout.outputs).
    layout: dict[str, Any] = field(default_factory=dict)
    # Secrets generated for placeholders: keyring name -> where the placeholder was.
    generated: dict[str, str] = field(default_factory=dict)


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
    text = rest or item
    if text.startswith("EM010 "):
        # Only Synapse's own secrets are generated (_HOMESERVER_SECRETS); this one is
        # shared with something outside Synapse (an identity provider, a TURN server, a
        # service's own password) or was chosen by someone: no value can be made up for it.
        return Located(path, line, col, text + " (elematrix generates only Synapse's own "
                       "secrets and the database password; this one must match another "
                       "service or party: write the real value in your stack, then run again)")
    return Located(path, line, col, text + " (not adapted mechanically: change "
                                           "it in your stack, then run again)")


def _stack_values(inputs: AdaptInputs) -> StackValues:
    """The values the product's operational files are rendered with (one validation)."""
    try:
        return StackValues(server_name=inputs.server_name,
                           public_address=inputs.public_address,
                           deployment=inputs.deployment, backup_bucket=inputs.backup_bucket,
                           aws_region=inputs.aws_region, remote_dir=inputs.remote_dir)
    except ValueError as e:
        raise InputError([Located("", 0, 0, f"stack.adapt: {e}")]) from e


def adapt(inputs: AdaptInputs, stored: Mapping[str, str] | None = None) -> Adaptation:
    """Work out the adapted tree (reads the operator's directory, writes only scratch).

    ``stored`` are the deployment's secrets already in the keyring: a placeholder in the
    stack takes the stored value (so a second run is the same copy), else a new one.
    Raises :class:`InputError` listing every problem that needs the operator, located.
    """
    from ..stack.doctor import DoctorInputError, diagnose
    from ..stack.fix import apply_plan, plan_fix
    from ..stack.layout import LayoutError, layout_of
    from ..stack.load import load_stack
    from ..stack.render import OPS_FILES, render_ops

    src = _source(inputs)
    values = _stack_values(inputs)
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
        # Every check below reads the operator's files as written (before the adaptation),
        # so a located message names the line in their file.
        stack = load_stack(scratch)
        hs = stack.homeserver
        if hs is None:
            raise InputError([
                *(_manual_error(_relocate(m, scratch, src), src) for m in plan.manual),
                Located(str(src), 0, 0, "stack_source: no homeserver.yaml found: the stack "
                                        "must carry Synapse's config")])
        hs_rel = hs.path.relative_to(scratch).as_posix()
        data = hs.doc.data
        errors: list[Located] = []
        name = data.get("server_name")
        if name != inputs.server_name:
            errors.append(Located(str(src / hs_rel), hs.doc.line("server_name") if name else 0,
                                  1, f"server_name is {name!r}, the deployment's is "
                                     f"{inputs.server_name!r}: it is permanent (every user id "
                                     f"carries it); run with --set server_name={name}"
                                  if name else "no server_name: add it"))
        names = _names(stack, scratch, src, args_of(data))
        errors.extend(names)
        try:
            sec = _secrets(stack, hs, scratch, src, dict(stored or {}), plan)
        except _NoPlace as e:
            # A placeholder written where a line edit cannot reach it (a flow mapping, a
            # multi-line value): say where, never a traceback.
            raise InputError([*errors, Located(str(src / e.path.relative_to(scratch)), e.line,
                                               1, f"{e.key}: a generated secret cannot be "
                                                  f"put here (not a `key: value` line); write "
                                                  f"a real value")]) from e
        errors.extend(sec.errors)
        errors[:0] = [_manual_error(_relocate(m, scratch, src), src) for m in plan.manual
                      if not sec.settles(m)]
        layout = None
        if not names:
            synapse = next(s for s in stack.services("synapse") if s.name == "synapse")
            postgres = next(s for s in stack.services("postgres") if s.name == "postgres")
            try:
                layout = layout_of(stack, synapse, postgres, hs)
            except LayoutError as e:
                errors.extend(Located(str(src / p.relative_to(scratch)) if p else str(src),
                                      line, 1 if line else 0, msg)
                              for p, line, msg in e.problems)
            else:
                _chown_entrypoint(plan, synapse, layout)
        for rel in OPS_FILES:
            if rel in original:
                errors.append(Located(str(src / rel), 0, 0,
                                      f"your stack has its own {rel}: the deployment installs "
                                      f"elematrix's (rendered from your stack's layout) under "
                                      f"that name; rename yours"))
        if errors:
            raise InputError(errors)
        assert layout is not None  # no errors: the services and the layout were found
        apply_plan(plan)
        for env, value in sec.dotenv_add.items():
            old = env.read_text(encoding="utf-8") if env.exists() else ""
            sep = "" if not old or old.endswith("\n") else "\n"
            env.write_text(f"{old}{sep}# Synapse's database password (elematrix stack.adapt)\n"
                           f"POSTGRES_PASSWORD={value}\n", encoding="utf-8")
        for rel, text in render_ops(values, layout).items():
            (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
            (scratch / rel).write_text(text, encoding="utf-8")
        files = _tree(scratch)
        raw = {p.relative_to(scratch).as_posix(): p.read_bytes()
               for p in sorted(scratch.rglob("*")) if p.is_file()}
        secret_files = {hs_rel, *sec.files}
        # Any file holding a secret value is written 0600, whatever its name.
        for rel, text in files.items():
            if any(v in text for v in sec.found.values()):
                secret_files.add(rel)
        return Adaptation(files, raw, original, sec.found, secret_files & set(files),
                          list(plan.notes), findings, layout.outputs(), sec.generated)


@dataclass
class _Secrets:
    """Synapse's secrets as found, generated for placeholders, and the edits they need."""

    found: dict[str, str] = field(default_factory=dict)
    generated: dict[str, str] = field(default_factory=dict)
    files: set[str] = field(default_factory=set)
    dotenv_add: dict[Path, str] = field(default_factory=dict)
    errors: list[Located] = field(default_factory=list)
    # (file, line) of placeholders replaced: the fix plan's EM010 items there are settled.
    fixed: set[str] = field(default_factory=set)
    db_settled: bool = False

    def settles(self, manual: str) -> bool:
        """Whether a manual item of the fix plan is settled by a generated secret."""
        head = manual.split(": ", 1)[0]
        where = ":".join(head.split(":")[:2])
        if " EM010 " in f" {manual}" and where in self.fixed:
            return True
        return " EM017 " in f" {manual}" and self.db_settled


def _nested(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = data
    for k in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(k)
    return cur


class _NoPlace(ValueError):
    """A placeholder sits where no line edit can replace it."""

    def __init__(self, path: Path, line: int, key: str) -> None:
        super().__init__(f"{path}:{line}: {key}")
        self.path, self.line, self.key = path, line, key


def _set_value(plan: FixPlan, path: Path, line: int, key: str, old: str, new: str) -> None:
    """Put ``new`` where ``old`` (a placeholder) is written on ``line`` after ``key``."""
    e = plan.edit(path)
    if not 1 <= line <= len(e.lines):
        raise _NoPlace(path, line, key)
    text = e.line(line)
    at = text.find(key)
    if old and at >= 0 and old in text[at + len(key):]:
        pos = text.index(old, at + len(key))
        e.replace(line, text[:pos] + new + text[pos + len(old):])
        return
    m = re.match(r"^(\s*-?\s*[\"']?" + re.escape(key) + r"[\"']?\s*[:=][ \t]*)", text)
    # Only an empty value is written afresh; anything else (a block scalar, a value on
    # the next lines) is not a line this edit understands.
    if m is None or old or text[m.end():].strip() not in ("", '""', "''"):
        raise _NoPlace(path, line, key)
    e.replace(line, m.group(1) + new)


def _secrets(stack: Stack, hs: YamlFile, scratch: Path, src: Path, stored: dict[str, str],
             plan: FixPlan) -> _Secrets:
    """Read Synapse's secrets; give a placeholder a generated (or the stored) value; the
    database password the same on both sides. Edits go into ``plan`` (applied later)."""
    from ..stack.model import service_env
    from ..stack.rules.secrets import is_reference, is_secret_name, weak_secret

    out = _Secrets()
    data = hs.doc.data
    hs_rel = hs.path.relative_to(scratch).as_posix()
    where_hs = str(src / hs_rel)
    todo: dict[str, tuple[int, str]] = {}  # name -> (line, placeholder text)
    for name, path in _HOMESERVER_SECRETS.items():
        value = _nested(data, path)
        line = hs.doc.line(*path, default=0)
        if value is None:
            continue  # absent: Synapse's default applies, or the required check refuses
        text = "" if value is None else str(value)
        reason = weak_secret(text)
        if isinstance(value, str) and value and reason is None and not is_reference(value):
            out.found[name] = value
        elif is_reference(text) or reason in _GENERATE_FOR:
            # A placeholder, or a ${VAR} that the operator's own deploy tooling (envsubst)
            # fills in: Synapse never reads the environment, and this host has no such tool.
            todo[name] = (line, text)
        else:
            out.errors.append(Located(where_hs, line, 1, f"{'.'.join(path)} is {reason}: put "
                                      f"a strong value in your stack (or `changeme`, and "
                                      f"elematrix generates one)"))
    # Other secrets Synapse reads that only the operator's tooling fills in (${VAR}): the
    # literal text would be the secret here. They are shared with something else (a TURN
    # server, an identity provider), so no value can be made up for them.
    for key, value in data.items() if isinstance(data, dict) else ():
        if key not in _HOMESERVER_SECRETS and is_secret_name(str(key)) and is_reference(value):
            out.errors.append(Located(where_hs, hs.doc.line(key, default=0), 1,
                                      f"{key} is {value!r}, filled in by your own deploy "
                                      f"tooling; Synapse does not read the environment and "
                                      f"it is shared with another service, so elematrix "
                                      f"cannot generate it: write the value (or remove "
                                      f"{key})"))
    # The database container's password: from compose, .env or an env_file.
    pg_ev = None
    for svc in stack.services("postgres"):
        ev = service_env(svc, "POSTGRES_PASSWORD")
        if ev is None:
            continue
        pg_ev = (svc, ev)
        rel = ev.file.relative_to(scratch).as_posix()
        out.files.add(rel)
        if ev.checked and weak_secret(ev.value) is None and "postgres_password" in todo:
            # Synapse's side is the placeholder: it takes PostgreSQL's real password.
            line, old = todo.pop("postgres_password")
            _set_value(plan, hs.path, line, "password", old, ev.value)
            out.found["postgres_password"] = ev.value
            out.fixed.add(f"{hs_rel}:{line}")
            out.db_settled = True
        break
    for name, (line, old) in todo.items():
        value = stored.get(name) or generate_secret(SECRET_LENGTH)
        _set_value(plan, hs.path, line, _HOMESERVER_SECRETS[name][-1], old, value)
        out.found[name] = value
        out.generated[name] = f"{src / hs_rel}:{line}"
        out.fixed.add(f"{hs_rel}:{line}")
    if pg_ev is not None and "postgres_password" in out.found:
        svc, ev = pg_ev
        password = out.found["postgres_password"]
        rel = ev.file.relative_to(scratch).as_posix()
        if ev.checked and weak_secret(ev.value) in _GENERATE_FOR:
            _set_value(plan, ev.file, ev.line, "POSTGRES_PASSWORD", ev.value, password)
            out.fixed.add(f"{rel}:{ev.line}")
            out.db_settled = True
            out.generated.setdefault("postgres_password", f"{src / rel}:{ev.line}")
        elif not ev.checked and ev.deploy_time == ["POSTGRES_PASSWORD"] and ev.raw.strip() in (
                "${POSTGRES_PASSWORD}", "$POSTGRES_PASSWORD", ""):
            # Compose takes it from the shell at deploy time, which the host never has:
            # the .env beside the compose file carries Synapse's own database password.
            env_path = svc.compose.path.parent / ".env"
            out.dotenv_add[env_path] = password
            out.files.add(env_path.relative_to(scratch).as_posix())
            out.db_settled = True
        elif not ev.checked:
            out.errors.append(Located(str(src / rel), ev.line, 1,
                                      f"the database password comes from "
                                      f"{', '.join(ev.deploy_time)} at deploy time: put it in "
                                      f"the .env beside the compose file"))
    elif pg_ev is not None and pg_ev[1].checked and weak_secret(pg_ev[1].value) is None:
        out.found["postgres_password"] = pg_ev[1].value
    for needed in _REQUIRED_SECRETS:
        if needed not in out.found:
            key = ".".join(_HOMESERVER_SECRETS[needed])
            out.errors.append(Located(where_hs, 0, 0,
                                      f"no {key} in homeserver.yaml: add one (the admin "
                                      f"bootstrap and the database need it)"))
    return out


def _chown_entrypoint(plan: FixPlan, synapse: Service, layout: StackLayout) -> None:
    """Give Synapse's writable directories to its uid before start.py, as the bundled
    compose file does (stack/layout.py: chown_entrypoint); an entrypoint of the operator's
    own is kept, with a note."""
    from ..stack.layout import SYNAPSE_OWNER, chown_entrypoint

    dirs = list(layout.synapse_writes)
    if not dirs:
        return
    if "entrypoint" in synapse.data:
        plan.notes.append(f"`{synapse.name}` has its own entrypoint, kept: it must give "
                          f"{' '.join(dirs)} to {SYNAPSE_OWNER} (the image's start.py does "
                          f"not chown in run mode)")
        return
    doc = synapse.compose.doc
    e = plan.edit(synapse.compose.path)
    first_key = next(iter(synapse.data), None)
    svc_line = doc.line("services", synapse.name)
    key_text = e.lines[doc.line("services", synapse.name, first_key) - 1] if first_key else ""
    indent = key_text[: len(key_text) - len(key_text.lstrip())] or "    "
    e.insert_after(svc_line, f"{indent}# Named volumes and new host directories start "
                             f"root-owned; the image's start.py does not\n"
                             f"{indent}# chown in run mode: Synapse ({SYNAPSE_OWNER}) must own "
                             f"what it writes (elematrix stack.adapt).\n"
                             f"{indent}entrypoint: {chown_entrypoint(dirs)}")


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
    for key, want in (("user", DB_USER), ("database", DB_NAME), ("dbname", DB_NAME)):
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


def _stored(ctx: StepContext) -> dict[str, str]:
    """The deployment's stack secrets already in the keyring."""
    return {n: v for n in SECRET_NAMES if (v := ctx.get_secret(n) or "")}


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
    from ..stack.render import _MARKER_TEXT, EXECUTABLE_FILES, MARKER, swap_in

    def fill(tmp: Path) -> None:
        for rel, data in {**ad.raw, MARKER: _MARKER_TEXT.encode()}.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            # Created with its final mode: a secret is never readable by others, even briefly.
            mode = (0o600 if rel in ad.secret_files
                    else 0o755 if rel in EXECUTABLE_FILES else 0o644)
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
        # stack.render's outputs, and the layout facts the deploy steps read.
        return {"path": str(out), "files": sorted(ad.files), "changed_files": changed,
                "diff_lines": len(diff), **ad.layout}

    def check(self, ctx: StepContext, inputs: AdaptInputs) -> Check:
        """The whole masked diff against the deployment's copy; in place when equal."""
        ad = adapt(inputs, _stored(ctx))
        for v in ad.secrets.values():
            ctx.add_secret(v)
        conflicts = _secret_conflicts(ctx, ad.secrets)
        if conflicts:
            return Check(in_sync=None, changes=[_conflict_message(conflicts)])
        out = _out_dir(ctx, inputs)
        changed, diff = _compare(out, ad)
        stored = [f"generate secret {n} for the placeholder at {ad.generated[n]} (into the "
                  f"keyring)" if n in ad.generated else
                  f"store secret {n} from the stack in the keyring" for n in ad.secrets
                  if ctx.get_secret(n) is None]
        if not changed and not stored:
            return Check(in_sync=True, outputs=self._outputs(out, ad, [], []))
        return Check(in_sync=False, changes=[*stored, *diff],
                     outputs=self._outputs(out, ad, [], []))

    def apply(self, ctx: StepContext, inputs: AdaptInputs) -> Result:
        ad = adapt(inputs, _stored(ctx))
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
                ctx.log(f"generated secret {n} for the placeholder at {ad.generated[n]} "
                        f"(stored in the keyring)" if n in ad.generated else
                        f"secret {n} from your stack stored in the keyring")
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
