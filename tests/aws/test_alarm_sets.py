"""Alarm sets (assets/aws/alarms.yaml) through the alarms kind, and the production
runbook's monitor phase as the runner renders it: its ``alarms`` step and its
``monitored`` gate against moto, with a planted fault the gate must name."""

from __future__ import annotations

import re
from typing import Any

import boto3
import pytest
from pydantic import ValidationError

from elematrix_tui.actions import default_registry
from elematrix_tui.actions.aws import Assert, Ensure
from elematrix_tui.actions.aws_kinds.cloudwatch import AlarmsSpec, alarm_count, alarm_sets
from elematrix_tui.actions.aws_kinds.elbv2 import metric_dimension
from elematrix_tui.bundled import runbooks_dir
from elematrix_tui.engine.action import ActionFailed
from elematrix_tui.engine.expressions import render_value
from elematrix_tui.engine.loader import load_runbook

pytestmark = pytest.mark.usefixtures("moto")

LB_ARN = ("arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/"
          "prod-alb/50dc6c495c0c9188")
TG_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/prod-tg/73e2d6bc24d8a067"


def test_metric_dimensions_are_the_arns_resource_parts() -> None:
    # The ELB guide's examples: LoadBalancer app/my-load-balancer/50dc6c495c0c9188,
    # TargetGroup targetgroup/my-target-group/73e2d6bc24d8a067.
    assert metric_dimension(LB_ARN) == "app/prod-alb/50dc6c495c0c9188"
    assert metric_dimension(TG_ARN) == "targetgroup/prod-tg/73e2d6bc24d8a067"


def test_a_set_needs_exactly_its_dimensions() -> None:
    ok = AlarmsSpec(topic_arn="t", sets=["instance"], dimensions={"InstanceId": "i-1",
                                                                  "LoadBalancer": ""})
    assert [a.id for a in ok.all_alarms()] == [a["id"] for a in alarm_sets()["instance"][1]]
    assert all(a.dimensions == {"InstanceId": "i-1"} for a in ok.all_alarms())
    for spec, said in (
            ({"sets": ["nope"]}, "unknown alarm set(s) nope"),
            ({"sets": ["instance"]}, "missing InstanceId"),
            ({"sets": ["instance"], "dimensions": {"InstanceId": ""}}, "missing InstanceId"),
            ({"sets": ["instance"], "dimensions": {"InstanceId": "i-1", "Typo": "x"}},
             "not used by any set: Typo"),
            ({"sets": ["instance"], "dimensions": {"InstanceId": "i-1"},
              "alarms": [{"id": "disk", "metric": "m", "threshold": 1}]},
             "alarm id(s) disk given twice")):
        with pytest.raises(ValidationError, match=re.escape(said)):
            AlarmsSpec(topic_arn="t", **spec)


def _monitor(values: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The alarms step's and the monitored gate's inputs, rendered as the runner does."""
    rb = load_runbook(runbooks_dir() / "production.yaml", default_registry())
    params = {p.name: p.default for p in rb.params}
    params.update(values)
    phase = next(ph for ph in rb.phases if ph.id == "monitor")
    steps = {"load_balancer": {"metric_dimension": metric_dimension(LB_ARN)},
             "target_group": {"metric_dimension": metric_dimension(TG_ARN)},
             "database": {"db_instance_id": "elematrix-prod"},
             "instance": {"instance_id": "i-0123456789abcdef0"}}
    scope = {"params": params, "deployment": "prod", "steps": steps}
    alarms = next(s for s in phase.steps if s.id == "alarms")
    return scope, [alarms.with_, next(g for g in phase.gates if g.id == "monitored").with_]


@pytest.mark.parametrize("host", ["", "203.0.113.9"])
def test_the_monitor_phase_makes_each_sets_alarms_and_its_gate_proves_them(
        ctx: Any, host: str) -> None:
    scope, (alarms_with, gate_with) = _monitor({"host": host})
    topic = ctx.run(Ensure(), {"kind": "sns_topic", "name": f"elematrix-{ctx.deployment}-alerts",
                               "spec": {"email": ""}}).outputs
    scope["steps"]["alerts_topic"] = topic
    inputs = render_value(alarms_with, scope)
    sets = ["alb", "rds"] if host else ["instance", "alb", "rds"]
    assert inputs["spec"]["sets"] == sets
    inputs["name"] = f"elematrix-{ctx.deployment}"
    res = ctx.run(Ensure(), inputs)
    names = res.outputs["alarm_names"]
    assert len(names) == alarm_count(sets)
    cw = boto3.client("cloudwatch")
    got = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNames=names)["MetricAlarms"]}
    dims = {n.removeprefix(f"elematrix-{ctx.deployment}-"): {
        d["Name"]: d["Value"] for d in a["Dimensions"]} for n, a in got.items()}
    assert dims["no-healthy-target"] == {"LoadBalancer": "app/prod-alb/50dc6c495c0c9188",
                                         "TargetGroup": "targetgroup/prod-tg/73e2d6bc24d8a067"}
    assert dims["elb-5xx"] == {"LoadBalancer": "app/prod-alb/50dc6c495c0c9188"}
    assert dims["db-storage"] == {"DBInstanceIdentifier": "elematrix-prod"}
    assert ("disk" in dims) is (not host)
    scope["steps"]["alarms"] = res.outputs
    gate = render_value(gate_with, scope)
    passed = ctx.run(Assert(), gate)
    assert passed.status == "ok", passed

    # A fault planted by hand: the ALB's 5xx alarm now watches another load balancer.
    five = got[f"elematrix-{ctx.deployment}-elb-5xx"]
    cw.put_metric_alarm(
        AlarmName=five["AlarmName"], MetricName=five["MetricName"],
        Namespace=five["Namespace"], Statistic=five["Statistic"],
        Period=five["Period"], EvaluationPeriods=five["EvaluationPeriods"],
        Threshold=five["Threshold"], ComparisonOperator=five["ComparisonOperator"],
        AlarmActions=five["AlarmActions"],
        Dimensions=[{"Name": "LoadBalancer", "Value": "app/other/1"}])
    with pytest.raises(ActionFailed) as e:
        ctx.run(Assert(), gate)
    assert "the ALB's alarms watch this load balancer" in (e.value.message + str(
        e.value.diagnosis))
    # And the step sees the drift and puts it back.
    assert any("update alarm" in c and "dimensions" in c
               for c in ctx.check(Ensure(), inputs).changes)
    ctx.run(Ensure(), inputs)
    assert ctx.run(Assert(), gate).status == "ok"
