"""One boto3 session per run, cached clients, logged calls and the account guard.

Every AWS action goes through :func:`aws_for`, which returns an :class:`AwsApi` bound to
the calling step's context. The session is a per-run resource (``ctx.resource``), so
clients and their connection pools are reused across steps; each call is logged as an
``aws.call`` note (service, operation, masked parameters, request id, duration, summary)
and as one short log line, and failures become :class:`ActionFailed` with a diagnosis.

The first time a run touches AWS, the account guard compares the caller's account and
region with the ones recorded for the deployment (``ctx.get_meta``) and refuses another
target unless the operator passed ``retarget_account=true``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from ..engine.action import ActionFailed, StepContext
from ..engine.params import truthy
from ..engine.readonly import is_read_only
from .aws_errors import explain

SESSION_KEY = "aws.session"
META_ACCOUNT = "aws.account_id"
META_REGION = "aws.region"

# Parameter names whose values never reach a log line, note or journal.
_SECRET_KEYS = ("password", "secret", "token", "privatekey", "keymaterial", "credentials",
                "sessiontoken")
# Parameters that are not secret but too long to be useful in a log line.
_BULKY_KEYS = {"UserData", "PublicKeyMaterial", "Policy", "PolicyDocument",
               "AssumeRolePolicyDocument", "Value"}

DEFAULT_MAX_ATTEMPTS = 8

CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60

# The partitions this tool knows, by region prefix, and their service DNS suffix. The
# caller identity's ARN is the authority (``partition_of``); the region is the fallback.
_PARTITION_PREFIXES = (("cn-", "aws-cn"), ("us-gov-", "aws-us-gov"))
_DNS_SUFFIX = {"aws": "amazonaws.com", "aws-cn": "amazonaws.com.cn",
               "aws-us-gov": "amazonaws.com"}


def partition_of(arn: str = "", region: str = "") -> str:
    """The ARN partition (``aws``, ``aws-cn``, ``aws-us-gov``): the caller identity's ARN
    says it; without one, the region's name does. Every ARN this tool writes uses it."""
    parts = arn.split(":")
    if len(parts) > 2 and parts[0] == "arn" and parts[1]:
        return parts[1]
    for prefix, partition in _PARTITION_PREFIXES:
        if region.startswith(prefix):
            return partition
    return "aws"


def dns_suffix(partition: str) -> str:
    """Service endpoint suffix of a partition (``ec2.<region>.<suffix>`` for kms:ViaService)."""
    return _DNS_SUFFIX.get(partition, "amazonaws.com")


def mask_params(params: Any, _key: str = "") -> Any:
    """A copy of ``params`` safe to log: secrets masked, bulky documents summarised."""
    low = _key.lower().replace("_", "")
    if _key and any(s in low for s in _SECRET_KEYS) and not isinstance(params, bool):
        return "***"
    if isinstance(params, dict):
        return {k: mask_params(v, str(k)) for k, v in params.items()}
    if isinstance(params, list | tuple):
        return [mask_params(v, _key) for v in params]
    if isinstance(params, bytes):
        return f"<{len(params)} bytes>"
    if isinstance(params, str) and (_key in _BULKY_KEYS or len(params) > 200):
        return f"<{len(params)} chars>"
    return params


def summarize(response: Any) -> str:
    """A one-line summary of a response: its ids and list sizes."""
    if not isinstance(response, dict):
        return type(response).__name__
    parts: list[str] = []
    for k, v in response.items():
        if k == "ResponseMetadata":
            continue
        if isinstance(v, list):
            parts.append(f"{k}: {len(v)}")
        elif isinstance(v, str | int | float | bool) and len(str(v)) <= 80:
            parts.append(f"{k}={v}")
        elif isinstance(v, dict):
            ids = [f"{k2}={v2}" for k2, v2 in v.items()
                   if isinstance(v2, str) and (k2.endswith("Id") or k2.endswith("Arn")
                                               or k2 in ("State", "Status"))]
            parts.append(f"{k}{{{', '.join(ids[:3])}}}" if ids else k)
        if len(parts) >= 4:
            break
    return ", ".join(parts) or "ok"


