"""What every kind shares: the bundled assets (policy documents, user data), the
spec/found/kind framework and the one "not found means None" call."""

from __future__ import annotations

import json
import string
from dataclasses import dataclass, field
from typing import Any, Generic

from pydantic import BaseModel, ConfigDict
from typing_extensions import TypeVar

from ...engine.action import ActionFailed, StepContext
from ...engine.containment import asset_path
from ..aws_errors import error_code, explain
from ..aws_session import AwsApi
from ..aws_tags import TAG_DEPLOYMENT

# --------------------------------------------------------------------------- assets


def asset_text(rel: str) -> str:
    """Text of a bundled asset (``aws/ec2-trust-policy.json``); nothing outside the assets
    directory is ever read (``engine/containment.py``)."""
    path = asset_path(rel)
    try:
        return path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ActionFailed(f"asset {rel}: cannot read: {e}") from e


def asset_json(rel: str, variables: dict[str, str] | None = None) -> Any:
    """A JSON asset with ``${name}`` placeholders filled (unknown names are errors).

    Values are filled JSON-escaped (placeholders sit inside JSON strings), so a value with
    a quote cannot add a statement to a policy. A file that is not JSON is a located error.
    """
    text = asset_text(rel)
    if variables is not None:
        escaped = {k: json.dumps(str(v))[1:-1] for k, v in variables.items()}
        try:
            text = string.Template(text).substitute(escaped)
        except KeyError as e:
            raise ActionFailed(f"asset {rel}: no value for placeholder {e}") from e
        except ValueError as e:
            raise ActionFailed(f"asset {rel}: bad placeholder: {e}") from e
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ActionFailed(f"asset {rel}:{e.lineno}:{e.colno}: not JSON: {e.msg}",
                           diagnosis="a policy document must be a JSON file",
                           fix="name a JSON asset (e.g. aws/ec2-trust-policy.json)") from e


def canon_json(doc: Any) -> str:
    """Canonical JSON of a policy document (AWS may return it URL-encoded or reordered)."""
    if isinstance(doc, str):
        from urllib.parse import unquote

        try:
            doc = json.loads(doc)
        except json.JSONDecodeError:
            doc = json.loads(unquote(doc))
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


# --------------------------------------------------------------------------- framework


class Spec(BaseModel):
    """Base of every kind's spec: unknown keys are errors (typos caught at validate time)."""

    model_config = ConfigDict(extra="forbid")


SpecT = TypeVar("SpecT", bound=Spec, default=Any)


@dataclass
class Found:
    """What ``find`` saw: the resource (None = absent), its outputs and pending changes."""

    obj: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)


class Kind(Generic[SpecT]):
    """A resource kind, generic in its spec model: ``class Bucket(Kind[BucketSpec])`` with
    ``Spec = BucketSpec`` gets the validated spec typed. ``find`` is read-only; ``apply``
    converges and returns outputs."""

    # Not a ClassVar only because a ClassVar cannot name a type variable.
    Spec: type[SpecT] = Spec  # type: ignore[assignment]
    title = "resource"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: SpecT) -> Found:
        """What is there and what ``apply`` would change, read-only."""
        raise NotImplementedError

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: SpecT,
              found: Found) -> tuple[dict[str, Any], bool]:
        """Create or converge; return (outputs, changed)."""
        raise NotImplementedError


def safe_call(api: AwsApi, service: str, op: str, missing: tuple[str, ...] = (),
              **params: Any) -> dict[str, Any] | None:
    """A call whose 'not found' error codes mean None; other errors are explained."""
    try:
        return api.call(service, op, quiet=bool(missing), **params)
    except Exception as e:
        code = error_code(e)
        if code is not None and code in missing:
            return None
        raise explain(e, service, op, api.region) from e


def owned_filters(ctx: StepContext, key: str, name: str) -> list[dict[str, Any]]:
    """EC2 describe filters for this deployment's resource ``name`` (``key``: the filter that
    names it, e.g. ``tag:Name``, ``key-name``, ``group-name``): the one way kinds find theirs."""
    return [{"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [ctx.deployment]},
            {"Name": key, "Values": [name]}]
