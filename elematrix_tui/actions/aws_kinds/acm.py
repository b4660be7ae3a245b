"""ACM: a public certificate for the domain, validated by DNS, and Route 53 records.

The certificate is found by its domain and the deployment tag (ACM lists by domain; tags
need ListTagsForCertificate). Its DNS validation records are outputs: the runbook writes
them into Route 53 (kind ``dns_records``) or prints them and waits until they resolve
(``dns.await_records``)."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import Field

from ...engine.action import ActionFailed, StepContext
from ...engine.poll import PollTimeout, poll_step
from ..aws_session import AwsApi
from ..aws_tags import has_deployment_tag, tag_list
from .base import Found, Kind, Spec

# Final states a certificate never leaves: a new request is needed.
DEAD_STATES = ("FAILED", "VALIDATION_TIMED_OUT", "REVOKED", "EXPIRED", "INACTIVE")
# Seconds ACM may take after RequestCertificate before it shows the validation records.
RECORDS_WAIT = 60.0


class CertificateSpec(Spec):
    domain: str
    alternative_names: list[str] = Field(default_factory=list)


def validation_records(cert: dict[str, Any]) -> list[dict[str, str]]:
    """The CNAME records ACM asks for, one per distinct name."""
    seen: dict[str, dict[str, str]] = {}
    for o in cert.get("DomainValidationOptions") or []:
        rr = o.get("ResourceRecord")
        if rr:
            seen[rr["Name"]] = {"name": rr["Name"], "type": rr["Type"], "value": rr["Value"]}
    return list(seen.values())


class Certificate(Kind[CertificateSpec]):
    Spec = CertificateSpec
    title = "ACM certificate"

    def _ours(self, api: AwsApi, ctx: StepContext, spec: CertificateSpec) -> dict[str, Any] | None:
        token: str | None = None
        for _page in range(100):
            kw: dict[str, Any] = {"NextToken": token} if token else {}
            r = api.checked("acm", "list_certificates", **kw)
            for c in r.get("CertificateSummaryList", []):
                if c.get("DomainName") != spec.domain:
                    continue
                arn = c["CertificateArn"]
                tags = api.checked("acm", "list_tags_for_certificate",
                                   CertificateArn=arn).get("Tags", [])
                if not has_deployment_tag(tags, ctx.deployment):
                    continue
                cert = api.checked("acm", "describe_certificate",
                                   CertificateArn=arn)["Certificate"]
                if cert.get("Status") not in DEAD_STATES:
                    return dict(cert)
            token = r.get("NextToken")
            if not token:
                break
        return None

    @staticmethod
    def _outputs(cert: dict[str, Any]) -> dict[str, Any]:
        return {"certificate_arn": cert["CertificateArn"], "status": cert.get("Status"),
                "validation_records": validation_records(cert)}

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: CertificateSpec) -> Found:
        cert = self._ours(api, ctx, spec)
        if cert is None:
            return Found(None, changes=[f"request an ACM certificate for {spec.domain} "
                                        "(DNS validation)"])
        want = sorted({spec.domain, *spec.alternative_names})
        have = sorted(cert.get("SubjectAlternativeNames") or [spec.domain])
        changes = [] if have == want else [
            f"request a new certificate for {', '.join(want)} (this one covers "
            f"{', '.join(have)})"]
        return Found(cert, self._outputs(cert), changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: CertificateSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        if found.obj is not None and not found.changes:
            return found.outputs, False
        sans = sorted({spec.domain, *spec.alternative_names})
        # Same deployment, domain and names: ACM returns the same certificate for an hour,
        # so a retried request does not make a second one.
        token = hashlib.sha256(f"{ctx.deployment}/{'/'.join(sans)}".encode()).hexdigest()[:32]
        arn = api.checked("acm", "request_certificate", DomainName=spec.domain,
                          ValidationMethod="DNS", SubjectAlternativeNames=sans,
                          IdempotencyToken=token, Tags=tag_list(ctx, name))["CertificateArn"]
        def records_shown(_n: int) -> dict[str, Any] | None:
            cert = api.checked("acm", "describe_certificate", CertificateArn=arn)["Certificate"]
            return cert if validation_records(cert) else None

        try:
            cert = poll_step(ctx, records_shown, what=f"the DNS validation records of {arn}",
                             timeout=RECORDS_WAIT, interval=2.0)
        except PollTimeout as e:
            raise ActionFailed(f"ACM did not show the DNS validation records of {arn} within "
                               f"{RECORDS_WAIT:.0f}s",
                               fix="Resume: the certificate is kept.") from e
        return self._outputs(cert), True


class DnsRecord(Spec):
    name: str
    type: str = "CNAME"
    value: str = ""
    # An alias (A record) to an AWS target, e.g. the ALB: its DNS name and hosted zone.
    alias_dns_name: str = ""
    alias_zone_id: str = ""


class DnsRecordsSpec(Spec):
    zone_id: str
    records: list[DnsRecord] = Field(min_length=1)
    ttl: int = Field(default=300, ge=30)


def _norm(name: str) -> str:
    return name.rstrip(".").lower() + "."


def _record_set(r: DnsRecord, ttl: int) -> dict[str, Any]:
    if r.alias_dns_name:
        return {"Name": _norm(r.name), "Type": r.type,
                "AliasTarget": {"DNSName": _norm(r.alias_dns_name),
                                "HostedZoneId": r.alias_zone_id,
                                "EvaluateTargetHealth": False}}
    return {"Name": _norm(r.name), "Type": r.type, "TTL": ttl,
            "ResourceRecords": [{"Value": r.value}]}


def _same(have: dict[str, Any], want: dict[str, Any]) -> bool:
    if "AliasTarget" in want:
        a = have.get("AliasTarget") or {}
        return bool(_norm(a.get("DNSName", "")) == want["AliasTarget"]["DNSName"])
    return [_norm(v["Value"]) for v in have.get("ResourceRecords", [])] == \
        [_norm(v["Value"]) for v in want["ResourceRecords"]]


class DnsRecords(Kind[DnsRecordsSpec]):
    """Records in the operator's hosted zone (UPSERT). Route 53 records carry no tags: the
    teardown finds them by their values (the certificate's validation records, the ALB's
    name)."""

    Spec = DnsRecordsSpec
    title = "Route 53 records"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: DnsRecordsSpec) -> Found:
        changes = []
        for r in spec.records:
            want = _record_set(r, spec.ttl)
            got = api.checked("route53", "list_resource_record_sets", HostedZoneId=spec.zone_id,
                              StartRecordName=want["Name"], StartRecordType=r.type,
                              MaxItems="1")["ResourceRecordSets"]
            have = got[0] if got and _norm(got[0]["Name"]) == want["Name"] \
                and got[0]["Type"] == r.type else None
            if have is None or not _same(have, want):
                target = r.alias_dns_name or r.value
                changes.append(f"upsert {r.type} {want['Name']} -> {target}")
        out = {"zone_id": spec.zone_id, "names": [_norm(r.name) for r in spec.records]}
        return Found(True if not changes else None, out, changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: DnsRecordsSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        if not found.changes:
            return found.outputs, False
        batch = [{"Action": "UPSERT", "ResourceRecordSet": _record_set(r, spec.ttl)}
                 for r in spec.records]
        api.checked("route53", "change_resource_record_sets", HostedZoneId=spec.zone_id,
                    ChangeBatch={"Comment": f"elematrix {ctx.deployment}", "Changes": batch})
        return found.outputs, True
