"""Issue 20 lower items: hostile runbooks cannot exhaust the machine or slip past validate.

Each case runs the real CLI in a child process with an address-space limit (1 GiB) and a
wall-clock timeout, so a regression fails the test instead of hanging or swapping CI.
"""

from __future__ import annotations

import resource
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import cli

LIMIT_AS = 1 << 30  # 1 GiB of address space for the child: billion laughs needs > 4 GiB
WALL = 30.0


def _limits() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT_AS, LIMIT_AS))


def bounded(elematrix: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.monotonic()
    try:
        res = cli(elematrix, *args, timeout=WALL, preexec_fn=_limits)
    except subprocess.TimeoutExpired:
        pytest.fail(f"elematrix {' '.join(args)} ran past {WALL:.0f} s")
    return res, time.monotonic() - t0


LAUGHS = """runbook: lol
x-a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
x-b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
x-c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
x-d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
x-e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
x-f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
x-g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
x-h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
x-i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
phases: [{id: one, steps: [{id: a, action: local.noop, with: {outputs: {x: *i}}}]}]
"""


@pytest.mark.timeout(60)
def test_billion_laughs_is_refused_quickly_and_located(elematrix: str, tmp_path: Path) -> None:
    path = tmp_path / "lol.yaml"
    path.write_text(LAUGHS)
    assert path.stat().st_size < 1024
    res, took = bounded(elematrix, "validate", str(path))
    assert res.returncode == 2, (res.returncode, res.stderr[-500:])
    assert f"{path}:" in res.stderr and "alias" in res.stderr, res.stderr[-500:]
    assert "Traceback" not in res.stderr and took < 10


@pytest.mark.timeout(60)
def test_merge_key_chain_stays_cheap(elematrix: str, tmp_path: Path) -> None:
    """``<<`` merges of merges: bounded like any alias (measured: PyYAML keeps it small)."""
    lines = ["runbook: merge", "x-0: &m0 {k0: 1, k1: 2}"]
    lines += [f"x-{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}x: 1}}" for i in range(1, 40)]
    lines.append("phases: [{id: one, steps: [{id: a, action: local.noop}]}]")
    path = tmp_path / "merge.yaml"
    path.write_text("\n".join(lines) + "\n")
    res, took = bounded(elematrix, "validate", str(path))
    assert res.returncode in (0, 2) and "Traceback" not in res.stderr, res.stderr[-500:]
    assert took < 10


def test_huge_runbook_file_is_refused(elematrix: str, tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("runbook: big\n# " + "x" * (9 << 20) + "\nphases: []\n")
    res, _ = bounded(elematrix, "validate", str(path))
    assert res.returncode == 2 and f"{path}:" in res.stderr and "too large" in res.stderr, \
        res.stderr[-500:]


BOMB = """runbook: bomb
params:
  - {name: base, type: int, default: 7}
  - {name: power, type: int, default: 2}
  - {name: times, type: int, default: 2}
phases:
  - id: one
    steps:
      - id: a
        action: local.noop
        with: {message: "%s"}
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("expr", ["{{ 7**(7**10) }}", "{{ 'x' * 10**10 }}",
                                  "{{ [1, 2] * (10**9) }}", "{{ '%%999999999s' %% 'x' }}",
                                  "{{ 'x' | center(10**10) }}", "{{ '{:>99999999}'.format(1) }}",
                                  "{{ ('x' * 999999) | replace('x', 'xx') }}",
                                  "{{ 'x'.ljust(10**9) }}"])
def test_constant_bombs_are_refused_by_validate(elematrix: str, tmp_path: Path,
                                                expr: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB % expr.replace("%%", "%"))
    res, took = bounded(elematrix, "validate", str(path))
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr[-500:])
    assert f"{path}:11:" in res.stderr and "step 'a'" in res.stderr, res.stderr[-500:]
    assert "too large" in res.stderr and took < 15


@pytest.mark.timeout(90)
@pytest.mark.parametrize("expr", ["{{ params.base ** (params.base ** params.power) }}",
                                  "{{ 'x' * params.times }}"])
def test_runtime_bombs_fail_the_step_not_the_machine(elematrix: str, tmp_path: Path,
                                                     expr: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB % expr)
    sets = ["--set", "power=10", "--set", "times=10000000000"]
    res = cli(elematrix, "validate", str(path))
    assert res.returncode == 0, res.stderr
    plan, took = bounded(elematrix, "plan", str(path), "--deployment", "bomb", *sets)
    assert plan.returncode == 0 and "too large" in plan.stdout and took < 15, plan.stdout[-800:]
    run, took = bounded(elematrix, "run", str(path), "--deployment", "bomb", "--yes", *sets)
    assert run.returncode == 1 and took < 15, (run.returncode, run.stderr[-500:])
    assert "too large" in run.stdout + run.stderr and "Traceback" not in run.stderr


@pytest.mark.parametrize("expr,what", [
    ("{{ cycler.__init__.__globals__ }}", "__"),
    ("{{ joiner() }}", "joiner"),
    ("{{ lipsum() }}", "lipsum"),
    ("{{ params.base.__class__ }}", "__class__"),
    ("{{ params['base'].real['__class__'] }}", "__class__"),
    ("{{ deployment.__len__() }}", "__len__"),
])
def test_sandbox_globals_and_dunders_are_refused_by_validate(elematrix: str, tmp_path: Path,
                                                             expr: str, what: str) -> None:
    path = tmp_path / "dunder.yaml"
    path.write_text(BOMB % expr.replace('"', "'"))
    res = cli(elematrix, "validate", str(path))
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert f"{path}:11:" in res.stderr and what in res.stderr, res.stderr


@pytest.mark.parametrize("expr,what", [
    ("{% for a in range(9) %}{% for b in range(9) %}x{% endfor %}{% endfor %}", "for"),
    ("{% macro f() %}x{% endmacro %}{{ f() }}", "macro"),
])
def test_unbounded_statements_are_refused_by_validate(elematrix: str, tmp_path: Path,
                                                      expr: str, what: str) -> None:
    """A loop repeats work no operation is charged for (``a in x`` 10^12 times)."""
    path = tmp_path / "stmt.yaml"
    path.write_text(BOMB % expr)
    res = cli(elematrix, "validate", str(path))
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert f"{path}:11:" in res.stderr and f"'{{% {what} %}}' is not allowed" in res.stderr


@pytest.mark.timeout(60)
def test_a_long_chain_of_bounded_operations_is_bounded_too(elematrix: str,
                                                           tmp_path: Path) -> None:
    """Each step stays under the per-operation bound; the rendering's budget stops the sum."""
    expr = "{{ " + " ~ ".join(["('x' * params.times)"] * 40) + " }}"
    path = tmp_path / "chain.yaml"
    path.write_text(BOMB % expr)
    res, took = bounded(elematrix, "run", str(path), "--deployment", "chain", "--yes",
                        "--set", "times=900000")
    assert res.returncode == 1 and took < 15, (res.returncode, res.stderr[-500:])
    assert "too much work" in res.stdout, res.stdout[-800:]
