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
from typing import TextIO

from .findings import Finding

EXIT_OK, EXIT_ERRORS, EXIT_BAD_INPUT = 0, 1, 2


class DoctorInputError(ValueError):
    """The path given to the doctor is not something it can check."""


def diagnose(path: Path) -> list[Finding]:
    """Every finding for the stack at ``path``, sorted by file and line.

    Raises :class:`DoctorInputError` if path does not exist or holds no stack file.
    """
    from .model import TooManyFiles, load_stack
    from .rules import CHECKS

    path = Path(path)
    if not path.exists():
        raise DoctorInputError(f"{path}: no such file or directory")
    try:
        stack = load_stack(path)
    except TooManyFiles as e:
        raise DoctorInputError(str(e)) from e
    if not (stack.compose or stack.homeservers or stack.elements or stack.nginx
            or stack.problems):
        raise DoctorInputError(
            f"{path}: no compose file, nginx config, homeserver.yaml or Element config.json "
            "found in it")
    findings = list(stack.problems)
    for check in CHECKS:
        findings.extend(check(stack))
    # One finding per (rule, place): overlapping checks must not repeat themselves.
    unique = {(f.rule, f.file, f.line, f.title): f for f in findings}
    return sorted(unique.values(), key=lambda f: (f.file, f.line, f.rule))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="elematrix doctor",
        description="Check a Matrix/Element stack directory for the known HTTP-only pitfalls.")
    p.add_argument("path", help="stack directory (or one of its files)")
    p.add_argument("--fix", action="store_true",
                   help="show the HTTP-only adaptation as a diff and apply it after a yes")
    p.add_argument("--yes", action="store_true", help="apply --fix without asking")
    p.add_argument("--format", choices=("text", "json"), default="text")
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
        findings = diagnose(path)
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
            findings = diagnose(path)
            errors = sum(1 for f in findings if f.severity == "error")
            warnings = len(findings) - errors

    if args.format == "json":
        doc: dict[str, object] = {"path": str(path), "errors": errors, "warnings": warnings,
                                  "findings": [f.to_dict() for f in findings]}
        if fix_report is not None:
            doc["fix"] = fix_report
        out.write(json.dumps(doc, indent=2) + "\n")
    else:
        for f in findings:
            out.write(f.format_text() + "\n")
        out.write(f"{errors} error(s), {warnings} warning(s) in {path}\n")
    return EXIT_ERRORS if errors else EXIT_OK


def _fix(path: Path, args: argparse.Namespace, out: TextIO, err: TextIO, inp: TextIO,
         ask: Callable[[str], bool] | None) -> dict[str, object]:
    from .fix import apply_plan, plan_fix

    plan = plan_fix(path, args.public_address)
    text_mode = args.format == "text"
    report: dict[str, object] = {"diff": plan.diff, "files": sorted(plan.changed_files),
                                 "manual": plan.manual, "applied": False}
    if not plan.diff:
        if text_mode:
            out.write("doctor --fix: nothing to adapt automatically\n")
        return report
    if text_mode:
        out.write("\n".join(plan.diff) + "\n")
        for m in plan.manual:
            out.write(f"manual: {m}\n")
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
