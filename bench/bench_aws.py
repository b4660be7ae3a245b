"""The infra phase's AWS calls through elematrix vs the same calls made by the ``aws`` CLI,
one process per call (the approach of the research's shell runbook), against one local
moto server on 127.0.0.1.

1. elematrix: the real runner runs phase ``infra`` of ``runbooks/poc-ec2.yaml`` in-process
   (one boto3 session, cached clients, journal on). Every API call it makes — waiter polls
   included — is recorded with its exact parameters through a botocore
   ``provide-client-params`` hook.
2. aws CLI: the recorded calls are replayed in order, each as
   ``aws <service> <operation> --cli-input-json ... --endpoint-url ...`` in its own process.
   Creates that already exist answer "duplicate" instead of doing the work, which only
   makes the CLI side cheaper: the ratio is conservative.

Figures:
  aws.infra_vs_cli_ratio   CLI total / elematrix total for the same calls (target >= 20)
  aws.infra_s              elematrix: wall time of the infra phase
  aws.infra_calls          AWS API calls in the phase
  aws.cli_s                the same calls through the CLI, one process each
  aws.cli_per_call_ms      median CLI process per call

Needs the ``aws`` CLI on PATH (v1 from PyPI is fine: ``pip install awscli`` into a venv of
its own) or ``BENCH_AWS_CLI=/path/to/aws``. Run alone: ``python bench/bench_aws.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from elematrix_tui.bundled import runbooks_dir  # noqa: E402  (after the path above)

RUNBOOK = runbooks_dir() / "poc-ec2.yaml"
FAKE_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
CLI_SERVICE = {"s3": "s3api"}


def _aws_cli() -> str:
    cli = os.environ.get("BENCH_AWS_CLI") or shutil.which("aws")
    if not cli:
        raise RuntimeError("no `aws` CLI: `python -m venv /opt/awscli && /opt/awscli/bin/pip "
                           "install awscli`, then BENCH_AWS_CLI=/opt/awscli/bin/aws")
    return cli


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def _run_elematrix(url: str, tmp: Path) -> tuple[float, list[tuple[str, str, dict[str, Any]]]]:
    from elematrix_tui.actions import default_registry
    from elematrix_tui.actions.aws_session import AwsSession
    from elematrix_tui.engine.loader import load_runbook
    from elematrix_tui.engine.runner import Runner, RunOptions
    from elematrix_tui.engine.standalone import AutoQuestions

    calls: list[tuple[str, str, dict[str, Any]]] = []

    def record(session: AwsSession) -> None:
        def hook(params: dict[str, Any], model: Any, **_: Any) -> None:
            svc = model.service_model.service_name
            calls.append((svc, model.name, json.loads(json.dumps(_jsonable(params)))))

        session.session.events.register("provide-client-params.*.*", hook)

    AwsSession.on_create.append(record)
    try:
        rb = load_runbook(RUNBOOK, default_registry())
        runner = Runner(rb, deployment="bench", state_dir=tmp / "state",
                        params={"operator_cidr": "203.0.113.5/32", "host_key_wait": 0},
                        questions=AutoQuestions(), registry=default_registry(),
                        options=RunOptions(phases=["infra"], assume_yes=True),
                        runbook_path=RUNBOOK)
        t0 = time.perf_counter()
        code = runner.run()
        elapsed = time.perf_counter() - t0
    finally:
        AwsSession.on_create.remove(record)
    if code != 0:
        raise RuntimeError(f"the infra phase failed (exit {code}) against {url}")
    return elapsed, calls


def _run_cli(cli: str, url: str, calls: list[tuple[str, str, dict[str, Any]]],
             tmp: Path) -> tuple[float, list[float], int]:
    from botocore import xform_name

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **FAKE_ENV,
           "AWS_CONFIG_FILE": str(tmp / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "none"),
           "AWS_PAGER": ""}
    times: list[float] = []
    errors = 0
    t0 = time.perf_counter()
    for i, (svc, op, params) in enumerate(calls):
        path = tmp / f"call-{i}.json"
        path.write_text(json.dumps(params))
        # The same endpoint the runbook's call had (DLM: the stand-in beside moto).
        endpoint = os.environ.get(f"AWS_ENDPOINT_URL_{svc.upper()}") or url
        cmd = [cli, CLI_SERVICE.get(svc, svc), xform_name(op, "-"),
               "--cli-input-json", f"file://{path}", "--endpoint-url", endpoint,
               "--region", "us-east-1", "--output", "json"]
        s = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        times.append(time.perf_counter() - s)
        errors += r.returncode != 0
    return time.perf_counter() - t0, times, errors


def run() -> list[tuple[str, float, str]]:
    cli = _aws_cli()
    os.environ.update(FAKE_ENV)
    os.environ["MOTO_IAM_LOAD_MANAGED_POLICIES"] = "true"
    import logging

    from moto.server import ThreadedMotoServer

    from elematrix_tui.practice import default_vpc_like_aws

    default_vpc_like_aws()  # AWS's default VPC (an internet gateway), as in the tests
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log on stderr
    from elematrix_tui.practice_dlm import ENV_ENDPOINT, DlmStandIn

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    saved = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = url
    # moto has no DLM: infra's snapshot policy goes to the stand-in, for both sides.
    dlm = DlmStandIn().start()
    saved_dlm = os.environ.get(ENV_ENDPOINT)
    os.environ[ENV_ENDPOINT] = dlm.url
    # HOME and the secret store are the bench's own while it runs: left set, the next
    # bench (e2e) ran ssh with a deleted HOME and its host_ready failed at once.
    saved_home = os.environ.get("HOME")
    saved_store = os.environ.get("ELEMATRIX_SECRET_STORE")
    try:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            os.environ["HOME"] = str(tmp)  # no operator key: the runbook generates one
            # This machine has no keyring: the bench's secrets go to a 0600 file in tmp
            # (bench_engine.py did this for the whole run; alone, this one failed).
            os.environ.setdefault("ELEMATRIX_SECRET_STORE", "file")
            # Warm moto's lazily loaded data (AMIs, instance types, managed policies) so
            # neither side pays for it.
            import boto3

            warm = boto3.Session()
            warm.client("ec2", endpoint_url=url).describe_instance_type_offerings(
                LocationType="availability-zone")
            warm.client("ssm", endpoint_url=url).get_parameter(
                Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")
            warm.client("iam", endpoint_url=url).list_policies(MaxItems=1)
            infra_s, calls = _run_elematrix(url, tmp)
            cli_s, per_call, errors = _run_cli(cli, url, calls, tmp)
    finally:
        for key, value in (("AWS_ENDPOINT_URL", saved), (ENV_ENDPOINT, saved_dlm),
                           ("HOME", saved_home), ("ELEMATRIX_SECRET_STORE", saved_store)):
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        dlm.stop()
        # moto's backends are this process's: left as they are, the e2e bench (the same
        # deployment name, "bench") found this bench's Elastic IP, a random 127.x address,
        # and its SSH was refused there. Each bench starts from an empty account.
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset",
                                                      method="POST"), timeout=30).close()
        server.stop()
    return [
        ("aws.infra_vs_cli_ratio", cli_s / infra_s, "x"),
        ("aws.infra_s", infra_s, "s"),
        ("aws.infra_calls", float(len(calls)), "calls"),
        ("aws.cli_s", cli_s, "s"),
        ("aws.cli_per_call_ms", statistics.median(per_call) * 1000, "ms"),
        ("aws.cli_errors", float(errors), "calls (duplicates on replay; cheaper for the CLI)"),
    ]


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name}: {value:.3f} {unit}")
