"""Where moto 5.2.5 is kinder than AWS for the production runbook, made as strict as AWS.

Each patch is the documented way this repo handles a moto gap (like
``elematrix_tui/practice.py: default_vpc_like_aws``): replace the one moto model method,
say what AWS does and where that is written, and never accept what AWS would refuse.
docs/production.md lists them ("What moto lacks").

1. ACM issues a DNS-validated certificate when its validation CNAME resolves (ACM user
   guide, "DNS validation": the certificate stays PENDING_VALIDATION until ACM finds the
   record). moto issues every certificate 60 s after the request whatever DNS says
   (moto/acm/models.py ``CertBundle.check``, ``ACM_VALIDATION_WAIT``). Patched: ISSUED only
   once the record is in a Route 53 zone of the emulator or served by the test's DNS
   server (``published``).
2. An HTTPS listener needs an issued certificate (ELBv2 API reference, CreateListener:
   ``UnsupportedCertificate`` / ``CertificateNotFound``). moto accepts any ARN
   (moto/elbv2/models.py ``create_listener``). Patched: refused unless ACM says ISSUED.
3. Enabling ALB access logs checks the bucket policy: ELB writes a test file and answers
   ``InvalidConfigurationRequest: Access Denied for bucket`` when the policy does not let
   it (ELB user guide, "Enable access logs for your Application Load Balancer", bucket
   requirements). moto stores the attribute only (``modify_load_balancer_attributes``).
   Patched: the bucket must exist, in the same region, and its policy must allow
   s3:PutObject on ``<bucket>/<prefix>/AWSLogs/<account>/*`` to
   logdelivery.elasticloadbalancing.amazonaws.com or the region's ELB account.
4. ElastiCache ``DeleteCacheSubnetGroup`` is not implemented in moto (measured: botocore
   gets "The delete_cache_subnet_group action has not been implemented"). Added, with
   AWS's refusal while a replication group still uses the group
   (``CacheSubnetGroupInUse``).
5. A deleted ElastiCache replication group stays in moto as ``deleting`` forever
   (moto/elasticache/models.py ``delete_replication_group`` only sets the status;
   measured: the teardown's wait timed out after 60 s). AWS removes it when the deletion
   finishes (minutes later; DescribeReplicationGroups then answers
   ReplicationGroupNotFoundFault). Patched: a ``deleting`` group is shown once more as
   ``deleting``, then it is gone; the subnet group stays in use until then.
6. A registered target is ``initial`` (``Elb.InitialHealthChecking``) until the ALB's
   health checks have passed ``HealthyThresholdCount`` times in a row (5 by default),
   ``unhealthy`` after ``UnhealthyThresholdCount`` failures (2) (ELB user guide, "Health
   checks for Application Load Balancer target groups", "Target health status"). moto
   answers ``healthy`` for every registered running instance, whether anything listens
   or not (moto/elbv2/models.py ``FakeTargetGroup.health_for``, its last line). Patched:
   every DescribeTargetHealth makes one real health check, ``GET <HealthCheckPath>`` on
   the group's port at the instance's public address, passing only on the matcher's code
   (200), and healthy only after ``healthy_threshold_count`` passes in a row. Only a
   loopback address is contacted (the rehearsal's FakeInstance); any other address is a
   failed check. Not copied: the ALB checks every 30 s whether anyone asks or not (here
   a check per question, so a poll every second sees five passes in five seconds) and
   from its own nodes to the private address (nothing serves that here).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from typing import Any

import pytest

# Records the tests' own DNS server answers (name., value.) lower-case.
published: set[tuple[str, str]] = set()


def _n(v: str) -> str:
    return v.rstrip(".").lower() + "."


def _in_route53(account_id: str, name: str, value: str) -> bool:
    from moto.route53.models import route53_backends

    backend = route53_backends[account_id]["global"]
    for zone in backend.zones.values():
        for rr in zone.rrsets:
            if _n(rr.name) == name and rr.type == "CNAME" and any(
                    _n(v) == value for v in rr.records):
                return True
    return False


def _validation_records(cert: Any) -> list[tuple[str, str]]:
    out = []
    for o in cert.describe()["Certificate"].get("DomainValidationOptions", []):
        rr = o["ResourceRecord"]
        out.append((_n(rr["Name"]), _n(rr["Value"])))
    return out


@pytest.fixture
def production_moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Install the six patches for one test (the moto server runs in this process)."""
    from moto.acm import models as acm
    from moto.elasticache import models as ec_models
    from moto.elasticache import responses as ec_responses
    from moto.elasticache.exceptions import CacheSubnetGroupNotFound, ElastiCacheException
    from moto.elbv2 import models as elb
    from moto.elbv2.exceptions import ELBClientError as RESTError

    def check(self: Any) -> None:
        if self.type == "AMAZON_ISSUED" and self.status == "PENDING_VALIDATION":
            recs = _validation_records(self)
            if recs and all(_in_route53(self.arn.split(":")[4], n, v) or (n, v) in published
                            for n, v in recs):
                self.status = "ISSUED"
            return

    monkeypatch.setattr(acm.CertBundle, "check", check)

    orig_listener = elb.ELBv2Backend.create_listener

    def create_listener(self: Any, load_balancer_arn: str, protocol: str, port: str,
                        ssl_policy: str, certificate: str | None, *a: Any, **kw: Any) -> Any:
        if protocol == "HTTPS":
            backend = acm.acm_backends[self.account_id][self.region_name]
            try:
                cert = backend.get_certificate(certificate or "")
            except Exception as e:
                raise RESTError("CertificateNotFound", f"Certificate '{certificate}' not "
                                "found") from e
            cert.check()
            if cert.status != "ISSUED":
                raise RESTError("UnsupportedCertificate",
                                f"The certificate '{certificate}' must have a status of "
                                f"ISSUED (it is {cert.status})")
        return orig_listener(self, load_balancer_arn, protocol, port, ssl_policy,
                             certificate, *a, **kw)

    monkeypatch.setattr(elb.ELBv2Backend, "create_listener", create_listener)

    orig_attrs = elb.ELBv2Backend.modify_load_balancer_attributes

    def modify_attrs(self: Any, arn: str, attrs: dict[str, Any]) -> Any:
        balancer = self.load_balancers.get(arn)
        merged = {**(balancer.attrs if balancer else {}), **attrs}
        if str(merged.get("access_logs.s3.enabled")).lower() == "true":
            _check_log_bucket(self.account_id, self.region_name,
                              merged.get("access_logs.s3.bucket", ""),
                              merged.get("access_logs.s3.prefix", ""), RESTError)
        return orig_attrs(self, arn, attrs)

    monkeypatch.setattr(elb.ELBv2Backend, "modify_load_balancer_attributes", modify_attrs)

    class CacheSubnetGroupInUse(ElastiCacheException):
        code = "CacheSubnetGroupInUse"

        def __init__(self, name: str) -> None:
            super().__init__(f"Cache subnet group {name} is currently in use by a cache "
                             "cluster.")

    def delete_group(self: Any, cache_subnet_group_name: str) -> None:
        if cache_subnet_group_name not in self.cache_subnet_groups:
            raise CacheSubnetGroupNotFound(cache_subnet_group_name)
        for rg in self.replication_groups.values():
            if getattr(rg, "cache_subnet_group_name", None) == cache_subnet_group_name:
                raise CacheSubnetGroupInUse(cache_subnet_group_name)
        del self.cache_subnet_groups[cache_subnet_group_name]

    def delete_response(self: Any) -> Any:
        self.elasticache_backend.delete_cache_subnet_group(
            self._get_param("CacheSubnetGroupName"))
        return ec_responses.EmptyResult()

    orig_describe = ec_models.ElastiCacheBackend.describe_replication_groups

    def describe_groups(self: Any, replication_group_id: str | None = None) -> Any:
        out = orig_describe(self, replication_group_id)
        for rg in list(self.replication_groups.values()):
            if rg.status == "deleting":
                if getattr(rg, "_seen_deleting", False):
                    del self.replication_groups[rg.replication_group_id]
                rg._seen_deleting = True
        return out

    monkeypatch.setattr(ec_models.ElastiCacheBackend, "describe_replication_groups",
                        describe_groups)
    monkeypatch.setattr(ec_models.ElastiCacheBackend, "delete_cache_subnet_group", delete_group,
                        raising=False)
    monkeypatch.setattr(ec_responses.ElastiCacheResponse, "delete_cache_subnet_group",
                        delete_response, raising=False)
    def health_for(self: Any, target: dict[str, Any], ec2_backend: Any) -> Any:
        status = orig_health(self, target, ec2_backend)
        if status.status != "healthy":
            return status
        inst = ec2_backend.get_instance_by_id(target["Id"])
        passes = _health_check(getattr(inst, "public_ip", None), int(status.port),
                               self.health_check_path or "/")
        runs = self.__dict__.setdefault("_elematrix_checks", {})
        ok, bad = runs.get(target["Id"], (0, 0))
        ok, bad = (ok + 1, 0) if passes else (0, bad + 1)
        runs[target["Id"]] = (ok, bad)
        if ok >= int(self.healthy_threshold_count):
            return status
        if bad >= int(self.unhealthy_threshold_count):
            return elb.FakeHealthStatus(target["Id"], status.port, self.health_check_port,
                                        "unhealthy", "Target.FailedHealthChecks",
                                        "Health checks failed")
        return elb.FakeHealthStatus(target["Id"], status.port, self.health_check_port,
                                    "initial", "Elb.InitialHealthChecking",
                                    "Initial health checks in progress")

    orig_health = elb.FakeTargetGroup.health_for
    monkeypatch.setattr(elb.FakeTargetGroup, "health_for", health_for)
    yield
    published.clear()


