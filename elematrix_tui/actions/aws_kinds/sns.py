"""The SNS topic kind (alarm notifications) and its e-mail subscription."""

from __future__ import annotations

from typing import Any

from ...engine.action import StepContext
from ..aws_session import AwsApi
from ..aws_tags import tag_list
from .base import Found, Kind, Spec

# --------------------------------------------------------------------------- monitoring


class TopicSpec(Spec):
    email: str | None = None


class Topic(Kind[TopicSpec]):
    Spec = TopicSpec
    title = "SNS topic"

    def _arn(self, api: AwsApi, name: str) -> str | None:
        token = None
        while True:
            kw: dict[str, Any] = {"NextToken": token} if token else {}
            r = api.checked("sns", "list_topics", **kw)
            for t in r.get("Topics", []):
                if t["TopicArn"].rsplit(":", 1)[-1] == name:
                    return str(t["TopicArn"])
            token = r.get("NextToken")
            if not token:
                return None

    def _subscribed(self, api: AwsApi, arn: str, email: str) -> bool:
        subs = api.checked("sns", "list_subscriptions_by_topic", TopicArn=arn)["Subscriptions"]
        return any(s.get("Protocol") == "email" and s.get("Endpoint") == email for s in subs)

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: TopicSpec) -> Found:
        arn = self._arn(api, name)
        sub = [f"subscribe {spec.email} (AWS emails a confirmation link)"] if spec.email else []
        if arn is None:
            return Found(None, changes=[f"create SNS topic {name}", *sub])
        changes = [] if not spec.email or self._subscribed(api, arn, spec.email) else sub
        return Found(arn, {"topic_arn": arn}, changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: TopicSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        changed = False
        arn = found.obj
        if arn is None:
            arn = api.checked("sns", "create_topic", Name=name,
                              Tags=tag_list(ctx, name))["TopicArn"]
            changed = True
        if spec.email and not self._subscribed(api, arn, spec.email):
            api.checked("sns", "subscribe", TopicArn=arn, Protocol="email", Endpoint=spec.email)
            ctx.log(f"AWS sent a confirmation email to {spec.email}: alarms reach it only "
                    "after the link in it is clicked")
            changed = True
        return {"topic_arn": arn}, changed
