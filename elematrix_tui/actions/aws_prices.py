"""The dated price table shipped in ``assets/prices.yaml`` and the monthly estimate from it.

The AWS Pricing API is not used: it needs extra permissions, is only in two regions and
moto does not implement it. The table says when its figures were taken and where from.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..bundled import assets_dir

HOURS_PER_MONTH = 730
# CPU credit modes of burstable (T) instances; the runbook's default is the first.
CPU_CREDIT_MODES = ("standard", "unlimited")


def load_prices() -> dict[str, Any]:
    """The parsed price table."""
    text = (assets_dir() / "prices.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def unlimited_worst_case(instance_type: str, t: dict[str, Any], priced: dict[str, Any]
                         ) -> float:
    """USD/month of surplus CPU credits if an ``unlimited`` T instance ran at 100 % of
    every vCPU all month: (1 - baseline) x vCPUs x hours x the per-vCPU-hour credit price."""
    burst = t["burstable"][instance_type]
    surplus_vcpu_hours = (1 - burst["baseline"]) * burst["vcpus"] * HOURS_PER_MONTH
    return float(surplus_vcpu_hours * priced["t3_unlimited_vcpu_hour"])


def estimate(instance_type: str, region: str, volume_gb: int, eip: bool,
             s3_gb: float, alarms: int = 4, table: dict[str, Any] | None = None,
             cpu_credits: str = CPU_CREDIT_MODES[0]) -> dict[str, Any]:
    """Monthly USD estimate, line by line, with the table's date and region caveat.

    One public IPv4 address is billed either way: the Elastic IP when ``eip``, else the
    address EC2 auto-assigns to the interface (both USD 0.005/h since 2024-02-01).
    ``risks`` are costs that may come on top (not in the total): T3 ``unlimited`` surplus
    credits at sustained full load."""
    t = table or load_prices()
    regions: dict[str, Any] = t["regions"]
    priced_region = region if region in regions else t["fallback_region"]
    p = regions[priced_region]
    hourly = p["ec2_hourly"].get(instance_type)
    if hourly is None:
        raise KeyError(f"no price for {instance_type} in assets/prices.yaml")
    ipv4 = "Elastic IP (public IPv4)" if eip else "public IPv4 (auto-assigned)"
    lines = {
        f"EC2 {instance_type} on-demand ({cpu_credits} CPU credits)": hourly * HOURS_PER_MONTH,
        f"EBS gp3 {volume_gb} GB": p["ebs_gp3_gb_month"] * volume_gb,
        ipv4: p["public_ipv4_hourly"] * HOURS_PER_MONTH,
        f"S3 standard ~{s3_gb:g} GB": p["s3_standard_gb_month"] * s3_gb,
        f"CloudWatch {alarms} alarms": p["cloudwatch_alarm_month"] * alarms,
    }
    lines = {k: round(v, 2) for k, v in lines.items()}
    risks: dict[str, float] = {}
    if cpu_credits == "unlimited" and instance_type in t.get("burstable", {}):
        risks[f"T3 unlimited surplus CPU credits at 100 % load "
              f"(USD {p['t3_unlimited_vcpu_hour']}/vCPU-hour above the "
              f"{t['burstable'][instance_type]['baseline']:.0%} baseline)"] = round(
            unlimited_worst_case(instance_type, t, p), 2)
    return {
        "total_usd": round(sum(lines.values()), 2),
        "lines": lines,
        "risks": risks,
        "price_date": str(t["date"]),
        "priced_region": priced_region,
        "note": "" if priced_region == region else
                f"no prices for {region} in the table: {priced_region} prices shown",
    }


def estimate_production(region: str, *, instance_type: str, instances: int, volume_gb: int,
                        db_class: str, db_gb: int, multi_az: bool, cache_type: str,
                        cache_nodes: int, media_gb: float, lcus: float = 1.0,
                        alarms: int = 0, table: dict[str, Any] | None = None
                        ) -> dict[str, Any]:
    """Monthly USD of the production runbook's resources, line by line, from the table's
    ``production`` section (us-east-1 list prices on its date). Unknown sizes are errors
    (KeyError naming them), never a silent zero."""
    t = (table or load_prices())["production"]
    h = HOURS_PER_MONTH
    az = 2 if multi_az else 1
    for what, key, size in (("instance type", "ec2_hourly", instance_type),
                            ("DB instance class", "rds_hourly", db_class),
                            ("cache node type", "elasticache_hourly", cache_type)):
        if size not in t[key]:
            raise KeyError(f"no price for {what} {size} in assets/prices.yaml "
                           f"(priced: {', '.join(sorted(t[key]))})")
    lines = {
        f"ALB (1 load balancer + ~{lcus:g} LCU)": (t["alb_hourly"] + t["alb_lcu_hourly"] * lcus)
        * h,
        f"EC2 {instances} x {instance_type}": t["ec2_hourly"][instance_type] * instances * h,
        f"EBS gp3 {instances} x {volume_gb} GB": t["ebs_gp3_gb_month"] * volume_gb * instances,
        f"RDS PostgreSQL {db_class} {'Multi-AZ' if multi_az else 'Single-AZ'}":
            t["rds_hourly"][db_class] * az * h,
        f"RDS gp3 {db_gb} GB{' x 2 (Multi-AZ)' if multi_az else ''}":
            t["rds_gp3_gb_month"] * db_gb * az,
        f"ElastiCache {cache_nodes} x {cache_type}":
            t["elasticache_hourly"][cache_type] * cache_nodes * h,
        f"public IPv4: {2 + instances} (ALB x 2 zones, {instances} instance(s))":
            t["public_ipv4_hourly"] * (2 + instances) * h,
        f"S3 media ~{media_gb:g} GB": t["s3_standard_gb_month"] * media_gb,
    }
    if alarms:
        lines[f"CloudWatch {alarms} alarms"] = t["cloudwatch_alarm_month"] * alarms
    lines = {k: round(v, 2) for k, v in lines.items()}
    return {"total_usd": round(sum(lines.values()), 2), "lines": lines,
            "price_date": str(t["date"]), "priced_region": t["region"],
            "source": t["source"],
            "note": "" if region == t["region"] else
                    f"no production prices for {region}: {t['region']} list prices shown"}
