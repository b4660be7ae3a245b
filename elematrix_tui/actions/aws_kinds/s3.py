"""The S3 bucket kind: versioning, public access block, encryption, lifecycle, policy
and the deployment tag, each converged when it drifted."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from ...engine.action import ActionFailed, StepContext
from ...engine.containment import JsonAssetPath
from ..aws_errors import error_code, explain
from ..aws_session import AwsApi
from ..aws_tags import has_deployment_tag, tag_list
from .base import Found, Kind, Spec, asset_json, canon_json, safe_call

# --------------------------------------------------------------------------- S3


class BucketSpec(Spec):
    versioning: bool = True
    block_public: bool = True
    # SSE-KMS (FSBP S3.17); no kms_key_id: the AWS-managed key aws/s3 (no key to create,
    # no monthly fee; the S3 Bucket Key keeps KMS requests to a few per day).
    encryption: Literal["AES256", "aws:kms"] = "aws:kms"
    kms_key_id: str | None = None
    # Bucket owner enforced: ACLs disabled, every object belongs to the bucket owner
    # (FSBP S3.12). What S3 gives new buckets since April 2023; converged for older ones.
    acls_disabled: bool = True
    deny_insecure_transport: bool = True
    policy: JsonAssetPath = "aws/bucket-policy.json"
    # More ${placeholders} of ``policy`` besides ${bucket_arn} (the ALB log bucket's
    # ${account_id} and ${elb_principal}).
    policy_variables: dict[str, str] = Field(default_factory=dict)
    noncurrent_version_days: int = Field(default=30, ge=1)
    # Backups are new keys every day, so they are all *current* versions: without an
    # expiry of current objects the bucket grows forever. Applies under ``expire_prefix``
    # (the deployment's prefix); None: keep current objects forever.
    expire_current_days: int | None = Field(default=None, ge=1)
    expire_prefix: str = ""


OWNERSHIP = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
_PAB = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True}


LC_NONCURRENT = "expire-old-versions"
LC_CURRENT = "expire-backups"


def _lifecycle_rules(spec: BucketSpec) -> list[dict[str, Any]]:
    """The lifecycle rules the bucket must have (other rules are replaced)."""
    rules: list[dict[str, Any]] = [{
        "ID": LC_NONCURRENT, "Status": "Enabled", "Filter": {"Prefix": ""},
        "NoncurrentVersionExpiration": {"NoncurrentDays": spec.noncurrent_version_days},
        # Expiring a current version leaves a delete marker; once its old versions are
        # gone too, the lone marker is removed as well.
        "Expiration": {"ExpiredObjectDeleteMarker": True},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
    }]
    if spec.expire_current_days:
        rules.append({"ID": LC_CURRENT, "Status": "Enabled",
                      "Filter": {"Prefix": spec.expire_prefix},
                      "Expiration": {"Days": spec.expire_current_days}})
    return rules


def _lc_view(rules: list[dict[str, Any]]) -> list[str]:
    """Rules reduced to what matters, comparable whatever shape S3 returns them in."""
    out = []
    for r in rules:
        flt = r.get("Filter") or {}
        prefix = flt.get("Prefix", r.get("Prefix", ""))
        out.append(json.dumps([r.get("ID"), r.get("Status"), prefix, r.get("Expiration"),
                               (r.get("NoncurrentVersionExpiration") or {}).get(
                                   "NoncurrentDays"),
                               (r.get("AbortIncompleteMultipartUpload") or {}).get(
                                   "DaysAfterInitiation")], sort_keys=True))
    return sorted(out)


ACLS_OFF = "disable ACLs (bucket owner enforced)"


def _enc_text(spec: BucketSpec) -> str:
    if spec.encryption == "AES256":
        return "SSE-S3 (AES256)"
    return f"SSE-KMS with {spec.kms_key_id or 'the AWS-managed key aws/s3'}"


def _lc_change(spec: BucketSpec) -> str:
    extra = (f"; current backups under {spec.expire_prefix or '/'} after "
             f"{spec.expire_current_days} days" if spec.expire_current_days else "")
    return f"lifecycle: expire old versions after {spec.noncurrent_version_days} days{extra}"


class Bucket(Kind[BucketSpec]):
    """The backup bucket. Its name is unique per account (``elematrix-<dep>-<account>``)."""

    Spec = BucketSpec
    title = "S3 bucket"

    def _settings(self, api: AwsApi, name: str, spec: BucketSpec) -> list[str]:
        changes: list[str] = []
        v = api.checked("s3", "get_bucket_versioning", Bucket=name)
        if spec.versioning and v.get("Status") != "Enabled":
            changes.append("enable versioning")
        if spec.block_public:
            pab = safe_call(api, "s3", "get_public_access_block",
                        ("NoSuchPublicAccessBlockConfiguration",), Bucket=name)
            if pab is None or pab["PublicAccessBlockConfiguration"] != _PAB:
                changes.append("block all public access (4 settings)")
        enc = safe_call(api, "s3", "get_bucket_encryption",
                    ("ServerSideEncryptionConfigurationNotFoundError",), Bucket=name)
        algo, key = None, None
        if enc:
            rules = enc["ServerSideEncryptionConfiguration"]["Rules"]
            algo = rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
            key = rules[0]["ApplyServerSideEncryptionByDefault"].get("KMSMasterKeyID")
        want_key = spec.kms_key_id if spec.encryption == "aws:kms" else None
        if algo != spec.encryption or (key or None) != (want_key or None):
            changes.append(f"default encryption {_enc_text(spec)}")
        if spec.acls_disabled:
            own = safe_call(api, "s3", "get_bucket_ownership_controls",
                            ("OwnershipControlsNotFoundError",), Bucket=name)
            if own is None or own.get("OwnershipControls") != OWNERSHIP:
                changes.append(ACLS_OFF)
        if spec.deny_insecure_transport:
            pol = safe_call(api, "s3", "get_bucket_policy", ("NoSuchBucketPolicy",), Bucket=name)
            want = canon_json(asset_json(spec.policy, {**spec.policy_variables,
                                                        "bucket_arn": api.arn("s3", name)}))
            if pol is None or canon_json(pol["Policy"]) != want:
                changes.append("bucket policy denying non-TLS access")
        lc = safe_call(api, "s3", "get_bucket_lifecycle_configuration",
                   ("NoSuchLifecycleConfiguration",), Bucket=name)
        if lc is None or _lc_view(lc["Rules"]) != _lc_view(_lifecycle_rules(spec)):
            changes.append(_lc_change(spec))
        tags = safe_call(api, "s3", "get_bucket_tagging", ("NoSuchTagSet",), Bucket=name)
        if tags is None or not has_deployment_tag(tags["TagSet"], api.ctx.deployment):
            changes.append("tag the bucket")
        return changes

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: BucketSpec) -> Found:
        try:
            head = safe_call(api, "s3", "head_bucket", ("404", "NoSuchBucket", "NotFound"),
                         Bucket=name)
        except ActionFailed as e:
            if "403" not in e.message and "Forbidden" not in e.message:
                raise
            raise ActionFailed(
                f"bucket name {name} is taken, and not by this account",
                diagnosis="S3 bucket names are global; HeadBucket answered 403, so another "
                          "account owns it (or a policy denies s3:ListBucket to you).",
                fix="Use another deployment name, or grant s3:ListBucket if the bucket is "
                    "yours.") from e
        if head is None:
            return Found(None, changes=[f"create bucket {name}", *self._all(spec)])
        out = {"bucket": name, "bucket_arn": api.arn("s3", name)}
        return Found(True, out, self._settings(api, name, spec))

    def _all(self, spec: BucketSpec) -> list[str]:
        return ["enable versioning", "block all public access (4 settings)",
                f"default encryption {_enc_text(spec)}",
                *([ACLS_OFF] if spec.acls_disabled else []),
                "bucket policy denying non-TLS access", _lc_change(spec), "tag the bucket"]

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: BucketSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        if found.obj is None:
            params: dict[str, Any] = {"Bucket": name}
            if api.region != "us-east-1":
                params["CreateBucketConfiguration"] = {"LocationConstraint": api.region}
            try:
                api.call("s3", "create_bucket", **params)
            except Exception as e:
                if error_code(e) != "BucketAlreadyOwnedByYou":
                    raise explain(e, "s3", "create_bucket", api.region) from e
            todo = self._all(spec)
        else:
            todo = found.changes
        arn = api.arn("s3", name)
        for change in todo:
            if change == "tag the bucket":
                api.checked("s3", "put_bucket_tagging", Bucket=name,
                            Tagging={"TagSet": tag_list(ctx, name)})
            elif change == "enable versioning":
                api.checked("s3", "put_bucket_versioning", Bucket=name,
                            VersioningConfiguration={"Status": "Enabled"})
            elif change.startswith("block all public"):
                api.checked("s3", "put_public_access_block", Bucket=name,
                            PublicAccessBlockConfiguration=dict(_PAB))
            elif change.startswith("default encryption"):
                rule: dict[str, Any] = {"SSEAlgorithm": spec.encryption}
                if spec.encryption == "aws:kms" and spec.kms_key_id:
                    rule["KMSMasterKeyID"] = spec.kms_key_id
                api.checked("s3", "put_bucket_encryption", Bucket=name,
                            ServerSideEncryptionConfiguration={"Rules": [
                                {"ApplyServerSideEncryptionByDefault": rule,
                                 "BucketKeyEnabled": spec.encryption == "aws:kms"}]})
            elif change == ACLS_OFF:
                api.checked("s3", "put_bucket_ownership_controls", Bucket=name,
                            OwnershipControls=OWNERSHIP)
            elif change.startswith("bucket policy"):
                api.checked("s3", "put_bucket_policy", Bucket=name, Policy=json.dumps(
                    asset_json(spec.policy, {**spec.policy_variables, "bucket_arn": arn})))
            elif change.startswith("lifecycle"):
                api.checked("s3", "put_bucket_lifecycle_configuration", Bucket=name,
                            LifecycleConfiguration={"Rules": _lifecycle_rules(spec)})
        return {"bucket": name, "bucket_arn": arn}, bool(todo)
