"""The dated price table shipped in ``assets/prices.yaml`` and the monthly estimate from it.

The AWS Pricing API is not used: it needs extra permissions, is only in two regions and
moto does not implement it. The table says when its figures were taken.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

HOURS_PER_MONTH = 730


def load_prices() -> dict[str, Any]:
    """The parsed price table."""
    text = resources.files("elematrix_tui").joinpath("assets/prices.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def estimate(instance_type: str, region: str, volume_gb: int, eip: bool,
             s3_gb: float, alarms: int = 4, table: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """Monthly USD estimate, line by line, with the table's date and region caveat."""
    t = table or load_prices()
    regions: dict[str, Any] = t["regions"]
    priced_region = region if region in regions else t["fallback_region"]
    p = regions[priced_region]
    hourly = p["ec2_hourly"].get(instance_type)
    if hourly is None:
        raise KeyError(f"no price for {instance_type} in assets/prices.yaml")
    lines = {
        f"EC2 {instance_type} on-demand": hourly * HOURS_PER_MONTH,
        f"EBS gp3 {volume_gb} GB": p["ebs_gp3_gb_month"] * volume_gb,
        "public IPv4 / Elastic IP": (p["public_ipv4_hourly"] * HOURS_PER_MONTH) if eip else 0.0,
        f"S3 standard ~{s3_gb:g} GB": p["s3_standard_gb_month"] * s3_gb,
        f"CloudWatch {alarms} alarms": p["cloudwatch_alarm_month"] * alarms,
    }
    lines = {k: round(v, 2) for k, v in lines.items()}
    return {
        "total_usd": round(sum(lines.values()), 2),
        "lines": lines,
        "price_date": str(t["date"]),
        "priced_region": priced_region,
        "note": "" if priced_region == region else
                f"no prices for {region} in the table: {priced_region} prices shown",
    }