class AwsSession:
    """The per-run shared part: one boto3 Session and its clients (thread-safe cache)."""

    # Called with each new session before any client exists: tests and benchmarks register
    # botocore event handlers here (e.g. a before-send handler injecting throttling).
    on_create: ClassVar[list[Callable[[AwsSession], None]]] = []

    def __init__(self, profile: str | None, region: str | None) -> None:
        import boto3

        # botocore reads AWS_DEFAULT_REGION but not AWS_REGION (the name the AWS CLI v2 and
        # the SDKs of other languages use): honour both, AWS_REGION first.
        region = region or os.environ.get("AWS_REGION") or None
        self.session = boto3.Session(profile_name=profile or None, region_name=region)
        region_name = self.session.region_name
        if not region_name:
            from botocore.exceptions import NoRegionError

            raise explain(NoRegionError(), "sts", "get_caller_identity")
        self.region: str = region_name
        self.profile = profile
        self.account_id = ""
        self.arn = ""
        self._clients: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self.max_attempts = int(os.environ.get("ELEMATRIX_AWS_MAX_ATTEMPTS",
                                               DEFAULT_MAX_ATTEMPTS))
        for hook in list(self.on_create):
            hook(self)

    def client(self, service: str, region: str | None = None,
               max_attempts: int | None = None) -> Any:
        """A cached client with standard retries and bounded timeouts (``max_attempts``:
        fewer tries for an informative call that may be missing from an emulator)."""
        from botocore.config import Config

        attempts = max_attempts or self.max_attempts
        key = (service, region or self.region) if attempts == self.max_attempts else (
            service, f"{region or self.region}#{attempts}")
        with self._lock:
            c = self._clients.get(key)
            if c is None:
                # total_max_attempts counts the first try too ("max_attempts" would not).
                cfg = Config(retries={"mode": "standard", "total_max_attempts": attempts},
                             connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                             user_agent_extra="elematrix-tui")
                c = self.session.client(service, region_name=region or self.region,
                                        config=cfg)
                self._clients[key] = c
            return c

    def close(self) -> None:
        with self._lock:
            for c in self._clients.values():
                close = getattr(c, "close", None)
                if close is not None:
                    close()
            self._clients.clear()


class AwsApi:
    """The per-step view: the shared session plus the step's context for logging."""

    def __init__(self, shared: AwsSession, ctx: StepContext) -> None:
        self.shared = shared
        self.ctx = ctx

    @property
    def region(self) -> str:
        return self.shared.region

    @property
    def account_id(self) -> str:
        return self.shared.account_id

    @property
    def partition(self) -> str:
        """``aws`` / ``aws-cn`` / ``aws-us-gov`` from the caller identity (``partition_of``)."""
        return partition_of(self.shared.arn, self.region)

    def arn(self, service: str, resource: str, region: str = "", account: str = "") -> str:
        """An ARN in this session's partition: ``arn:<partition>:<svc>:<region>:<acct>:<res>``."""
        return f"arn:{self.partition}:{service}:{region}:{account}:{resource}"

    def client(self, service: str) -> Any:
        return self.shared.client(service)

    def call(self, service: str, operation: str, quiet: bool = False,
             max_attempts: int | None = None, **params: Any) -> dict[str, Any]:
        """Call ``service.operation(**params)``: logged, timed, errors explained."""
        client = self.shared.client(service, max_attempts=max_attempts)
        t0 = time.monotonic()
        try:
            resp: dict[str, Any] = getattr(client, operation)(**params)
        except Exception as e:
            dt = time.monotonic() - t0
            resp_meta = getattr(e, "response", {}) or {}
            rid = resp_meta.get("ResponseMetadata", {}).get("RequestId")
            code = resp_meta.get("Error", {}).get("Code") if resp_meta else type(e).__name__
            self.ctx.note("aws.call", service=service, operation=operation,
                          params=mask_params(params), request_id=rid, duration=round(dt, 4),
                          summary=f"error {code}", error=code,
                          retries=resp_meta.get("ResponseMetadata", {}).get("RetryAttempts", 0))
            if not quiet:
                self.ctx.log(f"aws {service}.{operation} -> error {code} ({dt * 1000:.0f} ms)",
                             "stderr")
            raise
        dt = time.monotonic() - t0
        meta = resp.get("ResponseMetadata", {})
        retries = meta.get("RetryAttempts", 0)
        summary = summarize(resp)
        self.ctx.note("aws.call", service=service, operation=operation,
                      params=mask_params(params), request_id=meta.get("RequestId"),
                      duration=round(dt, 4), summary=summary, retries=retries)
        extra = f", retried {retries}x after throttling/transient errors" if retries else ""
        self.ctx.log(f"aws {service}.{operation} -> {summary} ({dt * 1000:.0f} ms{extra})")
        return resp

    def checked(self, service: str, operation: str, **params: Any) -> dict[str, Any]:
        """Like :meth:`call` but every failure is an operator-facing ActionFailed."""
        try:
            return self.call(service, operation, **params)
        except ActionFailed:
            raise
        except Exception as e:
            raise explain(e, service, operation, self.region) from e


