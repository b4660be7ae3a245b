"""``systemd.install``: unit files installed, enabled and active, judged by the host's facts.

``check`` reads, in one command: the sha256 of each unit file where it was uploaded and
where systemd reads it, the installed file's mode, ``systemctl is-enabled`` and
``systemctl is-active``. It names each file that would be installed or updated and each
unit that would be enabled, started or restarted (a started unit whose file changed).
``apply`` does exactly that, with one ``daemon-reload`` when a file changed.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from pydantic import Field, model_validator

from ..engine.action import Action, ActionFailed, Check, Result, StepContext
from .hostfacts import facts_check, host_run, note_change
from .ssh import SshInputs, _on_this_machine

UNIT_RE = re.compile(r"[A-Za-z0-9@._-]+\.(service|timer|socket|path|target|mount)")
UNIT_MODE = "644"  # what systemd expects of a unit file (install -m 0644)


class InstallInputs(SshInputs):
    # The directory on the host holding the unit files (the uploaded stack's systemd/).
    source_dir: str
    # Where systemd reads them.
    dest_dir: str = "/etc/systemd/system"
    # File names under source_dir, installed as they are.
    units: list[str] = Field(min_length=1)
    # Units enabled (start at boot) and units started now; each one of ``units``.
    enable: list[str] = Field(default_factory=list)
    start: list[str] = Field(default_factory=list)
    # Installing units needs root.
    sudo: bool = True
    timeout: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _names(self) -> InstallInputs:
        for u in self.units:
            if not UNIT_RE.fullmatch(u):
                raise ValueError(f"unit {u!r} is not a unit file name like 'x.service'")
        for what, names in (("enable", self.enable), ("start", self.start)):
            extra = [u for u in names if u not in self.units]
            if extra:
                raise ValueError(f"{what} names {', '.join(extra)}, which 'units' does not "
                                 "install")
        return self


@dataclass
class UnitFacts:
    unit: str
    source_sha: str
    dest_sha: str
    mode: str
    enabled: str
    active: str


def _q(d: str, u: str) -> str:
    return shlex.quote(f"{d.rstrip('/')}/{u}")


def _facts_command(inputs: InstallInputs) -> str:
    lines = []
    for u in inputs.units:
        src, dest = _q(inputs.source_dir, u), _q(inputs.dest_dir, u)
        lines.append(
            f"s=$(sha256sum -- {src} 2>/dev/null | cut -c1-64); "
            f"d=$(sha256sum -- {dest} 2>/dev/null | cut -c1-64); "
            f"m=$(stat -c %a -- {dest} 2>/dev/null); "
            f"e=$(systemctl is-enabled {shlex.quote(u)} 2>/dev/null); "
            f"a=$(systemctl is-active {shlex.quote(u)} 2>/dev/null); "
            f"echo \"::unit::{u}|$s|$d|$m|$e|$a\"")
    return "\n".join([*lines, "exit 0"])


def read_units(ctx: StepContext, inputs: InstallInputs, *,
               interactive: bool = True) -> dict[str, UnitFacts]:
    """The host's facts about each unit (one read-only command)."""
    res = host_run(ctx, inputs, _facts_command(inputs), sudo=inputs.sudo,
                   timeout=min(inputs.timeout, 120.0), interactive=interactive,
                   what="read the systemd units")
    out: dict[str, UnitFacts] = {}
    for line in res.stdout.splitlines():
        if line.startswith("::unit::"):
            parts = line[len("::unit::"):].split("|")
            if len(parts) == 6:
                out[parts[0]] = UnitFacts(*[p.strip() for p in parts])
    return out


