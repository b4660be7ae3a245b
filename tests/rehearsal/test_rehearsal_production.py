"""The whole ``production`` runbook through the runner, preflight to validate, then its
teardown: ``elematrix run runbooks/production.yaml`` (headless), every gate passed, and
``teardown --set managed_services=true`` leaves nothing (docs/production.md, "The
rehearsal of the whole runbook").

What stands in for what, each no kinder than what it replaces:
- AWS: a moto server on 127.0.0.1 in this process (tests/rehearsal/conftest.py
  ``moto_server``), with ``tests/aws/production_gaps.py`` (ACM issues only on a resolving
  validation record, HTTPS listeners need an issued certificate, access logs need the
  bucket policy, ElastiCache subnet-group deletion, target health only after five real
  passing health checks).
- The EC2 instance: a FakeInstance (a real sshd on a 127.x address, the real Docker
  engine). moto is pointed at it as the POC rehearsal does (``moto_points_at``: the
  console output carries its host keys), plus the public IPv4 moto gives the instance's
  interface: the FakeInstance's address (moto draws a random one,
  ``elastic_network_interfaces.random_public_ip``).
- RDS's endpoint: the native PostgreSQL of tests/aws/test_production.py (TLS required, the
  master no superuser). moto's endpoint for it is the Docker bridge's gateway address and
  a ``bridge_forward`` port to that server: where the instance's containers (Synapse and
  its workers; psql in the pinned postgres image, on the host's network) reach it, as
  instances in the VPC reach RDS. The synapse phase creates the Synapse database there
  from the instance, and Synapse keeps its data there (no PostgreSQL container).
- ElastiCache: the stack's own Redis container (``redis_host=redis``, no TLS): the
  synapse phase is not yet wired to ElastiCache's endpoint.
- **The one replacement: the ALB.** An nginx with a test CA's certificate on
  ``<edge address>:443``, forwarding to the instance's published app port as the ALB's
  target group does (tests/support/tls_edge.py says what it copies; here in the host's
  network, since the instance is the host's address). The domain resolves to it through a
  private ``/etc/hosts`` in a mount namespace of the ``elematrix`` process only
  (``unshare --mount``): nothing machine-wide changes.
- Public DNS: the Route 53 zone in moto (ACM reads it there; nobody else resolves it).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from elematrix_tui.actions.aws_kinds.cloudwatch import alarm_count
from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.stack.values import IMAGES
from tests.aws.production_gaps import production_moto  # noqa: F401 - a fixture
from tests.aws.test_production import ADMIN_PW, _left, rds_standin  # noqa: F401 - a fixture
from tests.conftest import require, require_binary
from tests.rehearsal.conftest import pick_address
from tests.rehearsal.instance import FakeInstance, missing_binaries, moto_points_at, port_free
from tests.support import tls_edge
from tests.support.docker import ensure_images, need_chromium
from tests.support.worker_stack import bridge_forward

RUNBOOKS = runbooks_dir()
DOMAIN = "matrix.prodinst.test"
ZONE = "prodinst.test"
DEP = "prodr"
# The edge container's name on the shared engine: this branch's prefix.
EDGE_PREFIX = "prodinst-edge"

pytestmark = pytest.mark.timeout(2400)

# The ALB stand-in, in the host's network: TLS on the edge address only, the admin API
# answered 404 by the edge itself (the listener rule), everything else to the target.
EDGE_CONF = """\
server {
    listen %(edge)s:443 ssl;
    ssl_certificate /etc/nginx/tls/server.crt;
    ssl_certificate_key /etc/nginx/tls/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    client_max_body_size 50M;
    location /_synapse/admin {
        default_type application/json;
        return 404 '{"errcode":"M_NOT_FOUND","error":"Not found"}';
    }
    location / {
        proxy_pass http://%(target)s:%(port)d;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto https;
        proxy_http_version 1.1;
        proxy_read_timeout 600s;
    }
}
"""


def _worker_images() -> None:
    from tests.docker.test_workers_on_engine import _worker_images as build

    build()


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def _edge_address() -> str:
    for _ in range(200):
        addr = pick_address()
        if port_free(addr, 443):
            return addr
    raise AssertionError("no 127.x address with 443 free")


def _start_edge(root: Path, edge: str, target: str, port: int) -> tuple[str, tls_edge.TestCA]:
    ca = tls_edge.make_ca(root / "tls", (DOMAIN,), ips=(edge,))
    ca_pem = root / "ca.pem"
    ca_pem.write_bytes(ca.ca_pem.read_bytes())
    ca.ca_pem.unlink()  # the edge holds no CA it needs
    conf = root / "default.conf"
    conf.write_text(EDGE_CONF % {"edge": edge, "target": target, "port": port})
    name = f"{EDGE_PREFIX}-{uuid.uuid4().hex[:8]}"
    r = _docker("run", "-d", "--name", name, "--network", "host",
                "-v", f"{conf}:/etc/nginx/conf.d/default.conf:ro",
                "-v", f"{root / 'tls'}:/etc/nginx/tls:ro", IMAGES["nginx"])
    assert r.returncode == 0, r.stderr
    for _ in range(100):
        if not port_free(edge, 443):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(_docker("logs", name).stderr[-2000:])
    return name, tls_edge.TestCA(ca_pem, ca.server_crt, ca.server_key)


@contextlib.contextmanager
def _rds_on_the_bridge(pg: Any) -> Iterator[None]:
    """moto's RDS endpoint: the bridge's gateway and a forward to the stand-in's port."""
    from moto.rds import models as rds

    from tests.support.worker_stack import docker_gateway

    gw = docker_gateway()
    with bridge_forward(pg.port) as port:
        init = rds.DBInstance.__init__

        def on_bridge(self: Any, *a: Any, **kw: Any) -> None:
            init(self, *a, **kw)
            self.port = port

        with mock.patch.object(rds.DBInstance, "address", property(lambda self: gw)), \
                mock.patch.object(rds.DBInstance, "__init__", on_bridge):
            yield


