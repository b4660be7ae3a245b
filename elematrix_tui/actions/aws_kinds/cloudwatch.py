"""The CloudWatch alarms kind: every alarm of the deployment, converged field by field."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ...engine.action import StepContext
from ..aws_session import AwsApi
from ..aws_tags import tag_list
from .base import Found, Kind, Spec


class AlarmDef(Spec):
    id: str
    metric: str
    namespace: str = "AWS/EC2"
    statistic: str = "Average"
    threshold: float
    comparison: str = "GreaterThanThreshold"
    period: int = 300
    evaluation_periods: int = 2
    dimensions: dict[str, str] = Field(default_factory=dict)
    description: str = ""
    # What no data means. "breaching" where silence is itself the fault (a dead
    # CloudWatch agent sends nothing); see the alarms in runbooks/poc-ec2.yaml.
    treat_missing_data: Literal["breaching", "notBreaching", "ignore", "missing"] = "missing"


class AlarmsSpec(Spec):
    topic_arn: str
    alarms: list[AlarmDef]


# put_metric_alarm parameters compared with describe_alarms (same names in both).
_ALARM_FIELDS = ("Namespace", "MetricName", "Statistic", "Period", "EvaluationPeriods",
                 "ComparisonOperator", "Threshold", "TreatMissingData", "AlarmActions",
                 "OKActions", "ActionsEnabled", "AlarmDescription")


def alarm_drift(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Which settings of an existing alarm differ from the wanted ``put_metric_alarm``
    parameters: dimensions first (an alarm on a replaced instance watches nothing)."""
    diff = []

    def dims(x: Any) -> list[tuple[str, str]]:
        return sorted((str(d.get("Name")), str(d.get("Value"))) for d in x or [])

    if dims(have.get("Dimensions")) != dims(want.get("Dimensions")):
        diff.append("dimensions " + ",".join(f"{k}={v}" for k, v in dims(want["Dimensions"])))
    for k in _ALARM_FIELDS:
        h, w = have.get(k), want.get(k)
        if k == "Threshold":
            h = float(h) if h is not None else None
            w = float(w) if w is not None else None
        elif k == "TreatMissingData":
            h = h or "missing"  # CloudWatch's default when never set
        elif k in ("AlarmActions", "OKActions"):
            h, w = sorted(h or []), sorted(w or [])
        if h != w:
            diff.append(f"{k} {h!r} -> {w!r}")
    return diff


class Alarms(Kind[AlarmsSpec]):
    """CloudWatch alarms named ``<name>-<id>`` sending to the topic (put is an upsert)."""

    Spec = AlarmsSpec
    title = "CloudWatch alarms"

    def _params(self, ctx: StepContext, name: str, spec: AlarmsSpec,
                a: AlarmDef) -> dict[str, Any]:
        return {"AlarmName": f"{name}-{a.id}", "AlarmDescription": a.description or a.id,
                "MetricName": a.metric, "Namespace": a.namespace, "Statistic": a.statistic,
                "Threshold": a.threshold, "ComparisonOperator": a.comparison,
                "Period": a.period, "EvaluationPeriods": a.evaluation_periods,
                "Dimensions": [{"Name": k, "Value": v} for k, v in a.dimensions.items()],
                "AlarmActions": [spec.topic_arn], "OKActions": [spec.topic_arn],
                "TreatMissingData": a.treat_missing_data, "ActionsEnabled": True}

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: AlarmsSpec) -> Found:
        names = [f"{name}-{a.id}" for a in spec.alarms]
        have = {a["AlarmName"]: a for a in api.checked(
            "cloudwatch", "describe_alarms", AlarmNames=names)["MetricAlarms"]}
        changes = []
        for a in spec.alarms:
            p = self._params(ctx, name, spec, a)
            h = have.get(p["AlarmName"])
            if h is None:
                changes.append(f"create alarm {p['AlarmName']}: {a.metric} "
                               f"{a.comparison} {a.threshold:g}")
            else:
                diff = alarm_drift(h, p)
                if diff:
                    changes.append(f"update alarm {p['AlarmName']} ({', '.join(diff)})")
        return Found(have or None, {"alarm_names": names}, changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: AlarmsSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        have = found.obj or {}
        changed = False
        for a in spec.alarms:
            p = self._params(ctx, name, spec, a)
            h = have.get(p["AlarmName"])
            if h is None or alarm_drift(h, p):
                api.checked("cloudwatch", "put_metric_alarm",
                            Tags=tag_list(ctx, p["AlarmName"]), **p)
                changed = True
        return found.outputs, changed
