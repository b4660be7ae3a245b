"""``elematrix doctor PATH``: lint a Matrix/Element stack directory for the known pitfalls.

Reads a stack directory (compose file, nginx configs, homeserver.yaml, Element
config.json, wherever they are in it), reports each problem with a rule id, file:line,
why it breaks and the fix. Errors exit 1, warnings alone exit 0, bad input exits 2.
``--fix`` prints the HTTP-only adaptation as a unified diff and writes it only after the
operator's yes (``--yes`` or an interactive prompt).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from .findings import Finding

EXIT_OK, EXIT_ERRORS, EXIT_BAD_INPUT = 0, 1, 2


class DoctorInputError(ValueError):
    """The path given to the doctor is not something it can check."""


class Diagnosis(list[Finding]):
    """The findings (a list, sorted by file and line) plus what the doctor covered.

    ``coverage``: ``{intent, target, files: [{file, kind, status, reason}], groups:
    [{group, ran, reason}], notes: [...]}`` -- the files found, loaded or skipped and why,
    and the rule groups that could not run and why.
    """

    coverage: dict[str, Any]

    def __init__(self, findings: list[Finding], coverage: dict[str, Any]) -> None:
        super().__init__(findings)
        self.coverage = coverage

    @property
    def errors(self) -> int:
        return sum(1 for f in self if f.severity == "error")

    @property
    def warnings(self) -> int:
        return len(self) - self.errors

    def to_dict(self) -> dict[str, Any]:
        """``{errors, warnings, findings, coverage}``: what ``--format json`` prints."""
        return {"errors": self.errors, "warnings": self.warnings,
                "findings": [f.to_dict() for f in self], "coverage": self.coverage}


# Proxies whose own configuration the doctor does not read: said plainly, never guessed.
_UNREAD_PROXIES = {"haproxy", "envoy", "nginx-proxy", "swag", "httpd", "apache",
                   "nginx-proxy-manager", "lighttpd", "caddy-docker-proxy"}


def diagnose(path: Path, target: str = "http") -> Diagnosis:
    """Every finding for the stack at ``path``, sorted by file and line, with coverage.

    ``target`` is where the stack is going: ``http`` (the HTTP-only POC host, the default)
    or ``tls``. Raises :class:`DoctorInputError` if path does not exist, holds no stack
    file, or the target is unknown.
    """
    from .intent import TARGETS, decide
    from .load import TooManyFiles, load_stack
    from .rules import CHECKS

    if target not in TARGETS:
        raise DoctorInputError(f"unknown target {target!r} (known: {', '.join(TARGETS)})")
    path = Path(path)
    if not path.exists():
        raise DoctorInputError(f"{path}: no such file or directory")
    try:
        stack = load_stack(path)
    except TooManyFiles as e:
        raise DoctorInputError(str(e)) from e
    stack_kinds = {"compose", "nginx", "homeserver", "element", "traefik", "caddy", "yaml"}
    if not (stack.compose or stack.homeservers or stack.elements or stack.nginx
            or stack.problems or any(fc.kind in stack_kinds for fc in stack.files)):
        raise DoctorInputError(
            f"{path}: no compose file, nginx config, homeserver.yaml or Element config.json "
            "found in it")
    findings = list(stack.problems)
    findings.extend(decide(stack, target))
    for check in CHECKS:
        findings.extend(check(stack))
    # One finding per (rule, place): overlapping checks must not repeat themselves.
    unique = {(f.rule, f.file, f.line, f.title): f for f in findings}
    ordered = sorted(unique.values(), key=lambda f: (f.file, f.line, f.rule))
    return Diagnosis(ordered, _coverage(stack, target))


def _coverage(stack: Any, target: str) -> dict[str, Any]:
    from . import proxies
    from .model import image_repo

    groups: list[dict[str, Any]] = []
    found_kinds = {fc.kind for fc in stack.files}

    def group(name: str, ran: bool, reason: str) -> None:
        groups.append({"group": name, "ran": ran, "reason": reason})

    group("compose", bool(stack.compose),
          "compose file read" if stack.compose else "no compose file found")
    if stack.nginx:
        group("nginx", True, f"{len(stack.nginx)} nginx file(s) read as nginx loads them")
    else:
        group("nginx", False, "nginx configs found, but no service's nginx reads them"
              if "nginx" in found_kinds else "no nginx config found")
    for kind, what in (("homeserver", "homeserver.yaml"), ("element", "Element config.json")):
        if getattr(stack, kind + "s"):
            group(kind, True, f"{what} read")
        else:
            skipped = [fc for fc in stack.files if fc.kind == kind]
            group(kind, False, f"{what} found but skipped: {skipped[0].reason}" if skipped
                  else f"no {what} in the stack")
    traefik_svcs = stack.services("traefik")
    if traefik_svcs:
        group("traefik", True, "router labels read" + (
            ", static config read" if stack.traefik else ", no static config in the stack"))
    else:
        group("traefik", False, "no Traefik service")
    if stack.caddy:
        group("caddy", True, "Caddyfile read")
    else:
        group("caddy", False, "Caddy runs but its Caddyfile is not in the stack: admin API "
              "exposure and redirects there were not read" if stack.services("caddy")
              else "no Caddyfile")
    for cf in stack.compose:
        for svc in cf.services:
            img = svc.data.get("image")
            if isinstance(img, str) and image_repo(img) in _UNREAD_PROXIES:
                group(f"proxy:{svc.name}", False,
                      f"`{svc.name}` ({img}) is a proxy whose config the doctor does not read: "
                      "admin API exposure and redirects there were not checked")
    notes = list(stack.notes)
    for svc in stack.services("traefik"):
        if any(f.key.startswith("providers.file") for f in proxies.traefik_flags(svc)):
            notes.append(f"`{svc.name}`: Traefik's file provider is not read: routes defined "
                         "there were not checked")
    for tf in stack.traefik:
        providers = tf.doc.data.get("providers") if isinstance(tf.doc.data, dict) else None
        if isinstance(providers, dict) and "file" in providers:
            notes.append(f"{stack.rel(tf.path)}: Traefik's file provider is not read: routes "
                         "defined there were not checked")
    if stack.deploy_time:
        notes.append("secrets supplied at deploy time, not checked: "
                     + ", ".join(sorted(stack.deploy_time)))
    return {"intent": "tls" if stack.tls_intent else "http", "target": target,
            "files": [fc.to_dict() for fc in sorted(stack.files, key=lambda f: f.file)],
            "groups": groups, "notes": notes}


def format_coverage(cov: dict[str, Any]) -> list[str]:
    """The coverage summary as text lines (the text output prints it before the totals)."""
    lines = [f"coverage: the stack is built for {cov['intent'].upper()}; target "
             f"{cov['target'].upper()}"]
    for fc in cov["files"]:
        lines.append(f"  {fc['status']:<7} {fc['file']}: {fc['reason']}")
    for g in cov["groups"]:
        lines.append(f"  {'ran' if g['ran'] else 'not run'}: {g['group']} rules: {g['reason']}")
    for n in cov["notes"]:
        lines.append(f"  note: {n}")
    return lines


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="elematrix doctor",
        description="Check a Matrix/Element stack directory for the known HTTP-only pitfalls.")
    p.add_argument("path", help="stack directory (or one of its files)")
    p.add_argument("--fix", action="store_true",
                   help="show the HTTP-only adaptation as a diff and apply it after a yes")
    p.add_argument("--yes", action="store_true", help="apply --fix without asking")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--target", choices=("http", "tls"), default="http",
                   help="where the stack is going: http (the HTTP-only host, default) or tls")
    p.add_argument("--public-address", metavar="HOST[:PORT]",
                   help="with --fix: the address clients use (default: the host already in "
                        "public_baseurl or Element's base_url)")
    return p


def _ask(prompt: str, stdin: TextIO, stdout: TextIO) -> bool:
    stdout.write(prompt)
    stdout.flush()
    answer = stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def main(argv: list[str], *, stdin: TextIO | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None, ask: Callable[[str], bool] | None = None) -> int:
    """Run the doctor command line; returns the exit code (never raises on bad input)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    inp = stdin or sys.stdin
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse prints its own usage message
        return EXIT_BAD_INPUT if e.code else EXIT_OK
    path = Path(args.path)
    try:
        findings = diagnose(path, args.target)
    except DoctorInputError as e:
        err.write(f"elematrix doctor: {e}\n")
        return EXIT_BAD_INPUT
    except OSError as e:
        err.write(f"elematrix doctor: cannot read {path}: {e}\n")
        return EXIT_BAD_INPUT
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = len(findings) - errors

    fix_report: dict[str, object] | None = None
    if args.fix:
        fix_report = _fix(path, args, out, err, inp, ask)
        if fix_report.get("applied"):
            findings = diagnose(path, args.target)
            errors = sum(1 for f in findings if f.severity == "error")
            warnings = len(findings) - errors

    if args.format == "json":
        doc: dict[str, object] = {"path": str(path), **findings.to_dict()}
        if fix_report is not None:
            doc["fix"] = fix_report
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        for f in findings:
            out.write(f.format_text() + "\n")
        for ln in format_coverage(findings.coverage):
            out.write(ln + "\n")
        out.write(f"{errors} error(s), {warnings} warning(s) in {path}\n")
    return EXIT_ERRORS if errors else EXIT_OK