def differences(inputs: InstallInputs, facts: dict[str, UnitFacts]) -> list[str]:
    """What ``apply`` would do, in operator words."""
    missing = [u for u in inputs.units if not facts.get(u) or not facts[u].source_sha]
    if missing:
        raise ActionFailed(f"no unit file {', '.join(missing)} in {inputs.source_dir} on the host",
                           diagnosis="The units are installed from the uploaded stack.",
                           fix="Run the upload step first, or fix 'source_dir'.")
    out: list[str] = []
    for u in inputs.units:
        f = facts[u]
        changed = f.dest_sha != f.source_sha
        if not f.dest_sha:
            out.append(f"install {inputs.dest_dir}/{u}")
        elif changed:
            out.append(f"update {inputs.dest_dir}/{u} (content differs)")
        elif f.mode != UNIT_MODE:
            out.append(f"chmod {inputs.dest_dir}/{u} to 0644 (it is {f.mode})")
        if u in inputs.enable and f.enabled != "enabled":
            out.append(f"enable {u} (it is {f.enabled or 'not installed'})")
        if u in inputs.start:
            if f.active != "active":
                out.append(f"start {u} (it is {f.active or 'not loaded'})")
            elif changed:
                out.append(f"restart {u} (its unit file changed)")
    return out


class Install(Action[InstallInputs]):
    """Install unit files from a directory on the host, enable and start the named ones."""

    name = "systemd.install"
    Inputs = InstallInputs
    check_first = True
    output_names = frozenset({"units", "changes"})

    def local_effects(self, with_: dict[str, Any]) -> list[str]:
        return _on_this_machine(with_, f"installs systemd units into {with_.get('dest_dir')}")

    def describe(self, inputs: InstallInputs) -> str:
        return f"install {', '.join(inputs.units)} into {inputs.dest_dir} on {inputs.host}"

    @staticmethod
    def _states(facts: dict[str, UnitFacts]) -> dict[str, str]:
        return {u: f"{f.enabled or '-'}/{f.active or '-'}" for u, f in facts.items()}

    def check(self, ctx: StepContext, inputs: InstallInputs) -> Check:
        return facts_check(self.describe(inputs), lambda: self._check(ctx, inputs))

    def _check(self, ctx: StepContext, inputs: InstallInputs) -> Check:
        facts = read_units(ctx, inputs, interactive=False)
        changes = differences(inputs, facts)
        return Check(in_sync=not changes, changes=changes,
                     outputs={"units": self._states(facts), "changes": []})

    def apply(self, ctx: StepContext, inputs: InstallInputs) -> Result:
        facts = read_units(ctx, inputs)
        changes = differences(inputs, facts)
        if not changes:
            return Result("ok", outputs={"units": self._states(facts), "changes": []},
                          message="in place: " + ", ".join(
                              f"{u} {s}" for u, s in self._states(facts).items()))
        note_change(ctx, self.name, changes)
        copy = [u for u in inputs.units if facts[u].dest_sha != facts[u].source_sha
                or facts[u].mode != UNIT_MODE]
        script = ["set -e", f"mkdir -p -- {shlex.quote(inputs.dest_dir)}"]
        for u in copy:
            tmp = _q(inputs.dest_dir, f".{u}.elematrix-tmp")
            script += [f"install -m 0644 -- {_q(inputs.source_dir, u)} {tmp}",
                       f"mv -f -- {tmp} {_q(inputs.dest_dir, u)}"]
        if copy:
            script.append("systemctl daemon-reload")
        enable = [u for u in inputs.enable if facts[u].enabled != "enabled"]
        if enable:
            script.append("systemctl enable " + " ".join(map(shlex.quote, enable)))
        start = [u for u in inputs.start if facts[u].active != "active"]
        if start:
            script.append("systemctl start " + " ".join(map(shlex.quote, start)))
        restart = [u for u in inputs.start if facts[u].active == "active"
                   and facts[u].dest_sha != facts[u].source_sha]
        if restart:
            script.append("systemctl restart " + " ".join(map(shlex.quote, restart)))
        host_run(ctx, inputs, "\n".join(script), sudo=inputs.sudo, timeout=inputs.timeout,
                 what="install the systemd units", stream=True)
        after = read_units(ctx, inputs)
        left = differences(inputs, after)
        if left:
            raise ActionFailed("the units were installed, but not everything holds: "
                               + "; ".join(left),
                               fix="systemctl status <unit> on the host")
        return Result("changed", outputs={"units": self._states(after), "changes": changes},
                      message="; ".join(changes))
