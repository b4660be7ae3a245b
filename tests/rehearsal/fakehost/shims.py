"""The two shims left on the rehearsal instance: ``cloud-init`` and ``systemctl``.

There is no systemd and no cloud-init on these machines, so these two programs are stand-ins
(docs/testing-rehearsal.md, "What is still shimmed"). Docker is NOT: the units' ``ExecStart``
lines run the real ``/usr/bin/docker`` against the real engine.

- ``cloud-init status [--wait] [--long] [--format json|yaml|tabular]``: ``status: done``. The
  instance fixture has already done what our user-data does on AL2023
  (``assets/cloud-init/user-data.yaml``: ec2-user in the ``docker`` group, the
  markers in /var/lib/elematrix). Upstream prints ``status: done`` and exits 0 once
  cloud-init finished without error (cloudinit/cmd/status.py); ``--wait`` blocks until then.
- ``systemctl daemon-reload | enable [--now] | disable | start | stop | restart | is-enabled |
  is-active | status UNIT...``: units from the runbook's unit directory, then
  /etc/systemd/system. Starting a ``Type=oneshot`` service runs its ``Requires=`` first, then
  ``ExecStartPre``/``ExecStart`` for real in its ``WorkingDirectory`` (a leading ``-`` ignores
  failure, as systemd.service(5) says); without ``RemainAfterExit=yes`` it is inactive again
  afterwards; a failing one is ``failed`` and the command exits 1 with systemd's message.
  ``stop`` runs ``ExecStop``. Timers are recorded active and never fire (a test starts the
  service). ``docker.service`` is always active (dockerd runs). Mutating verbs refuse a
  non-root caller ("Access denied"), as systemd does without polkit rights. Anything else:
  exit 1 with ``shim: unsupported``, so a runbook change meets a decision.

Configuration: ``$ELEMATRIX_FAKEHOST_STATE/fakehost.json`` (tests/rehearsal/instance.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STATE_ENV = "ELEMATRIX_FAKEHOST_STATE"
SHIM = "elematrix rehearsal shim"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# The engine runs (dockerd, started by hand or by .ci/run): its units are always active.
BUILTIN_UNITS = {"docker.service", "containerd.service", "docker.socket"}


class Unsupported(Exception):
    """Something the shim does not stand in for: exit 1, loudly."""


class Failed(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def err(line: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


def _config() -> dict[str, Any]:
    root = os.environ.get(STATE_ENV)
    if not root:
        raise Failed(f"shim: {STATE_ENV} is not set (the instance fixture sets it for ssh "
                     "sessions and sudo)")
    cfg: dict[str, Any] = json.loads((Path(root) / "fakehost.json").read_text())
    cfg["state"] = root
    return cfg


def _flags(argv: list[str], spec: dict[str, bool], where: str
           ) -> tuple[dict[str, list[str]], list[str]]:
    """Flags (name -> takes a value) and positionals; an unknown flag is refused."""
    got: dict[str, list[str]] = {}
    pos: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if not a.startswith("-") or a == "-":
            pos.append(a)
            continue
        name, eq, val = a.partition("=")
        if name not in spec:
            raise Unsupported(f"{where} {name}")
        if spec[name] and not eq:
            if i >= len(argv):
                raise Failed(f"{where}: {name} needs a value")
            val = argv[i]
            i += 1
        got.setdefault(name, []).append(val)
    return got, pos


# ------------------------------------------------------------------------------ cloud-init


def cloud_init(argv: list[str]) -> int:
    if not argv or argv[0] != "status":
        raise Unsupported(f"cloud-init {' '.join(argv)}")
    fl, pos = _flags(argv[1:], {"--wait": False, "-w": False, "--long": False, "-l": False,
                                "--format": True}, "cloud-init status")
    if pos:
        raise Unsupported(f"cloud-init status {' '.join(pos)}")
    fmt = fl.get("--format", ["tabular"])[-1]
    if fmt == "json":
        print(json.dumps({"status": "done", "extended_status": "done", "errors": [],
                          "detail": SHIM}))
    elif fmt in ("tabular", "yaml"):
        print("status: done")
        if "--long" in fl or "-l" in fl:
            print(f"extended_status: done\ndetail: {SHIM} (the instance fixture did what "
                  "user-data does)")
    else:
        raise Unsupported(f"cloud-init status --format {fmt}")
    return 0


# ------------------------------------------------------------------------------ systemctl


def _state_path(cfg: dict[str, Any]) -> Path:
    return Path(cfg["state"]) / "systemd.json"


def _load_state(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    try:
        data: dict[str, dict[str, Any]] = json.loads(_state_path(cfg).read_text())
        return data
    except (OSError, ValueError):
        return {}


def _save_state(cfg: dict[str, Any], st: dict[str, dict[str, Any]]) -> None:
    p = _state_path(cfg)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(st, indent=1, sort_keys=True))
    tmp.replace(p)


def _unit_name(u: str) -> str:
    return u if "." in u else f"{u}.service"


def _find_unit(cfg: dict[str, Any], unit: str) -> Path | None:
    for d in cfg["unit_dirs"]:
        if (Path(d) / unit).exists():
            return Path(d) / unit
    return None


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """An INI-like unit file: {section: {key: [values]}} (repeated keys kept in order)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            out.setdefault(section, {})
            continue
        k, _, v = line.partition("=")
        out.setdefault(section, {}).setdefault(k.strip(), []).append(v.strip())
    return out


