"""The production kinds and actions one by one (in-process moto; a native PostgreSQL for
``postgres.create_database``): what check() reports, and the refusals."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from elematrix_tui.actions.aws import Ensure
from elematrix_tui.engine.action import ActionFailed

from .production_gaps import production_moto  # noqa: F401 - a fixture

pytestmark = pytest.mark.usefixtures("moto")

ZONES = ["us-east-1a", "us-east-1b"]


def test_the_vpc_is_planned_built_in_two_zones_then_in_sync(ctx: Any) -> None:
    name = f"elematrix-{ctx.deployment}"
    inputs = {"kind": "vpc", "name": name, "spec": {"availability_zones": ZONES}}
    plan = ctx.check(Ensure(), inputs)
    assert plan.in_sync is False and plan.creates
    assert "create private subnet 10.42.8.0/24 in us-east-1a (no internet route)" in plan.changes
    out = ctx.run(Ensure(), inputs).outputs
    subs = boto3.client("ec2").describe_subnets(SubnetIds=out["public_subnet_ids"]
                                                + out["private_subnet_ids"])["Subnets"]
    assert sorted({s["AvailabilityZone"] for s in subs}) == ZONES and len(subs) == 4
    assert ctx.check(Ensure(), inputs).in_sync is True
    assert ctx.run(Ensure(), inputs).status == "ok"
    # The operator's own subnets must span two zones: one zone is refused, naming it.
    one = {"kind": "vpc", "name": name, "spec": {
        "availability_zones": ZONES, "vpc_id": out["vpc_id"],
        "public_subnet_ids": [out["public_subnet_ids"][0], out["private_subnet_ids"][0]],
        "private_subnet_ids": out["private_subnet_ids"]}}
    with pytest.raises(ActionFailed) as e:
        ctx.check(Ensure(), one)
    assert "span 2 availability zones (they are in us-east-1a)" in e.value.message


def test_a_load_balancer_name_over_32_characters_is_refused_before_any_call(ctx: Any) -> None:
    with pytest.raises(ActionFailed) as e:
        ctx.check(Ensure(), {"kind": "load_balancer", "name": "x" * 33, "spec": {
            "subnet_ids": ["subnet-1", "subnet-2"], "security_group_ids": ["sg-1"],
            "access_logs_bucket": "b"}})
    assert "33 characters; ELB allows 32" in e.value.message


def test_an_rds_instance_of_another_deployment_is_never_adopted(ctx: Any) -> None:
    name = f"elematrix-{ctx.deployment}"
    boto3.client("rds").create_db_instance(
        DBInstanceIdentifier=name, Engine="postgres", DBInstanceClass="db.t4g.medium",
        AllocatedStorage=20, MasterUsername="x", MasterUserPassword="y" * 16,
        Tags=[{"Key": "elematrix:deployment", "Value": "someone-else"}])
    with pytest.raises(ActionFailed) as e:
        ctx.check(Ensure(), {"kind": "rds_postgres", "name": name, "spec": {
            "subnet_group": "g", "security_group_ids": ["sg-1"],
            "master_password": "p" * 32}})
    assert "not tagged for deployment" in e.value.message


def test_redis_auth_token_rules_are_checked_when_the_runbook_is_validated() -> None:
    from pydantic import ValidationError

    from elematrix_tui.actions.aws_kinds import RedisSpec

    for bad in ("short", "has/slash" * 3, 'q"uote' * 4, "with space" * 2):
        with pytest.raises(ValidationError):
            RedisSpec(subnet_group="g", security_group_ids=["sg-1"], auth_token=bad)


@pytest.fixture
def pg() -> Iterator[Any]:
    from ..support.services import Postgres, missing_binaries

    if missing_binaries():
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL binaries missing: {missing_binaries()}")
        pytest.skip("PostgreSQL binaries missing")
    p = Postgres(initdb_args=("--encoding=UTF8", "--locale=C.UTF-8")).start()
    yield p
    p.stop()


def test_an_existing_database_with_the_wrong_locale_fails_before_synapse_starts(
        pg: Any, tmp_path: Any) -> None:
    """A database someone created with the server's default locale (C.UTF-8 here, RDS's
    en_US.UTF-8): the plan names it and the step fails without retry, keeping it."""
    from elematrix_tui.actions.postgres_create import CreateDatabase
    from elematrix_tui.engine.standalone import StandaloneContext

    pg.psql("CREATE DATABASE synapse")
    ctx = StandaloneContext(deployment_dir=tmp_path, deployment="pgt", run_id="r1", params={})
    inputs = {"host": "local", "db_host": pg.host, "db_port": pg.port, "sslmode": "disable",
              "admin_user": "postgres", "admin_password": "unused-trust-auth",
              "owner_password": "o" * 32}
    plan = ctx.check(CreateDatabase(), inputs)
    assert plan.in_sync is False
    assert "collate is 'C.UTF-8', Synapse needs 'C'" in plan.changes
    with pytest.raises(ActionFailed) as e:
        ctx.run(CreateDatabase(), inputs)
    assert "wrong locale" in e.value.message and e.value.retry is False
    assert pg.psql("SELECT 1 FROM pg_database WHERE datname = 'synapse'") == "1"
    ctx.close()


def test_a_server_with_too_few_connections_for_the_layout_fails_before_anything_is_made(
        pg: Any, tmp_path: Any) -> None:
    """The layout's processes (stack.render_workers' db_connections) against what the
    server leaves an ordinary role (max_connections less the reserved slots): too many is
    named by the plan and refused by the step, which then creates nothing; what the
    default layout needs fits the server's default (100 less 3 reserved)."""
    from elematrix_tui.actions.postgres_create import CreateDatabase
    from elematrix_tui.engine.standalone import StandaloneContext
    from elematrix_tui.stack.workers import WorkerLayout, db_connections

    ctx = StandaloneContext(deployment_dir=tmp_path, deployment="pgc", run_id="r1", params={})
    base = {"host": "local", "db_host": pg.host, "db_port": pg.port, "sslmode": "disable",
            "admin_user": "postgres", "admin_password": "unused-trust-auth",
            "owner_password": "o" * 32}
    big = db_connections(WorkerLayout(sync=16, client_reader=8))
    plan = ctx.check(CreateDatabase(), {**base, "need_connections": big})
    assert f"the server allows 97 connections to a role that is no superuser; Synapse's " \
           f"processes may hold {big}" in plan.changes, plan.changes
    with pytest.raises(ActionFailed) as e:
        ctx.run(CreateDatabase(), {**base, "need_connections": big})
    assert "a larger db_class" in e.value.fix and e.value.retry is False
    assert pg.psql("SELECT count(*) FROM pg_database WHERE datname = 'synapse'") == "0"
    assert pg.psql("SELECT count(*) FROM pg_roles WHERE rolname = 'synapse'") == "0"
    default = db_connections(WorkerLayout())
    assert default == 90
    res = ctx.run(CreateDatabase(), {**base, "need_connections": default})
    assert res.status == "changed" and res.outputs["created"] is True
    ctx.close()


