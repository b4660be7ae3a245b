"""The SSM parameter kind (the CloudWatch agent configuration)."""

from __future__ import annotations

from typing import Any

from ...engine.action import ActionFailed, StepContext
from ...engine.containment import AssetPath
from ..aws_session import AwsApi
from ..aws_tags import tag_list
from .base import Found, Kind, Spec, asset_text, safe_call


class SsmParameterSpec(Spec):
    value: str | None = None
    asset: AssetPath | None = None
    description: str = ""


class SsmParameter(Kind[SsmParameterSpec]):
    """A String parameter (the CloudWatch agent config the agent fetches with ``ssm:``)."""

    Spec = SsmParameterSpec
    title = "SSM parameter"

    def _value(self, spec: SsmParameterSpec) -> str:
        if spec.asset:
            return asset_text(spec.asset)
        if spec.value is None:
            raise ActionFailed("ssm_parameter needs 'value' or 'asset'")
        return spec.value

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: SsmParameterSpec) -> Found:
        r = safe_call(api, "ssm", "get_parameter", ("ParameterNotFound",), Name=name)
        out = {"parameter_name": name}
        if r is None:
            return Found(None, out, [f"create SSM parameter {name}"])
        ok = r["Parameter"]["Value"] == self._value(spec)
        return Found(r["Parameter"], out, [] if ok else [f"update SSM parameter {name}"])

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: SsmParameterSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        if not found.changes:
            return found.outputs, False
        if found.obj is None:
            api.checked("ssm", "put_parameter", Name=name, Value=self._value(spec),
                        Type="String", Description=spec.description,
                        Tags=tag_list(ctx, name))
        else:
            api.checked("ssm", "put_parameter", Name=name, Value=self._value(spec),
                        Type="String", Overwrite=True)
        return found.outputs, True