def _start_unit(cfg: dict[str, Any], st: dict[str, dict[str, Any]], unit: str,
                restart: bool = False, depth: int = 0) -> None:
    rec = st.setdefault(unit, {"enabled": False, "active": False})
    if unit in BUILTIN_UNITS:
        rec.update(enabled=True, active=True)
        return
    path = _find_unit(cfg, unit)
    if path is None:
        raise Failed(f"Failed to start {unit}: Unit {unit} not found.", 5)
    if rec["active"] and not restart:
        return
    parsed = parse_unit(path)
    if depth < 5:
        for req in " ".join(parsed.get("Unit", {}).get("Requires", [])).split():
            _start_unit(cfg, st, _unit_name(req), depth=depth + 1)
    if unit.endswith(".service"):
        try:
            _run_unit(cfg, unit, path)
        except Failed:
            rec.update(active=False, failed=True)
            _save_state(cfg, st)
            raise
        remain = (parsed.get("Service", {}).get("RemainAfterExit") or ["no"])[-1]
        rec.update(active=remain in ("yes", "true", "1"), failed=False, last_run=time.time())
    else:
        rec.update(active=True, since=time.time())  # a timer: never fires here


def unit_env(cfg: dict[str, Any]) -> dict[str, str]:
    """What a unit's commands see: systemd's minimal environment, plus the instance's AWS
    variables (on EC2 the instance role answers through IMDS; here moto needs them) and the
    compose project name the tests use to share one engine (docs/testing-rehearsal.md)."""
    return {"PATH": f"{cfg['bin_dir']}:{SYSTEM_PATH}", "LANG": "C.UTF-8",
            STATE_ENV: cfg["state"], **cfg["env"]}


def _run_unit(cfg: dict[str, Any], unit: str, path: Path,
              keys: tuple[str, ...] = ("ExecStartPre", "ExecStart")) -> None:
    """Run a oneshot service's commands for real (``/usr/bin/docker`` is the real client)."""
    svc = parse_unit(path).get("Service", {})
    typ = (svc.get("Type") or ["simple"])[-1]
    if typ != "oneshot":
        raise Unsupported(f"systemctl: {unit} has Type={typ} (only oneshot units are run)")
    cwd = (svc.get("WorkingDirectory") or ["/"])[-1]
    for key in keys:
        for line in svc.get(key, []):
            ignore = line.startswith("-")
            argv = shlex.split(line.lstrip("-@+!"))
            r = subprocess.run(argv, cwd=cwd, env=unit_env(cfg), stdin=subprocess.DEVNULL)
            if r.returncode != 0 and not ignore:
                raise Failed(f"Job for {unit} failed because the control process exited with "
                             f"error code (status={r.returncode}).\nSee \"systemctl status "
                             f"{unit}\" for details.")


def caller_uid() -> int:
    """The uid that ran the shim (the shim re-runs non-root callers under sudo)."""
    return int(os.environ.get("ELEMATRIX_FAKEHOST_CALLER_UID", os.geteuid()))


