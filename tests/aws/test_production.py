"""The production runbook's AWS side (issue 16) through the real ``elematrix`` command,
against a moto server on 127.0.0.1, then its teardown; bad input; the manual-DNS wait.

Stand-ins, each no kinder than what it replaces (docs/production.md):
- AWS: moto, with the gaps of ``production_gaps`` made as strict as AWS.
- RDS's endpoint: a native PostgreSQL on 127.0.0.1 (moto's DB instance reports its address
  and port), initialised with the locale C.UTF-8 (RDS's default, en_US.UTF-8, is not on
  these machines; Synapse refuses both), a master role that is no superuser (like RDS's),
  password authentication (the fixture's trust auth is replaced) and TLS required (a
  self-signed certificate; plain connections are rejected, as with rds.force_ssl=1).
- Public DNS: a DNS server on 127.0.0.1 (``tests/support/dnsserver.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.engine.action import ActionFailed
from elematrix_tui.practice_dlm import ENV_ENDPOINT as DLM_ENDPOINT

from ..support.dnsserver import dns_server
from .conftest import FAKE_ENV
from .production_gaps import production_moto  # noqa: F401 - a fixture
from .test_cli import elematrix

RUNBOOKS = runbooks_dir()
DOMAIN = "matrix.example.com"
DEP = "prodt"
ADMIN_PW = "Rds0Master0Password0For0Tests000"
PHASES = ("preflight", "network", "data", "edge", "instances")
# The instances' SSH source (a loopback CIDR: nobody could reach a moto instance anyway).
OPERATOR = ("--set", "operator_cidr=127.0.0.1/32")


@pytest.fixture
def cli_env(moto_server: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") or k == DLM_ENDPOINT}
    env.update(FAKE_ENV)
    env.update({"AWS_ENDPOINT_URL": moto_server,
                "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
                "ELEMATRIX_STATE_DIR": str(tmp_path / "state"),
                "HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"})
    (tmp_path / "home").mkdir()
    return env


def _client(env: dict[str, str], service: str) -> Any:
    return boto3.client(service, region_name="us-east-1", endpoint_url=env["AWS_ENDPOINT_URL"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def rds_standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A native PostgreSQL that moto's RDS instances point at (see the module docstring)."""
    from moto.rds import models as rds

    from ..support.services import PG_BIN, Postgres, missing_binaries

    missing = missing_binaries()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL binaries missing: {missing}")
        pytest.skip(f"PostgreSQL binaries missing: {missing}")
    pg = Postgres(initdb_args=("--encoding=UTF8", "--locale=C.UTF-8")).start()
    try:
        pg.psql(f"CREATE ROLE elematrix LOGIN CREATEROLE CREATEDB PASSWORD '{ADMIN_PW}'")
        # TLS required for everyone but the fixture's own superuser, as rds.force_ssl=1.
        key, crt = pg.data_dir / "server.key", pg.data_dir / "server.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                        "1", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(crt)],
                       check=True, capture_output=True, timeout=60)
        for f in (key, crt):
            shutil.chown(f, *(("postgres", "postgres") if os.geteuid() == 0 else (None, None)))
            f.chmod(0o600)
        pg.psql(f"ALTER SYSTEM SET ssl_cert_file = '{crt}'")
        pg.psql(f"ALTER SYSTEM SET ssl_key_file = '{key}'")
        pg.psql("ALTER SYSTEM SET ssl = on")
        hba = pg.data_dir / "pg_hba.conf"
        hba.write_text("host all postgres 127.0.0.1/32 trust\n"
                       "hostssl all all 127.0.0.1/32 scram-sha-256\n"
                       "hostnossl all all 127.0.0.1/32 reject\n")
        pg.psql("SELECT pg_reload_conf()")
        plain = subprocess.run(
            [str(PG_BIN / "psql"), f"host={pg.host} port={pg.port} user=elematrix "
             "dbname=postgres sslmode=disable", "-c", "SELECT 1"], capture_output=True,
            text=True, timeout=30, env={**os.environ, "PGPASSWORD": ADMIN_PW})
        assert plain.returncode != 0 and "no encryption" in plain.stderr, plain.stderr
        monkeypatch.setattr(rds.DBInstance, "address", property(lambda self: pg.host))
        orig = rds.DBInstance.__init__

        def init(self: Any, *a: Any, **kw: Any) -> None:
            orig(self, *a, **kw)
            self.port = pg.port

        monkeypatch.setattr(rds.DBInstance, "__init__", init)
        yield pg
    finally:
        pg.stop()


