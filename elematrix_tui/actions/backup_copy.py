"""``restore.copy_backup``: one complete backup of another deployment, copied server-side
into this deployment's bucket under this deployment's prefix.

The restore drill (``elematrix run restore --set drill=true``, docs/day-two.md) restores
the source's backup into a throwaway deployment. The drill's instance role may read only
its own bucket, and the source's permissions are never widened: so the operator's
credentials copy the backup from bucket to bucket (S3 CopyObject, no byte through this
machine), keeping the backup's UTC stamp (``<source>/<stamp>/`` becomes
``<deployment>/<stamp>/``), so the restore's RPO is still the backup's age.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..engine.action import Action, ActionFailed, Check, Inputs, Result, StepContext
from .aws_errors import error_code, explain

# What a complete backup holds: backup.sh writes these parts (assets/stack/backup.sh.j2)
# and restore.sh's PARTS requires all of them (assets/stack/restore.sh.j2).
BACKUP_PARTS = ("synapse.sql.gz", "signing.key", "config.tar.gz", "media.tar.gz")
# CopyObject copies at most 5 GiB in one request; a larger part goes through the SDK's
# managed (multipart) copy.
SINGLE_COPY_MAX = 5 * 1024 ** 3


class CopyInputs(Inputs):
    source_bucket: str = Field(description="the source deployment's backup bucket")
    source_deployment: str = Field(description="whose backups (their prefix)")
    # "latest" or a prefix of the source's (with or without "<source>/").
    backup: str = "latest"
    bucket: str = Field(description="this deployment's backup bucket (the destination)")
    deployment: str = Field(description="this deployment (the destination prefix)")


def complete_backups(keys: dict[str, int], deployment: str) -> dict[str, int]:
    """``{"<deployment>/<stamp>": bytes}`` of each complete backup among ``keys`` (key ->
    size), as restore.sh's ``complete_backups`` decides it (all of BACKUP_PARTS)."""
    parts: dict[str, dict[str, int]] = {}
    for key, size in keys.items():
        bits = key.split("/")
        if len(bits) == 3 and bits[0] == deployment:
            parts.setdefault(f"{bits[0]}/{bits[1]}", {})[bits[2]] = size
    return {p: sum(have.values()) for p, have in sorted(parts.items())
            if all(x in have for x in BACKUP_PARTS)}


class CopyBackup(Action[CopyInputs]):
    """Copy one complete backup of another deployment into this deployment's bucket."""

    name = "restore.copy_backup"
    Inputs = CopyInputs
    output_names = frozenset({"prefix", "source_prefix", "bytes"})

    def _list(self, ctx: StepContext, bucket: str, prefix: str) -> dict[str, int]:
        from .aws_session import aws_for

        api = aws_for(ctx)
        out: dict[str, int] = {}
        token: str | None = None
        for _page in range(100_000):  # bounded: 100 million keys
            kw: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            if token:
                kw["ContinuationToken"] = token
            r = api.checked("s3", "list_objects_v2", **kw)
            out.update({o["Key"]: int(o["Size"]) for o in r.get("Contents", [])})
            token = r.get("NextContinuationToken")
            if not token:
                break
        return out

    def _choose(self, ctx: StepContext, inputs: CopyInputs) -> tuple[str, int]:
        src = inputs.source_deployment
        found = complete_backups(self._list(ctx, inputs.source_bucket, f"{src}/"), src)
        if not found:
            raise ActionFailed(
                f"no complete backup of deployment {src!r} in s3://{inputs.source_bucket}/",
                diagnosis=f"a complete backup holds {', '.join(BACKUP_PARTS)}",
                fix=f"take one on {src}'s host (backup.sh, or its deploy phase's first_backup)")
        if inputs.backup == "latest":
            prefix = list(found)[-1]
        else:
            prefix = inputs.backup.rstrip("/")
            if not prefix.startswith(src + "/"):
                prefix = f"{src}/{prefix}"
            if prefix not in found:
                raise ActionFailed(
                    f"backup {inputs.backup!r} is not a complete backup of {src}",
                    diagnosis="complete backups: " + ", ".join(found),
                    fix="--set backup=latest, or one of the prefixes listed")
        return prefix, found[prefix]

    def _target(self, inputs: CopyInputs, source_prefix: str) -> str:
        return f"{inputs.deployment}/{source_prefix.rsplit('/', 1)[-1]}"

    def check(self, ctx: StepContext, inputs: CopyInputs) -> Check:
        try:
            src, size = self._choose(ctx, inputs)
            have = self._list(ctx, inputs.bucket, self._target(inputs, src) + "/")
        except ActionFailed as e:
            return Check(in_sync=None, unknown_because=e.message)
        target = self._target(inputs, src)
        if complete_backups(have, inputs.deployment).get(target) == size:
            return Check(in_sync=True, outputs={"prefix": target, "source_prefix": src,
                                                "bytes": size})
        return Check(in_sync=False, changes=[
            f"copy s3://{inputs.source_bucket}/{src}/ to s3://{inputs.bucket}/{target}/"])

    def apply(self, ctx: StepContext, inputs: CopyInputs) -> Result:
        from .aws_session import aws_for

        if inputs.source_bucket == inputs.bucket:
            raise ActionFailed("the source's bucket and this deployment's are the same bucket",
                               fix="restore a deployment's own backup without source=")
        api = aws_for(ctx)
        src, size = self._choose(ctx, inputs)
        target = self._target(inputs, src)
        keys = self._list(ctx, inputs.source_bucket, src + "/")
        for part in BACKUP_PARTS:
            copy = {"Bucket": inputs.source_bucket, "Key": f"{src}/{part}"}
            key = f"{target}/{part}"
            ctx.log(f"copy s3://{inputs.source_bucket}/{src}/{part} -> "
                    f"s3://{inputs.bucket}/{key}")
            try:
                if keys.get(f"{src}/{part}", 0) <= SINGLE_COPY_MAX:
                    api.call("s3", "copy_object", CopySource=copy, Bucket=inputs.bucket,
                             Key=key)
                else:
                    api.client("s3").copy(copy, inputs.bucket, key)
            except ActionFailed:
                raise
            except Exception as e:
                if error_code(e) == "AccessDenied":
                    raise ActionFailed(
                        f"S3 refused to copy {src}/{part} into {inputs.bucket}",
                        diagnosis="your credentials need s3:GetObject on the source's "
                                  "bucket and s3:PutObject on this one "
                                  "(assets/aws/operator-policy.json)",
                        fix="grant them, then run the drill again") from e
                raise explain(e, "s3", "copy_object", api.region) from e
        out = {"prefix": target, "source_prefix": src, "bytes": size}
        return Result("changed", outputs=out, data=out,
                      message=f"copied {src} ({size} bytes) to {target}")

    def describe(self, inputs: CopyInputs) -> str:
        return (f"copy backup {inputs.backup!r} of {inputs.source_deployment} into "
                f"s3://{inputs.bucket}/{inputs.deployment}/")