def systemctl(argv: list[str]) -> int:
    fl, pos = _flags(argv, {"--now": False, "--quiet": False, "-q": False, "--no-pager": False,
                            "--no-block": False, "-l": False, "--full": False}, "systemctl")
    if not pos:
        raise Unsupported("systemctl without a command")
    verb, units = pos[0], [_unit_name(u) for u in pos[1:]]
    quiet = "--quiet" in fl or "-q" in fl
    cfg = _config()
    st = _load_state(cfg)
    mutating = {"daemon-reload", "enable", "disable", "start", "stop", "restart"}
    if verb in mutating and caller_uid() != 0:
        print(f"Failed to {verb}: Access denied", file=sys.stderr)
        return 1
    if verb in mutating:
        # systemd finishes a job whose client went away (the runner killed mid-start).
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    if verb == "daemon-reload":
        st.setdefault("_", {})["reloads"] = int(st.get("_", {}).get("reloads", 0)) + 1
        _save_state(cfg, st)
        return 0
    if not units:
        raise Unsupported(f"systemctl {verb} without a unit")
    rc = 0
    for unit in units:
        builtin = unit in BUILTIN_UNITS
        path = _find_unit(cfg, unit)
        rec = st.setdefault(unit, {"enabled": False, "active": False})
        if builtin:
            rec.update(enabled=True, active=True)
        elif path is None and verb in mutating | {"status"}:
            print(f"Failed to {verb} {unit}: Unit {unit} not found.", file=sys.stderr)
            return 5 if verb != "status" else 4
        if verb in ("enable", "disable"):
            if verb == "enable" and not builtin and path is not None:
                wanted = parse_unit(path).get("Install", {}).get("WantedBy")
                if not wanted:
                    raise Unsupported(f"systemctl enable {unit}: no [Install] WantedBy")
                err(f"Created symlink /etc/systemd/system/{wanted[-1]}.wants/{unit} -> {path}.")
            rec["enabled"] = verb == "enable"
        if (verb == "start" or (verb == "enable" and "--now" in fl) or verb == "restart") \
                and not builtin:
            _start_unit(cfg, st, unit, restart=verb == "restart")
        if (verb == "stop" or (verb == "disable" and "--now" in fl)) and not builtin:
            if rec["active"] and path is not None and unit.endswith(".service"):
                _run_unit(cfg, unit, path, ("ExecStop",))
            rec["active"] = False
        if verb == "is-active":
            state = "active" if rec["active"] else \
                ("failed" if rec.get("failed") else "inactive")
            if not quiet:
                print(state)
            rc = rc or (0 if rec["active"] else 3)
        elif verb == "is-enabled":
            state = "enabled" if rec["enabled"] else ("disabled" if path or builtin
                                                      else "not-found")
            if not quiet:
                print(state)
            rc = rc or (0 if rec["enabled"] else 1)
        elif verb == "status":
            active = "active (exited)" if rec["active"] else "inactive (dead)"
            print(f"* {unit} - {SHIM}\n     Loaded: loaded ({path or 'builtin'}; "
                  f"{'enabled' if rec['enabled'] else 'disabled'})\n     Active: {active}")
            rc = rc or (0 if rec["active"] else 3)
        elif verb not in mutating:
            raise Unsupported(f"systemctl {verb}")
    if verb in mutating:
        _save_state(cfg, st)
    return rc


def main(args: Sequence[str] | None = None) -> int:
    """``shims.py cloud-init|systemctl ARGS...``"""
    argv = list(sys.argv[1:] if args is None else args)
    tools = {"cloud-init": cloud_init, "systemctl": systemctl}
    if not argv or argv[0] not in tools:
        err("usage: shims.py cloud-init|systemctl ARGS...")
        return 2
    tool, rest = argv[0], argv[1:]
    try:
        return tools[tool](rest)
    except Unsupported as e:
        err(f"shim: unsupported: {e} (command: {tool} {shlex.join(rest)}; see "
            "docs/testing-rehearsal.md)")
        return 1
    except Failed as e:
        err(str(e))
        return e.code


if __name__ == "__main__":
    sys.exit(main())