def _health_check(address: str | None, port: int, path: str) -> bool:
    """One ALB health check: GET ``path``, passing on 200 only (the target group's matcher),
    within 5 s (the ALB's default HealthCheckTimeoutSeconds). Loopback addresses only."""
    import ipaddress
    import urllib.request

    if not address or not ipaddress.ip_address(address).is_loopback:
        return False
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"http://{address}:{port}{path}", timeout=5) as r:
            return int(r.status) == 200
    except OSError:
        return False


def _check_log_bucket(account: str, region: str, bucket: str, prefix: str,
                      err: Any) -> None:
    from moto.s3.models import s3_backends

    from elematrix_tui.actions.aws_production import ELB_LOG_ACCOUNTS

    s3 = s3_backends[account]["aws"]
    b = s3.buckets.get(bucket)
    denied = err("InvalidConfigurationRequest",
                 f"Access Denied for bucket: {bucket}. Please check S3bucket permission")
    if b is None or b.region_name != region or not b.policy:
        raise denied
    key = f"arn:aws:s3:::{bucket}/{prefix + '/' if prefix else ''}AWSLogs/{account}/test"
    principals = {"logdelivery.elasticloadbalancing.amazonaws.com",
                  f"arn:aws:iam::{ELB_LOG_ACCOUNTS.get(region, '-')}:root"}
    for st in json.loads(b.policy).get("Statement", []):
        if st.get("Effect") != "Allow":
            continue
        p = st.get("Principal") or {}
        names = {*_list(p.get("Service")), *_list(p.get("AWS"))} if isinstance(p, dict) else set()
        actions = _list(st.get("Action"))
        if names & principals and any(fnmatch.fnmatchcase("s3:PutObject", a) for a in actions) \
                and any(fnmatch.fnmatchcase(key, r) for r in _list(st.get("Resource"))):
            return
    raise denied


def _list(v: Any) -> list[str]:
    if v is None:
        return []
    return [v] if isinstance(v, str) else list(v)