def _guard(shared: AwsSession, ctx: StepContext) -> None:
    """Record or verify the account and region this deployment targets."""
    api = AwsApi(shared, ctx)
    ident = api.checked("sts", "get_caller_identity")
    shared.account_id = str(ident["Account"])
    shared.arn = str(ident.get("Arn", ""))
    expected = str(ctx.params.get("expected_account") or "").strip()
    if expected and expected != shared.account_id:
        raise ActionFailed(
            f"refusing AWS account {shared.account_id}: this deployment expects {expected}",
            diagnosis=f"The credentials in use ({shared.arn}) belong to account "
                      f"{shared.account_id}, but the parameter expected_account is {expected}.",
            fix="Switch to the intended profile (`--set aws_profile=...` / AWS_PROFILE) "
                "or correct expected_account.",
            retry=False,
        )
    rec_acct = ctx.get_meta(META_ACCOUNT)
    rec_region = ctx.get_meta(META_REGION)
    if rec_acct is None:
        if is_read_only(ctx):  # a plan binds nothing: the first run will
            return
        ctx.set_meta(META_ACCOUNT, shared.account_id)
        ctx.set_meta(META_REGION, shared.region)
        ctx.log(f"deployment {ctx.deployment!r} now bound to AWS account "
                f"{shared.account_id} in {shared.region}")
        return
    if rec_acct == shared.account_id and rec_region == shared.region:
        return
    if truthy(ctx.params.get("retarget_account")):
        ctx.log(f"RE-TARGETING deployment {ctx.deployment!r}: account {rec_acct}/{rec_region} "
                f"-> {shared.account_id}/{shared.region} (retarget_account=true)", "stderr")
        ctx.note("aws.retarget", old_account=rec_acct, old_region=rec_region,
                 account=shared.account_id, region=shared.region)
        if not is_read_only(ctx):
            ctx.set_meta(META_ACCOUNT, shared.account_id)
            ctx.set_meta(META_REGION, shared.region)
        return
    raise ActionFailed(
        f"account guard: deployment {ctx.deployment!r} lives in AWS account {rec_acct} "
        f"({rec_region}), but the credentials point at {shared.account_id} ({shared.region})",
        diagnosis="Running against another account or region would create a second, "
                  "orphaned copy of the infrastructure (or touch someone else's).",
        fix="Use the original profile/region, or pass `--set retarget_account=true` if you "
            "really mean to move this deployment (the old resources stay where they are).",
        retry=False,  # a refusal, not a transient failure: retrying only repeats it
    )


def aws_for(ctx: StepContext) -> AwsApi:
    """The run's AWS session (created, and the account guard run, on first use)."""
    profile = str(ctx.params.get("aws_profile") or "") or None
    region = str(ctx.params.get("aws_region") or "") or None

    def factory() -> AwsSession:
        try:
            shared = AwsSession(profile, region)
        except ActionFailed:
            raise
        except Exception as e:  # e.g. ProfileNotFound
            raise explain(e, "sts", "get_caller_identity") from e
        _guard(shared, ctx)
        return shared

    shared = ctx.resource(SESSION_KEY, factory, lambda s: s.close())
    return AwsApi(shared, ctx)