def _run(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    phases = [a for p in PHASES for a in ("--phase", p)]
    return elematrix(env, "run", str(RUNBOOKS / "production.yaml"), *phases, "--yes",
                     "--deployment", DEP, "--set", f"domain={DOMAIN}",
                     "--set", "db_admin_host=local",
                     "--set", f"db_admin_password={ADMIN_PW}", "--set", "db_wait=60",
                     "--set", "host_key_wait=0", *OPERATOR, *extra, timeout=600)


def _left(env: dict[str, str], dep: str = DEP) -> dict[str, list[str]]:
    """Every resource of the kinds the runbook creates that carries the deployment tag (or,
    for untaggable Route 53 records, anything but the zone's own NS/SOA), by plain boto3."""
    flt = [{"Name": "tag:elematrix:deployment", "Values": [dep]}]
    ec2 = _client(env, "ec2")
    out: dict[str, list[str]] = {
        "vpc": [v["VpcId"] for v in ec2.describe_vpcs(Filters=flt)["Vpcs"]],
        "subnet": [s["SubnetId"] for s in ec2.describe_subnets(Filters=flt)["Subnets"]],
        "igw": [g["InternetGatewayId"] for g in ec2.describe_internet_gateways(
            Filters=flt)["InternetGateways"]],
        "route_table": [r["RouteTableId"] for r in ec2.describe_route_tables(
            Filters=flt)["RouteTables"]],
        "security_group": [g["GroupId"] for g in ec2.describe_security_groups(
            Filters=flt)["SecurityGroups"]],
        "instance": [i["InstanceId"] for r in ec2.describe_instances(Filters=flt)[
            "Reservations"] for i in r["Instances"] if i["State"]["Name"] != "terminated"],
        "key_pair": [k["KeyName"] for k in ec2.describe_key_pairs(Filters=flt)["KeyPairs"]],
        "volume": [v["VolumeId"] for v in ec2.describe_volumes(Filters=flt)["Volumes"]],
    }
    elb = _client(env, "elbv2")
    out["load_balancer"] = [x["LoadBalancerArn"] for x in
                            elb.describe_load_balancers()["LoadBalancers"]]
    out["target_group"] = [x["TargetGroupArn"] for x in
                           elb.describe_target_groups()["TargetGroups"]]
    out["target"] = [f"{x} {d['Target']['Id']}" for x in out["target_group"]
                     for d in elb.describe_target_health(TargetGroupArn=x)[
                         "TargetHealthDescriptions"]]
    out["certificate"] = [c["CertificateArn"] for c in _client(env, "acm").list_certificates()[
        "CertificateSummaryList"]]
    rds = _client(env, "rds")
    out["db_instance"] = [d["DBInstanceIdentifier"] for d in
                          rds.describe_db_instances()["DBInstances"]]
    out["db_subnet_group"] = [g["DBSubnetGroupName"] for g in
                              rds.describe_db_subnet_groups()["DBSubnetGroups"]]
    ec = _client(env, "elasticache")
    out["redis"] = [g["ReplicationGroupId"] for g in
                    ec.describe_replication_groups()["ReplicationGroups"]]
    out["cache_subnet_group"] = [g["CacheSubnetGroupName"] for g in
                                 ec.describe_cache_subnet_groups()["CacheSubnetGroups"]]
    out["bucket"] = [b["Name"] for b in _client(env, "s3").list_buckets()["Buckets"]
                     if b["Name"].startswith(f"elematrix-{dep}-")]
    iam = _client(env, "iam")
    out["role"] = [r["RoleName"] for r in iam.list_roles()["Roles"]
                   if r["RoleName"].startswith(f"elematrix-{dep}-")]
    out["instance_profile"] = [p["InstanceProfileName"] for p in
                               iam.list_instance_profiles()["InstanceProfiles"]
                               if p["InstanceProfileName"].startswith(f"elematrix-{dep}-")]
    # The monitor phase's: alarms, the topic, the CloudWatch agent's parameter.
    out["alarm"] = [a["AlarmName"] for a in _client(env, "cloudwatch").describe_alarms(
        AlarmNamePrefix=f"elematrix-{dep}-")["MetricAlarms"]]
    out["topic"] = [t["TopicArn"] for t in _client(env, "sns").list_topics()["Topics"]
                    if t["TopicArn"].rsplit(":", 1)[-1].startswith(f"elematrix-{dep}-")]
    out["ssm_parameter"] = [x["Name"] for x in _client(env, "ssm").describe_parameters(
        ParameterFilters=[{"Key": "Name", "Option": "BeginsWith",
                           "Values": [f"AmazonCloudWatch-elematrix-{dep}"]}])["Parameters"]]
    r53 = _client(env, "route53")
    out["dns_record"] = [f"{z['Name']} {r['Type']} {r['Name']}"
                         for z in r53.list_hosted_zones()["HostedZones"]
                         for r in r53.list_resource_record_sets(HostedZoneId=z["Id"])[
                             "ResourceRecordSets"] if r["Type"] not in ("NS", "SOA")]
    return out


def _secrets_in(paths: list[Path], texts: list[str], secrets: list[str]) -> list[str]:
    found = []
    for s in secrets:
        for t in texts:
            if s in t:
                found.append(f"{s[:4]}... in output")
        for p in paths:
            if s.encode() in p.read_bytes():
                found.append(f"{s[:4]}... in {p}")
    return found


@pytest.mark.usefixtures("production_moto")
def test_production_aws_side_runs_passes_its_posture_gate_and_tears_down_to_nothing(
        cli_env: dict[str, str], rds_standin: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.elasticache import models as ec_models

    # moto keeps no AUTH token: note the one the runbook sends (to look for it later).
    tokens: list[str] = []
    orig = ec_models.ReplicationGroup.__init__

    def spy(self: Any, *a: Any, **kw: Any) -> None:
        tokens.append(kw.get("auth_token") or "")
        orig(self, *a, **kw)

    monkeypatch.setattr(ec_models.ReplicationGroup, "__init__", spy)
    r53 = _client(cli_env, "route53")
    zone = r53.create_hosted_zone(Name="example.com", CallerReference="prodt-test")
    zone_id = zone["HostedZone"]["Id"].rsplit("/", 1)[-1]
    before = _left(cli_env)
    assert all(not v for v in before.values()), before
    # The first plan, before anything exists: it runs and creates nothing.
    first = elematrix(cli_env, "plan", str(RUNBOOKS / "production.yaml"), "--json",
                      "--deployment", DEP, "--set", f"domain={DOMAIN}", *OPERATOR)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    planned = {s["id"]: s for ph in json.loads(first.stdout)["phases"] for s in ph["steps"]}
    assert planned["preflight"]["symbol"] != "!" and planned["vpc"]["symbol"] in ("+", "?")
    assert _left(cli_env) == before

    r = _run(cli_env)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    out = r.stdout
    # The dated estimate names ALB, RDS, ElastiCache and public IPv4.
    for line in ("ALB (1 load balancer", "RDS PostgreSQL db.t4g.medium", "ElastiCache 2 x",
                 "public IPv4: 3", "list prices for us-east-1 on 2026-12-01",
                 "CloudWatch 9 alarms"):
        assert line in out, line
    assert "10 checks passed" in out or "11 checks passed" in out, out[-3000:]

    # What AWS now holds, read independently of the actions.
    rds = _client(cli_env, "rds").describe_db_instances()["DBInstances"][0]
    assert (rds["StorageEncrypted"], rds["PubliclyAccessible"], rds["DeletionProtection"],
            rds["BackupRetentionPeriod"], rds["MultiAZ"]) == (True, False, True, 7, False)
    elb = _client(cli_env, "elbv2")
    lb = elb.describe_load_balancers()["LoadBalancers"][0]
    ls = {x["Port"]: x for x in elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])[
        "Listeners"]}
    assert ls[443]["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09"
    assert ls[80]["DefaultActions"][0]["RedirectConfig"]["StatusCode"] == "HTTP_301"
    rules = elb.describe_rules(ListenerArn=ls[443]["ListenerArn"])["Rules"]
    admin = [x for x in rules if not x["IsDefault"]]
    assert admin[0]["Actions"][0]["FixedResponseConfig"]["StatusCode"] == "404"
    # The Synapse host, read back: in the first public subnet with a public IPv4, IMDSv2
    # required (hop 2), an encrypted gp3 root volume, the media-bucket profile, the app
    # group (ALB only) and the SSH group (the operator only), the POC's user-data, and
    # registered in the target group.
    ec2 = _client(cli_env, "ec2")
    vpc_id = _client(cli_env, "ec2").describe_vpcs(Filters=[
        {"Name": "tag:elematrix:deployment", "Values": [DEP]}])["Vpcs"][0]["VpcId"]
    inst = [i for r in ec2.describe_instances(Filters=[
        {"Name": "tag:elematrix:deployment", "Values": [DEP]}])["Reservations"]
        for i in r["Instances"]]
    assert len(inst) == 1, inst
    i = inst[0]
    public = {sn["SubnetId"] for sn in ec2.describe_subnets(Filters=[
        {"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"] if sn["MapPublicIpOnLaunch"]
        or any(t["Key"] == "Name" and "public" in t["Value"] for t in sn.get("Tags", []))}
    assert i["SubnetId"] in public and i.get("PublicIpAddress"), (i["SubnetId"], public)
    assert i["MetadataOptions"]["HttpTokens"] == "required"
    # 2, not the POC's 1: the media worker's container takes the role for S3 (a hop
    # further); with 1 it gets no credentials on a real instance.
    assert i["MetadataOptions"]["HttpPutResponseHopLimit"] == 2
    vol = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id",
                                         "Values": [i["InstanceId"]]}])["Volumes"][0]
    assert (vol["Encrypted"], vol["VolumeType"]) == (True, "gp3")
    assert i["IamInstanceProfile"]["Arn"].endswith(f"/elematrix-{DEP}-app")
    groups = {g["GroupName"]: g["GroupId"] for n in i["NetworkInterfaces"] for g in n["Groups"]}
    assert len(i["NetworkInterfaces"]) == 1
    assert set(groups) == {f"elematrix-{DEP}-app", f"elematrix-{DEP}-ssh"}, groups
    ssh = ec2.describe_security_groups(GroupIds=[groups[f"elematrix-{DEP}-ssh"]])[
        "SecurityGroups"][0]["IpPermissions"]
    assert [(p["FromPort"], [r["CidrIp"] for r in p["IpRanges"]]) for p in ssh] == \
        [(22, ["127.0.0.1/32"])]
    from base64 import b64decode

    from elematrix_tui.actions.aws_kinds.base import asset_text

    ud = ec2.describe_instance_attribute(InstanceId=i["InstanceId"], Attribute="userData")
    assert b64decode(ud["UserData"]["Value"]).decode() == asset_text("cloud-init/user-data.yaml")
    tgs = elb.describe_target_groups()["TargetGroups"]
    health = elb.describe_target_health(TargetGroupArn=tgs[0]["TargetGroupArn"])[
        "TargetHealthDescriptions"]
    assert [h["Target"]["Id"] for h in health] == [i["InstanceId"]]
    # Nothing answers the health check here: the target is not healthy (production_gaps 6).
    assert health[0]["TargetHealth"]["State"] in ("initial", "unhealthy"), health
    assert "7 checks passed" in out or "6 checks passed" in out, out[-3000:]
    records = {(x["Type"], x["Name"]) for x in r53.list_resource_record_sets(
        HostedZoneId=zone_id)["ResourceRecordSets"]}
    assert ("A", f"{DOMAIN}.") in records and any(t == "CNAME" for t, _ in records)
    # The Synapse database, on the stand-in, as Synapse will read it.
    assert rds_standin.psql("SELECT pg_encoding_to_char(encoding) || '/' || datcollate || "
                            "'/' || datctype FROM pg_database WHERE datname = current_database()",
                            db="synapse") == "UTF8/C/C"
    # The secrets never reach the output, the journal or the plan.
    assert len(tokens) == 1 and len(tokens[0]) == 48
    token = tokens[0]
    plan = elematrix(cli_env, "plan", str(RUNBOOKS / "production.yaml"), "--json",
                     "--deployment", DEP,
                     "--set", f"domain={DOMAIN}", "--set", "db_admin_host=local", *OPERATOR)
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-2000:]
    journals = [p for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert not _secrets_in(journals, [out, r.stderr, plan.stdout, plan.stderr],
                           [ADMIN_PW, token])
    # A plan after the run: every resource step's check() finds it in place.
    steps = {s["id"]: s for ph in json.loads(plan.stdout)["phases"] for s in ph["steps"]}
    for step in ("vpc", "alb_sg", "app_sg", "db_subnets", "database", "cache_subnets", "redis",
                 "media_bucket", "instance_role", "certificate", "validation_route53",
                 "logs_bucket", "target_group", "load_balancer", "listeners",
                 "domain_route53", "synapse_database", "key_pair", "ssh_sg", "instance",
                 "targets"):
        assert steps[step]["symbol"] == "=" and not steps[step]["changes"], steps[step]

    # Drift on the posture (someone weakened the TLS policy and made RDS public): the plan
    # names it, and running the phases again converges it, creating nothing new.
    elb.modify_listener(ListenerArn=ls[443]["ListenerArn"], SslPolicy="ELBSecurityPolicy-2016-08")
    _client(cli_env, "rds").modify_db_instance(DBInstanceIdentifier=f"elematrix-{DEP}",
                                               PubliclyAccessible=True, ApplyImmediately=True)
    drift = elematrix(cli_env, "plan", str(RUNBOOKS / "production.yaml"), "--json",
                      "--deployment", DEP, "--set", f"domain={DOMAIN}",
                      "--set", "db_admin_host=local", *OPERATOR)
    steps = {s["id"]: s for ph in json.loads(drift.stdout)["phases"] for s in ph["steps"]}
    assert "TLS policy ELBSecurityPolicy-2016-08 -> ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09" \
        in steps["listeners"]["changes"], steps["listeners"]
    assert "set PubliclyAccessible True -> False" in steps["database"]["changes"]
    counts = {k: len(v) for k, v in _left(cli_env).items()}
    again = _run(cli_env)
    assert again.returncode == 0, again.stdout[-4000:]
    assert {k: len(v) for k, v in _left(cli_env).items()} == counts
    assert elb.describe_listeners(ListenerArns=[ls[443]["ListenerArn"]])["Listeners"][0][
        "SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09"

    # Teardown without the typed confirmation: the data stores stay (RDS and the buckets),
    # and so does what the kept database stands in; everything else goes.
    td = elematrix(cli_env, "run", str(RUNBOOKS / "teardown.yaml"), "--yes", "--deployment", DEP,
                   "--set", "managed_services=true", "--set", "termination_wait=60",
                   timeout=600)
    assert td.returncode == 0, td.stdout[-4000:] + td.stderr[-3000:]
    first_td = td.stdout
    kept = {k: len(v) for k, v in _left(cli_env).items() if v}
    assert kept == {"db_instance": 1, "db_subnet_group": 1, "security_group": 1, "vpc": 1,
                    "subnet": 4, "igw": 1, "route_table": 1, "bucket": 2}, kept
    assert "keep db instance elematrix-prodt (holds the Synapse database" in td.stdout
    # The instance left the target group explicitly before the group and it were deleted.
    assert "deregistered i-" in td.stdout and "instance i-" in td.stdout, td.stdout[-3000:]

    # Teardown: everything the runbook created, RDS included (typed confirmation).
    td = elematrix(cli_env, "run", str(RUNBOOKS / "teardown.yaml"), "--yes", "--deployment", DEP,
                   "--set", "managed_services=true", "--set", f"confirm_deployment={DEP}",
                   "--set", "termination_wait=60", timeout=600)
    assert td.returncode == 0, td.stdout[-4000:] + td.stderr[-3000:]
    left = {k: v for k, v in _left(cli_env).items() if v}
    assert left == {}, left
    # docs/aws.md points operators at the operator policy: it allows every call made.
    _assert_policy_covers([out, again.stdout, first_td, td.stdout])
    with sqlite3.connect(next(p for p in journals if p.suffix in (".db", ".sqlite"))) as db:
        assert db.execute("SELECT 1").fetchone() == (1,)


def _assert_policy_covers(outputs: list[str]) -> None:
    """Every ``aws svc.op ->`` line the runs printed names a permission the policy grants."""
    import re

    from elematrix_tui.actions.aws_errors import iam_action
    from elematrix_tui.actions.aws_policy import operator_policy

    # IAM action names are case-insensitive (rds:CreateDBInstance = rds:CreateDbInstance).
    allowed = {a.lower() for st in operator_policy("us-east-1")["Statement"] for a in
               ([st["Action"]] if isinstance(st["Action"], str) else st["Action"])}
    used = set()
    for text in outputs:
        for svc, op in re.findall(r"\baws ([a-z0-9-]+)\.([a-z_]+) -> ", text):
            api = "".join(p.capitalize() for p in op.split("_"))
            used.update(a.lower() for a in iam_action(svc, api).split(" / "))
    assert len(used) > 60
    missing = sorted(used - allowed)
    assert missing == [], " ".join(missing)


def test_a_domain_that_is_not_a_domain_is_a_located_error_exit_2(
        cli_env: dict[str, str], tmp_path: Path) -> None:
    params = tmp_path / "prod.yaml"
    params.write_text("instance_type: t3.large\ndomain: not_a_domain\n")
    for how, where in ((("--params", str(params)), f"{params}:2:9: parameter 'domain'"),
                       (("--set", "domain=matrix.example.com:8448"), "--set: parameter "
                                                                     "'domain'")):
        r = elematrix(cli_env, "run", str(RUNBOOKS / "production.yaml"), "--phase",
                      "preflight", "--yes", "--deployment", "badin", *how)
        text = r.stdout + r.stderr
        assert r.returncode == 2, text
        assert where in text and "Traceback" not in text, text
    # Nothing was written: no journal, no secrets, no deployment.
    assert not [p for p in (tmp_path / "state").rglob("*") if p.is_file()]


def test_manual_dns_prints_the_records_and_waits_until_they_resolve(tmp_path: Path) -> None:
    """``dns.await_records`` against a DNS server on 127.0.0.1: bounded when the record is
    missing (the failure names it), done once the operator has created it."""
    from elematrix_tui.actions.aws_production import AwaitRecords
    from elematrix_tui.engine.standalone import StandaloneContext

    rec = {"name": f"_x1.{DOMAIN}", "type": "CNAME", "value": "_y2.acm-validations.aws."}
    with dns_server() as dns:
        ctx = StandaloneContext(deployment_dir=tmp_path, deployment="dnst", run_id="r1",
                                params={})
        inputs = {"records": [rec], "nameserver": dns.address, "max_wait": 0.5, "delay": 0.1}
        assert ctx.check(AwaitRecords(), inputs).in_sync is False
        with pytest.raises(ActionFailed) as e:
            ctx.run(AwaitRecords(), inputs)
        assert f"CNAME _x1.{DOMAIN}. -> _y2.acm-validations.aws." in e.value.message
        assert dns.queries >= 2
        dns.add(rec["name"], "CNAME", rec["value"])
        assert ctx.check(AwaitRecords(), inputs).in_sync is True
        r = ctx.run(AwaitRecords(), {**inputs, "max_wait": 5})
        assert r.status == "ok" and r.outputs["records"] == [f"_x1.{DOMAIN}."]
        ctx.close()


@pytest.mark.usefixtures("production_moto")
def test_without_route53_the_records_are_printed_and_the_run_waits_until_they_resolve(
        cli_env: dict[str, str]) -> None:
    """hosted_zone_id=none: the edge phase prints the validation CNAME and the domain's
    CNAME and goes on only once the (loopback) name server answers them; ACM issues only
    then (production_gaps 1). The "operator" creates each record after it was printed."""
    import threading
    import time

    from moto.elbv2.models import elbv2_backends

    from .production_gaps import published

    dep = "prodm"
    with dns_server() as dns:
        stop = threading.Event()
        created: list[str] = []

        def operator() -> None:
            # What an operator does at their DNS provider, once the run has printed it.
            from moto.acm.models import acm_backends

            while not stop.wait(0.2) and len(created) < 2:
                for cert in acm_backends["123456789012"]["us-east-1"]._certificates.values():
                    for o in cert.describe()["Certificate"].get("DomainValidationOptions", []):
                        rr = o["ResourceRecord"]
                        if rr["Name"] not in created and rr["Name"].lower() in dns.asked:
                            dns.add(rr["Name"], "CNAME", rr["Value"])
                            published.add((rr["Name"].lower(), rr["Value"].lower()))
                            created.append(rr["Name"])
                for lb in elbv2_backends["123456789012"]["us-east-1"].load_balancers.values():
                    if DOMAIN not in created and f"{DOMAIN}." in dns.asked:
                        dns.add(DOMAIN, "CNAME", lb.dns_name)
                        created.append(DOMAIN)

        t = threading.Thread(target=operator, daemon=True)
        t.start()
        t0 = time.monotonic()
        r = elematrix(cli_env, "run", str(RUNBOOKS / "production.yaml"),
                      *[a for p in PHASES for a in ("--phase", p)], "--yes",
                      "--deployment", dep, "--set", f"domain={DOMAIN}",
                      "--set", "hosted_zone_id=none", "--set", f"dns_nameserver={dns.address}",
                      "--set", "db_wait=60", "--set", "dns_poll=1", "--set", "host_key_wait=0",
                      *OPERATOR, timeout=600)
        stop.set()
        t.join(timeout=5)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    assert "no Route 53 hosted zone holds matrix.example.com" in r.stdout
    assert "create these records at your DNS provider" in r.stdout
    assert f"_d930b28be6c5927595552b219965053e.{DOMAIN}.  CNAME  " in r.stdout
    assert f"{DOMAIN}.  CNAME  {dep}-alb-" in r.stdout
    assert len(created) == 2 and dns.queries >= 2 and time.monotonic() - t0 < 600


def test_an_existing_host_overrides_the_instance_and_needs_nothing_of_its_phase() -> None:
    """params.host set: the SSH inputs of synapse/validate come from the parameters and
    never touch the instances phase's outputs (absent: that phase did not run); empty: the
    instance's address, generated key and pinned host keys."""
    import yaml

    from elematrix_tui.engine.expressions import render_string

    ssh = yaml.safe_load((RUNBOOKS / "production.yaml").read_text())["x-ssh"]
    params = {"host": "203.0.113.9", "ssh_port": 22, "ssh_user": "ec2-user",
              "ssh_private_key_path": "/k/id", "ssh_host_key": "SHA256:a,SHA256:b"}
    got = {k: render_string(v, {"params": params, "steps": {}}) for k, v in ssh.items()}
    assert got == {"host": "203.0.113.9", "port": 22, "user": "ec2-user",
                   "key_path": "/k/id", "host_key_fingerprints": ["SHA256:a", "SHA256:b"]}
    steps = {"address": {"public_ip": "198.51.100.4"},
             "key_pair": {"private_key_path": "/state/keys/id_ed25519"},
             "host_keys": {"fingerprints": ["SHA256:pinned"]}}
    params.update(host="", ssh_private_key_path="", ssh_host_key="")
    got = {k: render_string(v, {"params": params, "steps": steps}) for k, v in ssh.items()}
    assert got == {"host": "198.51.100.4", "port": 22, "user": "ec2-user",
                   "key_path": "/state/keys/id_ed25519",
                   "host_key_fingerprints": ["SHA256:pinned"]}
