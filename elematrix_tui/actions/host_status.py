"""``status.host``: the host facts no runbook step holds, for ``elematrix status``.

One read-only SSH command reads: the image each compose service runs, the disk use of the
root filesystem and of Docker's data root, and the complete backups in the bucket
(``restore.sh --list``, as the restore runbook lists them). Each becomes one status line:

- images: each running image against the pins (``stack/values.py: IMAGES``); another
  image is ``drifted`` and ``elematrix run upgrade`` moves it (its plan shows old -> new);
- disk: ``drifted`` from ``DISK_FULL_PCT`` on;
- last backup: ``drifted`` when older than ``BACKUP_MAX_AGE_S`` (the timer runs daily).

A host that does not answer makes every line ``unknown`` with what to do.
"""

from __future__ import annotations

import shlex
import time
from typing import Any

from pydantic import Field

from ..engine.action import Action, ActionFailed, Inputs, Result, StepContext
from ..stack.values import IMAGES
from .compose import ComposeInputs
from .hostfacts import host_run
from .restore import human_age, parse_listing

# A disk this full needs the operator before the database or the media store hits it.
DISK_FULL_PCT = 85
# backup.sh runs daily (stack/values.py backup_schedule); two hours of slack for the timer.
BACKUP_MAX_AGE_S = 26 * 3600

_PS = "docker compose ps -a --format '{{.Service}} {{.Image}}'"
_ROOT = "$(docker info --format '{{.DockerRootDir}}' 2>/dev/null || echo /)"


class HostStatusInputs(Inputs):
    # The compose project on the host (a compose.* step's inputs, as recorded).
    compose: ComposeInputs
    deployment: str
    timeout: float = Field(default=120, gt=0, le=600)


def _line(step: str, title: str, verdict: str, detail: list[str], todo: str = ""
          ) -> dict[str, Any]:
    return {"step": step, "title": title, "verdict": verdict, "detail": detail, "todo": todo}


def judge(text: str, deployment: str, now: float) -> list[dict[str, Any]]:
    """The status lines of the host command's output (sections ``--ps``, ``--df``,
    ``--backups``)."""
    sections: dict[str, list[str]] = {}
    current = ""
    for raw in text.splitlines():
        if raw.startswith("--") and raw[2:] in ("ps", "df", "backups"):
            current = raw[2:]
            sections[current] = []
        elif current and raw.strip():
            sections[current].append(raw.strip())
    out: list[dict[str, Any]] = []

    running = dict(x.split(None, 1) for x in sections.get("ps", []) if len(x.split()) == 2)
    differ = [f"{k}: runs {running.get(k, '(no container)')}, pinned {ref}"
              for k, ref in IMAGES.items() if running.get(k) != ref]
    upgrade = (f"elematrix run upgrade --deployment {deployment} (its plan shows each "
               f"image old -> new)")
    out.append(_line("images", "Each container runs its pinned image", "drifted" if differ
                     else "ok", differ, upgrade if differ else ""))

    full: list[str] = []
    used: list[str] = []
    for row in sections.get("df", []):
        parts = row.split()
        if len(parts) >= 6 and parts[4].endswith("%") and parts[4][:-1].isdigit():
            pct, mount = int(parts[4][:-1]), parts[5]
            if any(u.startswith(mount + " ") for u in used):
                continue
            used.append(f"{mount} {pct}% used")
            if pct >= DISK_FULL_PCT:
                full.append(used[-1])
    if not used:
        out.append(_line("disk", "Disk use", "unknown", ["df printed nothing readable"]))
    else:
        out.append(_line("disk", f"Disk use below {DISK_FULL_PCT}%",
                         "drifted" if full else "ok", used,
                         "free space (old images: docker image prune; logs) or grow the "
                         "volume" if full else ""))

    backups = sections.get("backups", [])
    if backups == ["restore-failed"]:
        out.append(_line("last_backup", "The last backup is recent", "unknown",
                         ["restore.sh --list failed (the bucket did not answer the host)"],
                         "run restore.sh --list on the host to see why"))
    else:
        rows = parse_listing("\n".join(backups), now)
        if not rows:
            out.append(_line("last_backup", "The last backup is recent", "drifted",
                             ["no complete backup in the bucket"],
                             "run backup.sh on the host; check elematrix-backup.timer"))
        else:
            last = rows[-1]
            old = last["age_s"] > BACKUP_MAX_AGE_S
            out.append(_line("last_backup", "The last backup is recent",
                             "drifted" if old else "ok",
                             [f"{last['prefix']}, {human_age(last['age_s'])} old"],
                             "run backup.sh on the host; check elematrix-backup.timer "
                             "(systemctl status elematrix-backup.timer)" if old else ""))
    return out


class HostStatus(Action[HostStatusInputs]):
    """Images against the pins, disk use and the last backup's age, read on the host."""

    name = "status.host"
    Inputs = HostStatusInputs
    read_only = True
    output_names = frozenset({"lines"})

    def describe(self, inputs: HostStatusInputs) -> str:
        return "read the running images, the disk use and the last backup on the host"

    def apply(self, ctx: StepContext, inputs: HostStatusInputs) -> Result:
        c = inputs.compose
        d = shlex.quote(c.project_dir)
        command = (f"cd {d} && echo --ps && {_PS} && echo --df && df -P / {_ROOT} && "
                   f"echo --backups && (./restore.sh --list 2>/dev/null || echo restore-failed)")
        try:
            res = host_run(ctx, c, command, sudo=c.sudo, timeout=inputs.timeout,
                           what="read the host's images, disk use and backups")
        except ActionFailed as e:
            why = e.args[0] if e.args else str(e)
            lines = [_line(step, title, "unknown", [why],
                           "make the host reachable over SSH (operator_cidr, port 22, the "
                           "recorded host key) and ask again")
                     for step, title in (("images", "Each container runs its pinned image"),
                                         ("disk", "Disk use"),
                                         ("last_backup", "The last backup is recent"))]
            return Result("ok", outputs={"lines": lines})
        return Result("ok", outputs={"lines": judge(res.stdout, inputs.deployment,
                                                    time.time())})
