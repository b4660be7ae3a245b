"""The production runbook killed with SIGKILL at random AWS calls, then resumed: nothing is
created twice (issue 16; the POC's infra has the same test in tests/aws/test_cli.py).

The AWS side (preflight to instances) through the real ``elematrix`` against a moto server
on 127.0.0.1 with ``production_gaps``. A first deployment runs once, uninterrupted: what it
leaves is the measure. A second deployment (another name on the same zone) is killed three
times, each time right after a random AWS call of the run or resume in progress, then
resumed to the end: it must leave exactly what the first one did, and its plan must find
everything in place. No database host is given (``db_admin_host`` empty), so no psql runs:
the synapse phase, which would create the Synapse database, is not part of these phases.
"""

from __future__ import annotations

import json
import random

import pytest

from .production_gaps import production_moto  # noqa: F401 - a fixture
from .test_cli import elematrix, killed_after
from .test_production import OPERATOR, PHASES, RUNBOOKS, _client, _left, cli_env  # noqa: F401

ZONE = "example.com"


def _args(dep: str) -> list[str]:
    phases = [a for p in PHASES for a in ("--phase", p)]
    return [*phases, "--yes", "--deployment", dep, "--set", f"domain={dep}.{ZONE}",
            "--set", "db_wait=60", "--set", "host_key_wait=0", *OPERATOR]


def _counts(env: dict[str, str], dep: str) -> dict[str, int]:
    return {k: len(v) for k, v in _left(env, dep).items()}


@pytest.mark.usefixtures("production_moto")
@pytest.mark.timeout(900)
def test_killed_three_times_then_resumed_it_leaves_what_one_run_leaves(
        cli_env: dict[str, str]) -> None:  # noqa: F811 - the fixture imported above
    env = cli_env
    _client(env, "route53").create_hosted_zone(Name=ZONE, CallerReference="resume-test")
    before = _counts(env, "ref")
    ref = elematrix(env, "run", str(RUNBOOKS / "production.yaml"), *_args("ref"), timeout=600)
    assert ref.returncode == 0, ref.stdout[-4000:] + ref.stderr[-2000:]
    after_ref = _counts(env, "ref")
    one_run = {k: after_ref[k] - before[k] for k in after_ref}
    assert one_run["db_instance"] == 1 and one_run["instance"] == 1, one_run

    rng = random.Random(20261201)
    points = [rng.randint(1, 40) for _ in range(3)]
    start = _counts(env, "kill")
    cmd = ["run", str(RUNBOOKS / "production.yaml"), *_args("kill")]
    for n, point in enumerate(points):
        assert killed_after(env, cmd, point), f"kill {n + 1} (after call {point}): it ended"
        cmd = ["resume", "--deployment", "kill", "--yes"]
    done = elematrix(env, *cmd, timeout=600)
    assert done.returncode == 0, f"kills after calls {points}:\n{done.stdout[-4000:]}\n" \
                                 f"{done.stderr[-2000:]}"
    end = _counts(env, "kill")
    assert {k: end[k] - start[k] for k in end} == one_run, (points, end, start)
    # And the plan finds all of it in place: nothing would be created again.
    plan = elematrix(env, "plan", str(RUNBOOKS / "production.yaml"), "--json",
                     *[a for a in _args("kill") if a != "--yes"])
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-2000:]
    creates = [s["id"] for ph in json.loads(plan.stdout)["phases"] for s in ph["steps"]
               if ph["id"] in PHASES and s["symbol"] == "+"]
    assert creates == [], creates
