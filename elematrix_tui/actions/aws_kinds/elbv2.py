"""The edge: an Application Load Balancer with its target group and listeners.

- ``load_balancer``: internet-facing, in the public subnets, its attributes converged:
  invalid header fields dropped, access logs to the logs bucket.
- ``target_group``: HTTP to the instances' nginx.
- ``targets``: the Synapse instances registered in the target group (the instances
  phase); whether they are healthy is a wait of its own, once nginx answers.
- ``listeners``: HTTP:80 only redirects to HTTPS (301); HTTPS:443 with the ACM certificate
  and a named TLS policy forwards to the target group, except ``/_synapse/admin`` (and
  everything under it), which a listener rule answers with a fixed 404: the admin API is
  never routed publicly (Synapse's reverse-proxy documentation; FACTS.md).

Names are unique per account and region and at most 32 characters; the deployment tag
decides whether an existing one is ours.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from ...engine.action import ActionFailed, StepContext
from ..aws_session import AwsApi
from ..aws_tags import has_deployment_tag, tag_list
from .base import Found, Kind, Spec, safe_call
from .rds import not_ours

# TLS 1.3 and 1.2 with restricted (forward-secret AEAD) ciphers and hybrid post-quantum key
# exchange; AWS's API default for a listener without a policy is ELBSecurityPolicy-2016-08,
# which still accepts TLS 1.0 (docs/production.md cites the AWS page).
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09"
ADMIN_PATHS = ["/_synapse/admin", "/_synapse/admin/*"]
MAX_NAME = 32


def _check_name(what: str, name: str) -> None:
    if len(name) > MAX_NAME:
        raise ActionFailed(f"{what} name {name!r} is {len(name)} characters; ELB allows "
                           f"{MAX_NAME}", fix="Shorten it in the runbook (the deployment "
                           "name is cut to fit there).")


def _tags_of(api: AwsApi, arn: str) -> list[dict[str, str]]:
    d = api.checked("elbv2", "describe_tags", ResourceArns=[arn])["TagDescriptions"]
    return list(d[0].get("Tags", [])) if d else []


def metric_dimension(arn: str) -> str:
    """The CloudWatch dimension value of an ALB or target group: the ARN's resource part
    after ``loadbalancer/`` ("app/<name>/<id>") or the whole ``targetgroup/<name>/<id>``
    (the ELB guide, "CloudWatch metrics for your Application Load Balancer": Metric
    dimensions, LoadBalancer and TargetGroup)."""
    resource = arn.split(":", 5)[-1]
    return resource.removeprefix("loadbalancer/")


def _tg_outputs(tg: dict[str, Any]) -> dict[str, Any]:
    return {"target_group_arn": tg["TargetGroupArn"],
            "metric_dimension": metric_dimension(tg["TargetGroupArn"])}


class TargetGroupSpec(Spec):
    vpc_id: str
    port: int = Field(default=80, ge=1, le=65535)
    health_check_path: str = "/health"


class TargetGroup(Kind[TargetGroupSpec]):
    Spec = TargetGroupSpec
    title = "target group"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: TargetGroupSpec) -> Found:
        _check_name("target group", name)
        r = safe_call(api, "elbv2", "describe_target_groups", ("TargetGroupNotFound",),
                      Names=[name])
        if r is None or not r["TargetGroups"]:
            return Found(None, changes=[f"create target group {name} (HTTP:{spec.port}, "
                                        f"health {spec.health_check_path})"])
        tg = r["TargetGroups"][0]
        if not has_deployment_tag(_tags_of(api, tg["TargetGroupArn"]), ctx.deployment):
            raise not_ours("target group", name, ctx.deployment)
        changes = [] if tg.get("HealthCheckPath") == spec.health_check_path else [
            f"health check path {tg.get('HealthCheckPath')} -> {spec.health_check_path}"]
        return Found(tg, _tg_outputs(tg), changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: TargetGroupSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        if found.obj is not None:
            api.checked("elbv2", "modify_target_group", TargetGroupArn=found.obj[
                "TargetGroupArn"], HealthCheckPath=spec.health_check_path)
            return found.outputs, True
        tg = api.checked("elbv2", "create_target_group", Name=name, Protocol="HTTP",
                         Port=spec.port, VpcId=spec.vpc_id, TargetType="instance",
                         HealthCheckProtocol="HTTP", HealthCheckPath=spec.health_check_path,
                         Matcher={"HttpCode": "200"},
                         Tags=tag_list(ctx, name))["TargetGroups"][0]
        return _tg_outputs(tg), True


class TargetsSpec(Spec):
    target_group_arn: str
    instance_ids: list[str] = Field(min_length=1)


# A target whose describe_target_health says it is not (or no longer) in the group
# (ELBv2 API reference, TargetHealth: "unused" with Target.NotRegistered, "draining" while
# deregistration is in progress).
_NOT_REGISTERED = ("Target.NotRegistered", "Target.DeregistrationInProgress")


class Targets(Kind[TargetsSpec]):
    """The deployment's instances registered in its target group (by instance id, on the
    group's port). Others' targets in the group are left alone; the teardown deregisters
    ours before the group is deleted."""

    Spec = TargetsSpec
    title = "target registration"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: TargetsSpec) -> Found:
        r = api.checked("elbv2", "describe_target_health", TargetGroupArn=spec.target_group_arn,
                        Targets=[{"Id": i} for i in spec.instance_ids])
        state = {d["Target"]["Id"]: d.get("TargetHealth", {})
                 for d in r.get("TargetHealthDescriptions", [])}
        missing = [i for i in spec.instance_ids
                   if state.get(i, {}).get("Reason") in _NOT_REGISTERED or i not in state]
        outputs = {"target_group_arn": spec.target_group_arn,
                   "instance_ids": list(spec.instance_ids),
                   "states": {i: state.get(i, {}).get("State") for i in spec.instance_ids}}
        changes = [f"register {', '.join(missing)} in {spec.target_group_arn}"] if missing else []
        return Found(None if missing else state, outputs, changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: TargetsSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        if not found.changes:
            return found.outputs, False
        api.checked("elbv2", "register_targets", TargetGroupArn=spec.target_group_arn,
                    Targets=[{"Id": i} for i in spec.instance_ids])
        return found.outputs, True


class LoadBalancerSpec(Spec):
    subnet_ids: list[str] = Field(min_length=2)
    security_group_ids: list[str] = Field(min_length=1)
    access_logs_bucket: str
    access_logs_prefix: str = "alb"
    idle_timeout: int = Field(default=60, ge=1, le=4000)

    @field_validator("access_logs_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        # ELB adds AWSLogs/<account>/ itself and refuses a prefix containing it.
        if "AWSLogs" in v:
            raise ValueError("the access log prefix must not contain 'AWSLogs'")
        return v


def lb_attributes(spec: LoadBalancerSpec) -> dict[str, str]:
    """The attributes the runbook owns, as ELBv2 spells them."""
    return {"routing.http.drop_invalid_header_fields.enabled": "true",
            "access_logs.s3.enabled": "true",
            "access_logs.s3.bucket": spec.access_logs_bucket,
            "access_logs.s3.prefix": spec.access_logs_prefix,
            "idle_timeout.timeout_seconds": str(spec.idle_timeout)}


class LoadBalancer(Kind[LoadBalancerSpec]):
    Spec = LoadBalancerSpec
    title = "Application Load Balancer"

    @staticmethod
    def _outputs(lb: dict[str, Any]) -> dict[str, Any]:
        return {"load_balancer_arn": lb["LoadBalancerArn"], "dns_name": lb["DNSName"],
                "canonical_zone_id": lb.get("CanonicalHostedZoneId", ""),
                "state": (lb.get("State") or {}).get("Code", ""),
                "metric_dimension": metric_dimension(lb["LoadBalancerArn"])}

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: LoadBalancerSpec) -> Found:
        _check_name("load balancer", name)
        r = safe_call(api, "elbv2", "describe_load_balancers", ("LoadBalancerNotFound",),
                      Names=[name])
        if r is None or not r["LoadBalancers"]:
            return Found(None, changes=[
                f"create internet-facing ALB {name} in {', '.join(spec.subnet_ids)}",
                *[f"set {k}={v}" for k, v in lb_attributes(spec).items()]])
        lb = r["LoadBalancers"][0]
        if not has_deployment_tag(_tags_of(api, lb["LoadBalancerArn"]), ctx.deployment):
            raise not_ours("load balancer", name, ctx.deployment)
        attrs = {a["Key"]: a["Value"] for a in api.checked(
            "elbv2", "describe_load_balancer_attributes",
            LoadBalancerArn=lb["LoadBalancerArn"])["Attributes"]}
        changes = [f"set {k}={v} (now {attrs.get(k)!r})"
                   for k, v in lb_attributes(spec).items() if attrs.get(k) != v]
        return Found(lb, self._outputs(lb), changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: LoadBalancerSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        lb = found.obj
        if lb is None:
            lb = api.checked("elbv2", "create_load_balancer", Name=name, Type="application",
                             Scheme="internet-facing", IpAddressType="ipv4",
                             Subnets=spec.subnet_ids, SecurityGroups=spec.security_group_ids,
                             Tags=tag_list(ctx, name))["LoadBalancers"][0]
        # ELB checks the bucket policy here: it writes a test object and refuses with
        # InvalidConfigurationRequest "Access Denied for bucket" when it may not.
        api.checked("elbv2", "modify_load_balancer_attributes",
                    LoadBalancerArn=lb["LoadBalancerArn"],
                    Attributes=[{"Key": k, "Value": v} for k, v in lb_attributes(spec).items()])
        return self._outputs(lb), True


class ListenersSpec(Spec):
    load_balancer_arn: str
    certificate_arn: str
    target_group_arn: str
    ssl_policy: str = TLS_POLICY
    # Paths answered 404 by the ALB itself, never forwarded.
    blocked_paths: list[str] = Field(default_factory=lambda: list(ADMIN_PATHS), min_length=1)


def _redirect() -> list[dict[str, Any]]:
    return [{"Type": "redirect", "RedirectConfig": {
        "Protocol": "HTTPS", "Port": "443", "Host": "#{host}", "Path": "/#{path}",
        "Query": "#{query}", "StatusCode": "HTTP_301"}}]


def _forward(tg: str) -> list[dict[str, Any]]:
    return [{"Type": "forward", "TargetGroupArn": tg}]


def _blocked() -> list[dict[str, Any]]:
    return [{"Type": "fixed-response", "FixedResponseConfig": {
        "StatusCode": "404", "ContentType": "application/json",
        "MessageBody": '{"errcode":"M_NOT_FOUND","error":"Not found"}'}}]


def _action_kinds(actions: list[dict[str, Any]]) -> list[str]:
    out = []
    for a in actions:
        if a["Type"] == "forward":
            out.append(f"forward:{a.get('TargetGroupArn')}")
        elif a["Type"] == "redirect":
            rc = a.get("RedirectConfig") or {}
            out.append(f"redirect:{rc.get('Protocol')}:{rc.get('Port')}:{rc.get('StatusCode')}")
        else:
            out.append(f"{a['Type']}:{(a.get('FixedResponseConfig') or {}).get('StatusCode')}")
    return out


class Listeners(Kind[ListenersSpec]):
    Spec = ListenersSpec
    title = "ALB listeners"

    def _state(self, api: AwsApi, spec: ListenersSpec) -> dict[str, Any]:
        ls = api.checked("elbv2", "describe_listeners",
                         LoadBalancerArn=spec.load_balancer_arn)["Listeners"]
        by_port = {int(x["Port"]): x for x in ls}
        rule = None
        https = by_port.get(443)
        if https is not None:
            for r in api.checked("elbv2", "describe_rules",
                                 ListenerArn=https["ListenerArn"])["Rules"]:
                paths = [v for c in r.get("Conditions", []) if c.get("Field") == "path-pattern"
                         for v in (c.get("PathPatternConfig") or {}).get("Values")
                         or c.get("Values", [])]
                if sorted(paths) == sorted(spec.blocked_paths):
                    rule = r
        return {"http": by_port.get(80), "https": https, "rule": rule}

    @staticmethod
    def _outputs(st: dict[str, Any]) -> dict[str, Any]:
        return {"http_listener_arn": (st["http"] or {}).get("ListenerArn", ""),
                "https_listener_arn": (st["https"] or {}).get("ListenerArn", ""),
                "admin_rule_arn": (st["rule"] or {}).get("RuleArn", "")}

    def _changes(self, st: dict[str, Any], spec: ListenersSpec) -> list[str]:
        changes = []
        http, https = st["http"], st["https"]
        if http is None:
            changes.append("create listener HTTP:80 -> redirect to HTTPS:443 (301)")
        elif _action_kinds(http["DefaultActions"]) != _action_kinds(_redirect()):
            changes.append("HTTP:80 must only redirect to HTTPS (301)")
        if https is None:
            changes.append(f"create listener HTTPS:443 ({spec.ssl_policy}) -> target group")
        else:
            if https.get("SslPolicy") != spec.ssl_policy:
                changes.append(f"TLS policy {https.get('SslPolicy')} -> {spec.ssl_policy}")
            certs = [c["CertificateArn"] for c in https.get("Certificates", [])]
            if spec.certificate_arn not in certs:
                changes.append(f"certificate -> {spec.certificate_arn}")
            if _action_kinds(https["DefaultActions"]) != _action_kinds(
                    _forward(spec.target_group_arn)):
                changes.append("HTTPS:443 default action -> forward to the target group")
        if st["rule"] is None:
            changes.append(f"rule: {', '.join(spec.blocked_paths)} -> fixed 404 (never "
                           "forwarded)")
        elif _action_kinds(st["rule"]["Actions"]) != _action_kinds(_blocked()):
            changes.append(f"rule for {', '.join(spec.blocked_paths)} must answer 404")
        return changes

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: ListenersSpec) -> Found:
        st = self._state(api, spec)
        changes = self._changes(st, spec)
        return Found(st if st["http"] or st["https"] else None, self._outputs(st), changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: ListenersSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        st = self._state(api, spec)
        lb = spec.load_balancer_arn
        if st["http"] is None:
            st["http"] = api.checked("elbv2", "create_listener", LoadBalancerArn=lb,
                                     Protocol="HTTP", Port=80, DefaultActions=_redirect(),
                                     Tags=tag_list(ctx, f"{name}-http"))["Listeners"][0]
        elif _action_kinds(st["http"]["DefaultActions"]) != _action_kinds(_redirect()):
            api.checked("elbv2", "modify_listener", ListenerArn=st["http"]["ListenerArn"],
                        Protocol="HTTP", Port=80, DefaultActions=_redirect())
        https_params: dict[str, Any] = {
            "Protocol": "HTTPS", "Port": 443, "SslPolicy": spec.ssl_policy,
            "Certificates": [{"CertificateArn": spec.certificate_arn}],
            "DefaultActions": _forward(spec.target_group_arn)}
        if st["https"] is None:
            st["https"] = api.checked("elbv2", "create_listener", LoadBalancerArn=lb,
                                      Tags=tag_list(ctx, f"{name}-https"),
                                      **https_params)["Listeners"][0]
        elif [c for c in self._changes(st, spec) if c.startswith(("TLS", "certificate",
                                                                   "HTTPS"))]:
            api.checked("elbv2", "modify_listener", ListenerArn=st["https"]["ListenerArn"],
                        **https_params)
        if st["rule"] is None:
            st["rule"] = api.checked("elbv2", "create_rule",
                                     ListenerArn=st["https"]["ListenerArn"], Priority=1,
                                     Conditions=[{"Field": "path-pattern",
                                                  "PathPatternConfig": {
                                                      "Values": spec.blocked_paths}}],
                                     Actions=_blocked(),
                                     Tags=tag_list(ctx, f"{name}-admin"))["Rules"][0]
        elif _action_kinds(st["rule"]["Actions"]) != _action_kinds(_blocked()):
            api.checked("elbv2", "modify_rule", RuleArn=st["rule"]["RuleArn"],
                        Actions=_blocked())
        return self._outputs(st), True
