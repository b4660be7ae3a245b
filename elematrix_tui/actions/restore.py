"""Day-two actions of the restore runbook: what the deployment recorded, which backup, a login.

- ``deploy.recorded`` reads outputs that earlier runs of this deployment recorded in its
  journal (the instance's address, its host keys, the bucket, the server name): a runbook
  such as ``restore`` reaches the deployment poc-ec2 built without asking the operator to
  copy them. Read-only; a missing value fails with what to run first.
- ``restore.pick`` turns ``restore.sh --list`` (``<deployment>/<UTC stamp> <bytes>`` per
  complete backup, oldest first) into the chosen backup with its size and age (the RPO).
- ``matrix.admin_login`` logs the deployment's admin in with its stored password (the
  secret ``matrix.bootstrap`` keeps) and logs that session out again.
"""

from __future__ import annotations

import calendar
import time
from pathlib import Path
from typing import Any

from pydantic import Field

from ..engine.action import Action, ActionFailed, Check, Inputs, Result, StepContext
from ..engine.journal import Journal
from .matrix import ADMIN_PASSWORD_SECRET, run_async
from .matrix_proxy import httpx_mounts

# backup.sh names each backup by its UTC start time (assets/stack/backup.sh.j2: PREFIX).
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
JOURNAL_FILE = "journal.sqlite"


class RecordedInputs(Inputs):
    # output name -> "step_id.output" as an earlier run of this deployment recorded it.
    values: dict[str, str]
    # Names in ``values`` that may have no recorded value (None then).
    optional: list[str] = Field(default_factory=list)
    # Another deployment whose journal is read (only read: the restore drill reads its
    # source's bucket and canary); empty or this deployment's name: this one.
    deployment: str = ""


def _journal_of(ctx: StepContext, deployment: str) -> Path:
    """The journal file of ``deployment`` (a sibling of this one's directory)."""
    from ..engine.paths import deployment_name_error

    if not deployment or deployment == ctx.deployment:
        return Path(ctx.deployment_dir) / JOURNAL_FILE
    if (bad := deployment_name_error(deployment)) is not None:
        raise ActionFailed(bad)
    return Path(ctx.deployment_dir).parent / deployment / JOURNAL_FILE


def _recorded_outputs(ctx: StepContext, deployment: str = "") -> dict[str, dict[str, Any]]:
    path = _journal_of(ctx, deployment)
    if not path.exists():
        return {}
    # A second reader of the runner's own journal (WAL: readers never block the writer).
    with Journal(path) as journal:
        return journal.latest_outputs()


class Recorded(Action[RecordedInputs]):
    """Outputs earlier runs of this deployment recorded, by ``step.output``."""

    name = "deploy.recorded"
    Inputs = RecordedInputs
    read_only = True

    def _values(self, ctx: StepContext, inputs: RecordedInputs) -> dict[str, Any]:
        known = _recorded_outputs(ctx, inputs.deployment)
        dep = inputs.deployment or ctx.deployment
        out: dict[str, Any] = {}
        missing: list[str] = []
        for name, ref in inputs.values.items():
            step, _, attr = ref.partition(".")
            value = known.get(step, {}).get(attr)
            if value in (None, "") and name not in inputs.optional:
                missing.append(f"{name} ({ref})")
            out[name] = value
        if missing:
            raise ActionFailed(
                f"deployment {dep!r} has no recorded {', '.join(missing)}",
                diagnosis="these values come from the poc-ec2 runbook's runs of this "
                          "deployment; none recorded them",
                fix=f"deploy it first: elematrix run poc-ec2 --deployment {dep}")
        return out

    def check(self, ctx: StepContext, inputs: RecordedInputs) -> Check:
        try:
            return Check(in_sync=True, outputs=self._values(ctx, inputs))
        except ActionFailed as e:
            return Check(in_sync=None, unknown_because=e.args[0] if e.args else str(e))

    def apply(self, ctx: StepContext, inputs: RecordedInputs) -> Result:
        values = self._values(ctx, inputs)
        return Result("ok", outputs=values, data=values,
                      message=", ".join(sorted(values)))

    def describe(self, inputs: RecordedInputs) -> str:
        whose = f" of deployment {inputs.deployment}" if inputs.deployment else ""
        return ("read " + ", ".join(sorted(set(inputs.values.values())))
                + f" from the journal{whose}")


class PickInputs(Inputs):
    # The stdout of ``restore.sh --list``.
    listing: str
    # "latest" or a backup's prefix (with or without "<deployment>/").
    backup: str = "latest"
    deployment: str


