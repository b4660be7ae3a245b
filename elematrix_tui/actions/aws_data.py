"""AWS responses as step data: what every AWS action does to a boto3 response before it
becomes outputs (journaled as JSON) or the data ``outputs:`` selectors read."""

from __future__ import annotations

from typing import Any

# Operation name prefixes that only read (aws.call reports them as "ok", aws.assert
# refuses anything else).
READ_PREFIXES = ("describe_", "get_", "list_", "head_", "lookup_", "search_")


def clean(resp: dict[str, Any]) -> dict[str, Any]:
    """The response without boto3's ResponseMetadata (request ids, retries, headers)."""
    return {k: v for k, v in resp.items() if k != "ResponseMetadata"}


def jsonable(v: Any) -> Any:
    """datetimes and bytes from boto3 turned into strings (outputs are journaled as JSON)."""
    import datetime

    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    if isinstance(v, datetime.datetime | datetime.date):
        return v.isoformat()
    if isinstance(v, bytes):
        return f"<{len(v)} bytes>"
    return v
