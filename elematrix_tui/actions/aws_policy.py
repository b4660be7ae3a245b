"""The operator's IAM policy (``assets/aws/operator-policy.json``) for one region.

The asset carries ``${partition}``, ``${region}`` and ``${dns_suffix}`` placeholders:
ARNs differ per partition (``arn:aws-cn:``...) and EBS's use of a customer-managed KMS key
is allowed only through EC2 in that region (``kms:ViaService`` =
``ec2.<region>.<dns suffix>``). Print it for a region with::

    python -m elematrix_tui.actions.aws_policy eu-west-1 > operator-policy.json
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .aws_kinds import asset_json
from .aws_session import dns_suffix, partition_of

OPERATOR_POLICY = "aws/operator-policy.json"


def operator_policy(region: str, partition: str | None = None) -> dict[str, Any]:
    """The operator policy with its placeholders filled for ``region`` (the partition
    from the region's name unless given, e.g. from the caller identity ARN)."""
    part = partition or partition_of("", region)
    doc: dict[str, Any] = asset_json(OPERATOR_POLICY, {
        "partition": part, "region": region, "dns_suffix": dns_suffix(part)})
    return doc


def main(argv: list[str] | None = None) -> int:
    """Print the policy for the region given as the only argument."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0] or args[0].startswith("-"):
        print("usage: python -m elematrix_tui.actions.aws_policy REGION", file=sys.stderr)
        return 2
    print(json.dumps(operator_policy(args[0]), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