def test_the_preflight_refuses_a_deployment_name_rds_and_elasticache_would_refuse(
        ctx: Any) -> None:
    from elematrix_tui.actions.aws_production import ProductionPreflight

    ctx.deployment = "bad--name"
    with pytest.raises(ActionFailed) as e:
        ctx.run(ProductionPreflight(), {"domain": "matrix.example.com"})
    assert "holds '--'" in e.value.message and e.value.retry is False


@pytest.mark.usefixtures("production_moto")
def test_targets_register_once_and_health_needs_real_passing_checks(
        ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``targets`` kind registers the instance (then is in sync); the target is healthy
    only after five real GETs of the health path answered 200 at its loopback address
    (production_gaps 6; moto alone says healthy at once), unhealthy after two failures."""
    import http.server
    import threading

    from moto.ec2.models import elastic_network_interfaces as eni

    monkeypatch.setattr(eni, "random_public_ip", lambda: "127.0.0.1")
    ec2, elb = boto3.client("ec2"), boto3.client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    sub = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    iid = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, NetworkInterfaces=[
        {"DeviceIndex": 0, "SubnetId": sub, "AssociatePublicIpAddress": True}])[
        "Instances"][0]["InstanceId"]
    codes = [503]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(codes[0] if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        tg = elb.create_target_group(Name="t-tg", Protocol="HTTP", Port=srv.server_port,
                                     VpcId=vpc, HealthCheckPath="/health")[
            "TargetGroups"][0]["TargetGroupArn"]
        inputs = {"kind": "targets", "name": "t", "spec": {"target_group_arn": tg,
                                                           "instance_ids": [iid]}}
        plan = ctx.check(Ensure(), inputs)
        assert plan.in_sync is False and plan.changes == [f"register {iid} in {tg}"]
        assert ctx.run(Ensure(), inputs).status == "changed"
        assert ctx.check(Ensure(), inputs).in_sync is True

        def state() -> str:
            return str(elb.describe_target_health(TargetGroupArn=tg)[
                "TargetHealthDescriptions"][0]["TargetHealth"]["State"])

        # Every DescribeTargetHealth is one check (find() made two already): failing.
        assert [state(), state()] == ["unhealthy", "unhealthy"]
        codes[0] = 200
        assert [state() for _ in range(5)] == ["initial"] * 4 + ["healthy"]
    finally:
        srv.shutdown()