def _fix(path: Path, args: argparse.Namespace, out: TextIO, err: TextIO, inp: TextIO,
         ask: Callable[[str], bool] | None) -> dict[str, object]:
    from .fix import apply_plan, plan_fix

    plan = plan_fix(path, args.public_address)
    text_mode = args.format == "text"
    report: dict[str, object] = {"diff": plan.diff, "files": sorted(plan.changed_files),
                                 "manual": plan.manual, "notes": plan.notes,
                                 "applied": False}
    if not plan.diff:
        if text_mode:
            out.write("doctor --fix: nothing to adapt automatically\n")
        return report
    if text_mode:
        out.write("\n".join(plan.diff) + "\n")
        for m in plan.manual:
            out.write(f"manual: {m}\n")
        for m in plan.notes:
            out.write(f"note: {m}\n")
    approved = args.yes
    if not approved:
        if ask is not None:
            approved = ask("Apply these changes? [y/N] ")
        elif inp.isatty():
            approved = _ask("Apply these changes? [y/N] ", inp, err)
        else:
            err.write("doctor --fix: not applied (no terminal to ask; pass --yes to apply)\n")
    if approved:
        apply_plan(plan)
        report["applied"] = True
        if text_mode:
            out.write(f"doctor --fix: wrote {len(plan.changed_files)} file(s)\n")
    elif text_mode:
        out.write("doctor --fix: nothing written\n")
    return report


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
