"""Any other resource: a describe call and a JMESPath find it, a create call makes it."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ...engine.action import StepContext
from ..aws_session import AwsApi
from ..aws_tags import tag_list, tag_spec
from .base import Found, Kind, Spec

# --------------------------------------------------------------------------- generic


class OpSpec(Spec):
    operation: str
    params: dict[str, Any] = Field(default_factory=dict)
    # JMESPath selecting the resource in the response (null/empty = not found).
    query: str | None = None


class GenericSpec(Spec):
    service: str
    find: OpSpec
    create: OpSpec
    # EC2 resource type: tags go into TagSpecifications of the create call.
    tag_resource_type: str | None = None
    # Or the name of the create call's tag-list parameter (``Tags``).
    tags_param: str | None = None


class Generic(Kind[GenericSpec]):
    """Any resource: a describe call + JMESPath finds it, a create call makes it."""

    Spec = GenericSpec
    title = "resource"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: GenericSpec) -> Found:
        import jmespath

        r = api.checked(spec.service, spec.find.operation, **spec.find.params)
        obj = jmespath.search(spec.find.query, r) if spec.find.query else r
        if obj in (None, [], {}):
            return Found(None, changes=[f"{spec.service}.{spec.create.operation} ({name})"])
        return Found(obj, {"resource": obj})

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: GenericSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        import jmespath

        if found.obj is not None:
            return found.outputs, False
        params = dict(spec.create.params)
        if spec.tag_resource_type:
            params["TagSpecifications"] = tag_spec(ctx, spec.tag_resource_type, name)
        if spec.tags_param:
            params[spec.tags_param] = tag_list(ctx, name)
        r = api.checked(spec.service, spec.create.operation, **params)
        obj = jmespath.search(spec.create.query, r) if spec.create.query else r
        if isinstance(obj, dict):
            obj = {k: v for k, v in obj.items() if k != "ResponseMetadata"}
        return {"resource": obj}, True
