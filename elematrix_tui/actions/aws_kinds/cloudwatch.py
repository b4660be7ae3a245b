"""The CloudWatch alarms kind: every alarm of the deployment, converged field by field."""

from __future__ import annotations

import functools
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator

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


ALARM_SETS = "aws/alarms.yaml"


@functools.cache
def alarm_sets() -> dict[str, tuple[list[str], list[dict[str, Any]]]]:
    """The alarm sets of ``assets/aws/alarms.yaml``: name -> (its dimensions, its alarms as
    written, each with ``dimensions`` the names it is reported under)."""
    from ...bundled import assets_dir

    raw = yaml.safe_load((assets_dir() / ALARM_SETS).read_text())
    return {name: (list(d["dimensions"]), list(d["alarms"])) for name, d in raw.items()}


def alarm_count(sets: list[str]) -> int:
    """How many alarms these sets make (the cost estimate counts them)."""
    return sum(len(alarm_sets()[name][1]) for name in sets)


class AlarmsSpec(Spec):
    topic_arn: str
    alarms: list[AlarmDef] = Field(default_factory=list)
    # Sets of assets/aws/alarms.yaml by name; their alarms come after ``alarms``, each
    # reported under its dimensions with the values given in ``dimensions`` (every one a
    # set needs, non-empty; no other unless empty).
    sets: list[str] = Field(default_factory=list)
    dimensions: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_sets(self) -> AlarmsSpec:
        known = alarm_sets()
        unknown = [n for n in self.sets if n not in known]
        if unknown:
            raise ValueError(f"unknown alarm set(s) {', '.join(unknown)} (known: "
                             f"{', '.join(known)}; {ALARM_SETS})")
        needed = {d for n in self.sets for d in known[n][0]}
        given = {k for k, v in self.dimensions.items() if v}
        # An empty value that no set needs is allowed: a runbook may give a dimension of a
        # set it leaves out (production's InstanceId with an existing host).
        missing, unused = sorted(needed - given), sorted(given - needed)
        if missing or unused:
            raise ValueError(
                f"the alarm sets {', '.join(self.sets) or '(none)'} need exactly the "
                f"dimensions {', '.join(sorted(needed)) or '(none)'}"
                + (f"; missing {', '.join(missing)}" if missing else "")
                + (f"; not used by any set: {', '.join(unused)}" if unused else ""))
        ids = [a.id for a in self.all_alarms()]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"alarm id(s) {', '.join(twice)} given twice: each names the "
                             "alarm <name>-<id>")
        return self

    def all_alarms(self) -> list[AlarmDef]:
        """``alarms``, then each set's, with their dimensions' values filled in."""
        out = list(self.alarms)
        for set_name in self.sets:
            dims, alarms = alarm_sets()[set_name]
            for a in alarms:
                out.append(AlarmDef(**{**a, "dimensions": {
                    n: self.dimensions[n] for n in a.get("dimensions", dims)}}))
        return out


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
        names = [f"{name}-{a.id}" for a in spec.all_alarms()]
        have = {a["AlarmName"]: a for a in api.checked(
            "cloudwatch", "describe_alarms", AlarmNames=names)["MetricAlarms"]}
        changes = []
        for a in spec.all_alarms():
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
        for a in spec.all_alarms():
            p = self._params(ctx, name, spec, a)
            h = have.get(p["AlarmName"])
            if h is None or alarm_drift(h, p):
                api.checked("cloudwatch", "put_metric_alarm",
                            Tags=tag_list(ctx, p["AlarmName"]), **p)
                changed = True
        return found.outputs, changed