def human_size(n: int) -> str:
    """Bytes in the largest unit that keeps the number at or above 1 (1024 steps)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_age(seconds: float) -> str:
    """An age in the largest whole unit (s, min, h, d)."""
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} d"


def parse_listing(listing: str, now: float) -> list[dict[str, Any]]:
    """Each complete backup of ``restore.sh --list``: prefix, bytes, created, age_s."""
    rows: list[dict[str, Any]] = []
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            continue
        prefix, stamp = parts[0], parts[0].rsplit("/", 1)[-1]
        try:
            created = calendar.timegm(time.strptime(stamp, STAMP_FORMAT))
        except ValueError:
            continue
        rows.append({"prefix": prefix, "bytes": int(parts[1]),
                     "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created)),
                     "age_s": round(now - created)})
    return sorted(rows, key=lambda r: str(r["prefix"]))


class Pick(Action[PickInputs]):
    """Choose a complete backup from ``restore.sh --list``; its age is the restore's RPO."""

    name = "restore.pick"
    Inputs = PickInputs
    read_only = True
    output_names = frozenset({"prefix", "bytes", "size", "created", "age_s", "age",
                              "rpo_s", "count", "summary"})

    def _pick(self, inputs: PickInputs) -> dict[str, Any]:
        rows = parse_listing(inputs.listing, time.time())
        if not rows:
            raise ActionFailed(f"no complete backup of deployment {inputs.deployment!r}",
                               diagnosis="restore.sh --list found none with all four parts",
                               fix="run a backup first (backup.sh on the host, or the "
                                   "deploy phase's first_backup)")
        if inputs.backup == "latest":
            row = rows[-1]
        else:
            want = inputs.backup.rstrip("/")
            if not want.startswith(inputs.deployment + "/"):
                want = f"{inputs.deployment}/{want}"
            found = [r for r in rows if r["prefix"] == want]
            if not found:
                raise ActionFailed(
                    f"backup {inputs.backup!r} is not a complete backup of this deployment",
                    diagnosis="complete backups: " + ", ".join(r["prefix"] for r in rows),
                    fix="--set backup=latest, or one of the prefixes listed")
            row = found[0]
        size, age = human_size(row["bytes"]), human_age(row["age_s"])
        return {**row, "size": size, "age": age, "rpo_s": row["age_s"], "count": len(rows),
                "summary": f"{row['prefix']} ({size}, taken {row['created']}, {age} ago)"}

    def apply(self, ctx: StepContext, inputs: PickInputs) -> Result:
        now = time.time()
        for r in parse_listing(inputs.listing, now):
            ctx.log(f"{r['prefix']}  {human_size(r['bytes']):>10}  {human_age(r['age_s'])} old")
        out = self._pick(inputs)
        return Result("ok", outputs=out, data=out, message=f"chosen: {out['summary']}")

    def describe(self, inputs: PickInputs) -> str:
        return f"choose backup {inputs.backup!r} of {inputs.deployment}"


class AdminLoginInputs(Inputs):
    url: str = Field(description="Synapse's client API (the SSH port forward or nginx)")
    admin_user: str = "admin"
    admin_password_secret: str = ADMIN_PASSWORD_SECRET
    timeout: float = Field(default=10, gt=0, le=600)


class AdminLogin(Action[AdminLoginInputs]):
    """The deployment's admin logs in with its stored password (then logs out)."""

    name = "matrix.admin_login"
    Inputs = AdminLoginInputs
    read_only = True
    output_names = frozenset({"user_id"})

    def apply(self, ctx: StepContext, inputs: AdminLoginInputs) -> Result:
        password = ctx.get_secret(inputs.admin_password_secret)
        if not password:
            raise ActionFailed(f"no stored secret {inputs.admin_password_secret}",
                               fix="run the poc-ec2 deploy phase (matrix.bootstrap) first")

        async def go() -> str:
            import httpx

            from . import matrix_http as mh

            async with httpx.AsyncClient(timeout=inputs.timeout,
                                         mounts=httpx_mounts([inputs.url])) as http:
                sess = await mh.login(http, inputs.url, inputs.admin_user, password,
                                      device_name="elematrix restore gate")
                ctx.add_secret(sess.access_token)
                who = await mh.whoami(http, inputs.url, sess.access_token)
                await mh.call(http, "POST", inputs.url.rstrip("/") + "/_matrix/client/v3/logout",
                              token=sess.access_token, json_body={})
                return who

        try:
            who = run_async(ctx, go())
        except ActionFailed:
            raise
        except Exception as e:
            raise ActionFailed(f"the admin {inputs.admin_user!r} cannot log in: {e}",
                               diagnosis="after a restore the admin's password hash comes "
                                         "from the backup's database",
                               fix="check the restored database (restore.sh's output)") from e
        ctx.log(f"{who} logged in with its stored password")
        return Result("ok", outputs={"user_id": who}, message=f"{who} logged in")