@pytest.fixture
def rehearsal(tmp_path: Path, aws_env: dict[str, str],
              rds_standin: Any) -> Iterator[dict[str, Any]]:  # noqa: F811
    """The FakeInstance (moto describes it), the edge, and the files the run needs."""
    missing = missing_binaries()
    require(not missing, f"rehearsal prerequisites ({', '.join(missing)})")
    require(os.geteuid() == 0, "root (sshd on a 127.x address, a mount namespace)")
    need_chromium()
    require_binary("unshare")
    ensure_images()
    _worker_images()
    import moto.ec2.models.elastic_network_interfaces as eni

    inst = FakeInstance(pick_address(), tmp_path / "instance", aws_env=aws_env,
                        unit_dir=tmp_path / "systemd")
    moto_port = int(aws_env["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    with inst, moto_points_at(inst), bridge_forward(moto_port) as s3_port, \
            _rds_on_the_bridge(rds_standin), \
            mock.patch.object(eni, "random_public_ip", lambda: inst.address):
        edge_addr = _edge_address()
        edge, ca = _start_edge(tmp_path / "edge", edge_addr, inst.address, 80)
        remote_dir = tmp_path / "opt" / "elematrix"
        _media_worker_reaches_moto(remote_dir, s3_port)
        try:
            hosts = tmp_path / "hosts"
            hosts.write_text(Path("/etc/hosts").read_text() + f"\n{edge_addr} {DOMAIN}\n")
            yield {"instance": inst, "edge": edge_addr, "ca": ca, "hosts": hosts,
                   "remote_dir": str(remote_dir)}
        finally:
            _docker("rm", "-f", edge)


def _media_worker_reaches_moto(remote_dir: Path, s3_port: int) -> None:
    """What the instance role and S3's endpoint are on AWS, for the media worker only: the
    rendered config names the bucket and no endpoint or key (boto3's default chain finds
    the role through IMDS). Here a compose override file in the stack's directory (compose
    reads ``docker-compose.override.yml`` beside ``docker-compose.yml`` when no ``-f`` is
    given, as compose.up runs it) gives that one container boto3's S3 endpoint variable,
    the moto server through ``bridge_forward`` and moto's any-key credentials. Without it
    the S3 storage provider would go to AWS itself and the first upload fails (HTTP 500)."""
    from elematrix_tui.stack.workers import WorkerLayout, workers_of
    from tests.support.worker_stack import S3_HOST

    media = next(w.service for w in workers_of(WorkerLayout())
                 if w.role == "media_repository")
    env = {"AWS_ENDPOINT_URL_S3": f"http://{S3_HOST}:{s3_port}",
           "AWS_ACCESS_KEY_ID": "rehearsal", "AWS_SECRET_ACCESS_KEY": "rehearsal",
           "AWS_EC2_METADATA_DISABLED": "true"}
    remote_dir.mkdir(parents=True, exist_ok=True)
    (remote_dir / "docker-compose.override.yml").write_text(
        f"services:\n  {media}:\n    environment:\n"
        + "".join(f"      {k}: {json.dumps(v)}\n" for k, v in env.items())
        + f"    extra_hosts:\n      - \"{S3_HOST}:host-gateway\"\n")


def _params(r: dict[str, Any]) -> list[str]:
    inst: FakeInstance = r["instance"]
    values = {
        "domain": DOMAIN, "operator_cidr": "127.0.0.1/32",
        "ssh_public_key_path": f"{inst.key_path}.pub",
        "ssh_private_key_path": str(inst.key_path), "ssh_user": inst.user,
        "ssh_port": str(inst.port), "host_key_wait": "0",
        "remote_dir": r["remote_dir"],
        "db_admin_password": ADMIN_PW, "db_wait": "60",
        "redis_host": "redis", "redis_tls": "false",
        "target_poll": "1", "target_wait": "300",
        "ca_file": str(r["ca"].ca_pem),
    }
    return [x for k, v in values.items() for x in ("--set", f"{k}={v}")]


def _in_namespace(hosts: Path, *cmd: str) -> list[str]:
    """``cmd`` in a mount namespace of its own where /etc/hosts names the edge."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/hosts && exec "$@"', str(hosts), *cmd]


def _report(elematrix: str, env: dict[str, str]) -> dict[str, Any]:
    runs = subprocess.run([elematrix, "runs", "--deployment", DEP], env=env,
                          capture_output=True, text=True, check=True).stdout.splitlines()
    run_id = runs[1].split()[0]
    out = subprocess.run([elematrix, "report", run_id, "--format", "json"], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def _step_ids() -> list[str]:
    from elematrix_tui.actions import default_registry
    from elematrix_tui.engine.loader import load_runbook

    rb = load_runbook(RUNBOOKS / "production.yaml", default_registry())
    return [s.id for ph in rb.phases for s in ph.steps + ph.gates]


@pytest.mark.usefixtures("production_moto")
def test_production_runbook_preflight_to_validate_then_teardown_leaves_nothing(
        elematrix: str, rehearsal: dict[str, Any], aws_env: dict[str, str],
        rds_standin: Any) -> None:  # noqa: F811
    import boto3

    inst: FakeInstance = rehearsal["instance"]
    env = {**os.environ, **aws_env, "SSL_CERT_FILE": str(rehearsal["ca"].ca_pem),
           "PYTHONUNBUFFERED": "1"}
    kw: dict[str, Any] = dict(endpoint_url=aws_env["AWS_ENDPOINT_URL"],
                              region_name="us-east-1", aws_access_key_id="x",
                              aws_secret_access_key="x")
    boto3.client("route53", **kw).create_hosted_zone(Name=ZONE, CallerReference="prodr")
    t0 = time.monotonic()
    res = subprocess.run(_in_namespace(rehearsal["hosts"], elematrix, "run",
                                       str(RUNBOOKS / "production.yaml"), "--deployment", DEP,
                                       "--yes", *_params(rehearsal)),
                         env=env, capture_output=True, text=True, timeout=1800)
    run_s = time.monotonic() - t0
    # The run's own summary table (shown with -s, kept by pytest on a failure).
    print(res.stdout[res.stdout.rfind("PHASE "):] if "PHASE " in res.stdout else "")
    assert res.returncode == 0, res.stdout[-8000:] + res.stderr[-3000:]
    report = _report(elematrix, env)
    assert report["status"] == "passed", report["status"]
    status = {s["step"]: s["status"] for s in report["steps"]}
    # Every step ran, but the manual-DNS ones (a Route 53 zone holds the domain).
    # And the data phase's database step: without db_admin_host the instance creates it.
    skipped = {k for k, v in status.items() if v == "skipped"}
    assert skipped == {"validation_manual", "domain_manual", "synapse_database"}, skipped
    assert set(_step_ids()) <= {k for k, v in status.items() if v in ("ok", "changed",
                                                                       "skipped")}, status
    gates = {g["gate_id"]: g["passed"] for g in report["gates"]}
    assert gates == {"posture": True, "instance_posture": True, "routes": True,
                     "federation": True, "e2ee": True, "browser": True,
                     "monitored": True, "closed_posture": True}, gates
    said = {g["gate_id"]: g["message"] or "" for g in report["gates"]}
    assert "route classes answered by the mapped workers" in said["routes"], said
    assert said["browser"] == "Element's page is a secure context with WebCrypto", said
    # The edge's posture and the instance's (6 checks), all passed, in the output.
    assert "11 checks passed" in res.stdout or "10 checks passed" in res.stdout
    assert "6 checks passed" in res.stdout
    # Synapse was reached over the instance's address, through the ALB stand-in over TLS.
    assert f"https://{DOMAIN}" in res.stdout
    # The host the synapse phase used is the instance the instances phase launched.
    ec2 = boto3.client("ec2", **kw)
    insts = [i for r in ec2.describe_instances(Filters=[
        {"Name": "tag:elematrix:deployment", "Values": [DEP]}])["Reservations"]
        for i in r["Instances"]]
    assert len(insts) == 1 and insts[0]["PublicIpAddress"] == inst.address, insts
    # The monitor phase: every set's alarms (the instance, the ALB and its target, RDS) on
    # the topic, the CloudWatch agent installed and started through Session Manager.
    assert all(status[s] in ("ok", "changed") for s in (
        "ssm_ready", "cw_agent_install", "cw_agent_start")), status
    alarms = boto3.client("cloudwatch", **kw).describe_alarms(
        AlarmNamePrefix=f"elematrix-{DEP}-")["MetricAlarms"]
    assert len(alarms) == alarm_count(["instance", "alb", "rds"]), alarms
    assert {d["Value"] for a in alarms for d in a["Dimensions"]
            if d["Name"] == "InstanceId"} == {insts[0]["InstanceId"]}
    # The last phase closed SSH: the instance's SSH group admits nothing (its app group, the
    # ALB's group only: the edge's posture gate).
    ssh_sg = next(g for g in ec2.describe_security_groups(Filters=[
        {"Name": "group-name", "Values": [f"elematrix-{DEP}-ssh"]}])["SecurityGroups"])
    assert ssh_sg["IpPermissions"] == [], ssh_sg
    elb = boto3.client("elbv2", **kw)
    # This deployment's target group by its name: moto's backends are the process's (CI once
    # found another test's, with its own instance, first in the list).
    tg = elb.describe_target_groups(Names=[f"{DEP[:29]}-tg"])["TargetGroups"][0][
        "TargetGroupArn"]
    health = elb.describe_target_health(TargetGroupArn=tg)["TargetHealthDescriptions"]
    assert [(h["Target"]["Id"], h["TargetHealth"]["State"]) for h in health] == \
        [(insts[0]["InstanceId"], "healthy")]
    # Synapse and its workers ran on the instance (the FakeInstance's compose project).
    ps = inst.compose("ps", "--format", "{{.Service}}").stdout
    services = set(ps.split())
    assert {"synapse", "nginx", "redis"} <= services and "postgres" not in services
    assert any(s.startswith("synapse-sync") for s in services), services
    # Synapse's data is on "RDS": its synapse database, UTF8/C/C (created from the
    # instance) and owned by the synapse role, holds the accounts the gates registered (the
    # gate purges its room, and deactivated users keep their rows).
    assert rds_standin.psql("SELECT pg_encoding_to_char(encoding) || '/' || datcollate || "
                            "'/' || datctype || '/' || pg_get_userbyid(datdba) FROM "
                            "pg_database WHERE datname = 'synapse'") == "UTF8/C/C/synapse"
    assert int(rds_standin.psql("SELECT count(*) FROM users", db="synapse")) >= 2
    # The E2EE gate's media check uploaded through the media worker into the bucket the
    # data phase made (the S3 storage provider, store_synchronous).
    s3 = boto3.client("s3", **kw)
    # This deployment's bucket: moto's backends are the process's, and other tests' buckets
    # (the worker stack's media bucket) may be there too.
    bucket = next(b["Name"] for b in s3.list_buckets()["Buckets"]
                  if b["Name"].startswith(f"elematrix-{DEP}-media-"))
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) >= 1, bucket
    # The secrets stay out of the output.
    assert ADMIN_PW not in res.stdout + res.stderr
    # The joined runbook converges: a plan now finds the instance, its groups, its target
    # registration and the edge in place (nothing would be launched or registered again);
    # the SSH group alone changes: the next run reopens it for its host steps (and closes
    # it again at the end).
    plan = subprocess.run(_in_namespace(rehearsal["hosts"], elematrix, "plan",
                                        str(RUNBOOKS / "production.yaml"), "--json",
                                        "--deployment", DEP, *_params(rehearsal)),
                          env=env, capture_output=True, text=True, timeout=600)
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    planned = {s["id"]: s for ph in json.loads(plan.stdout)["phases"] for s in ph["steps"]}
    for step in ("key_pair", "instance", "targets", "target_group",
                 "load_balancer", "listeners", "upload", "alarms", "alerts_topic"):
        assert planned[step]["symbol"] == "=" and not planned[step]["changes"], planned[step]
    assert planned["ssh_sg"]["changes"] == [f"allow tcp/{inst.port} from 127.0.0.1/32"], \
        planned["ssh_sg"]

    t1 = time.monotonic()
    td = subprocess.run([elematrix, "run", str(RUNBOOKS / "teardown.yaml"), "--yes",
                         "--deployment", DEP, "--set", "managed_services=true",
                         "--set", f"confirm_deployment={DEP}", "--set", "termination_wait=60"],
                        env=env, capture_output=True, text=True, timeout=600)
    td_s = time.monotonic() - t1
    assert td.returncode == 0, td.stdout[-6000:] + td.stderr[-3000:]
    assert "deregistered i-" in td.stdout, td.stdout[-3000:]
    left = {k: v for k, v in _left({"AWS_ENDPOINT_URL": aws_env["AWS_ENDPOINT_URL"]},
                                    DEP).items() if v}
    assert left == {}, left
    print(f"production rehearsal: lock wait {inst.lock_wait_s:.1f} s, run {run_s:.1f} s, "
          f"teardown {td_s:.1f} s")
