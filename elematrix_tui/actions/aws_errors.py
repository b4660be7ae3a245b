"""Turn boto3/botocore exceptions into :class:`ActionFailed` an operator can act on.

botocore is imported lazily (inside :func:`explain`) so importing this module stays cheap.
"""

from __future__ import annotations

import re

from ..engine.action import ActionFailed

# IAM service prefixes differ from boto3 service names for a few services.
_IAM_PREFIX = {
    "elbv2": "elasticloadbalancing",
    "monitoring": "cloudwatch",
    "cloudwatch": "cloudwatch",
    "logs": "logs",
    "ec2": "ec2",
    "iam": "iam",
    "s3": "s3",
    "sts": "sts",
    "ssm": "ssm",
    "sns": "sns",
    "kms": "kms",
}

# S3 operations whose IAM action is not simply s3:<OperationName>.
_S3_ACTIONS = {
    "HeadBucket": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions",
    "ListObjectsV2": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "DeleteObjects": "s3:DeleteObject / s3:DeleteObjectVersion",
    "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "PutBucketTagging": "s3:PutBucketTagging",
    "ListBuckets": "s3:ListAllMyBuckets",
}

CREDENTIAL_CODES = {
    "ExpiredToken", "ExpiredTokenException", "RequestExpired", "InvalidClientTokenId",
    "AuthFailure", "UnrecognizedClientException", "SignatureDoesNotMatch",
    "InvalidAccessKeyId", "MissingAuthenticationToken", "IncompleteSignature",
}
PERMISSION_CODES = {
    "UnauthorizedOperation", "AccessDenied", "AccessDeniedException", "Forbidden",
    "AuthorizationError",
}
THROTTLE_CODES = {
    "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequestsException",
    "SlowDown", "RequestThrottled", "RequestThrottledException", "PriorRequestNotComplete",
}
CAPACITY_CODES = {"InsufficientInstanceCapacity", "InsufficientHostCapacity",
                  "InsufficientCapacity", "Unsupported"}
QUOTA_CODES = {
    "VcpuLimitExceeded", "InstanceLimitExceeded", "AddressLimitExceeded",
    "LimitExceeded", "LimitExceededException", "TooManyBuckets",
    "RulesPerSecurityGroupLimitExceeded", "SecurityGroupLimitExceeded",
    "ResourceLimitExceeded", "ServiceQuotaExceededException", "VolumeLimitExceeded",
    "MaxSpotInstanceCountExceeded", "KeyPairLimitExceeded",
}
_QUOTA_HINT = {
    "VcpuLimitExceeded": "the 'Running On-Demand Standard instances' vCPU quota (L-1216C47A)",
    "InstanceLimitExceeded": "the on-demand instance quota",
    "AddressLimitExceeded": "the 'EC2-VPC Elastic IPs' quota (L-0263D0A3, default 5 per region)",
    "TooManyBuckets": "the S3 bucket quota (L-DC2B2D3D)",
}


def iam_action(service: str, operation: str) -> str:
    """The IAM permission an API operation needs, e.g. ``ec2:RunInstances``."""
    if service == "s3" and operation in _S3_ACTIONS:
        return _S3_ACTIONS[operation]
    return f"{_IAM_PREFIX.get(service, service)}:{operation}"


def explain(exc: BaseException, service: str, operation: str,
            region: str | None = None) -> ActionFailed:
    """An :class:`ActionFailed` with diagnosis and fix for an exception from a boto3 call."""
    from botocore import exceptions as bx

    op_api = "".join(p.capitalize() for p in operation.split("_"))
    where = f"{service}.{operation}"
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return ActionFailed(
            f"{where}: no AWS credentials found",
            diagnosis="boto3 found no credentials in the environment, the shared config "
                      "files (~/.aws) or an instance/SSO provider.",
            fix="Run `aws configure` or `aws sso login --profile NAME` and pass "
                "`--set aws_profile=NAME` (or export AWS_PROFILE), then resume the run.",
        )
    if isinstance(exc, bx.TokenRetrievalError | bx.SSOTokenLoadError
                  | bx.UnauthorizedSSOTokenError):
        return ActionFailed(
            f"{where}: the SSO session has expired",
            diagnosis=str(exc),
            fix="Run `aws sso login` for the profile in use, then resume the run.",
        )
    if isinstance(exc, bx.NoRegionError):
        return ActionFailed(
            f"{where}: no AWS region configured",
            diagnosis="Neither AWS_REGION, the profile nor the runbook parameter aws_region "
                      "names a region.",
            fix="Pass `--set aws_region=eu-central-1` (or your region) or export AWS_REGION.",
        )
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError
                  | bx.ReadTimeoutError):
        return ActionFailed(
            f"{where}: cannot reach the AWS endpoint",
            diagnosis=f"{type(exc).__name__}: {exc}. botocore already retried the call.",
            fix="Check the network (VPN, proxy, firewall) and AWS_ENDPOINT_URL if set, "
                "then resume the run: finished steps are not repeated.",
        )
    if isinstance(exc, bx.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "Unknown"))
        msg = str(err.get("Message", ""))
        meta = exc.response.get("ResponseMetadata", {})
        retries = meta.get("RetryAttempts", 0)
        rid = meta.get("RequestId", "")
        tail = f" (request id {rid})" if rid else ""
        head = f"{where} failed: {code}: {msg}{tail}"
        if code in CREDENTIAL_CODES:
            expired = "xpired" in code or "expired" in msg.lower()
            return ActionFailed(
                head,
                diagnosis=("The AWS credentials have expired."
                           if expired else
                           "AWS rejected the credentials (wrong key, deleted key, or a "
                           "clock that is off by more than 5 minutes)."),
                fix="Refresh the credentials (`aws sso login`, new access keys, or check the "
                    "system clock), then `elematrix resume` — nothing is created twice.",
            )
        if code in PERMISSION_CODES:
            perm = iam_action(service, op_api)
            decode = ""
            m = re.search(r"Encoded authorization failure message: (\S+)", msg)
            if m:
                decode = (" The full reason: `aws sts decode-authorization-message "
                          "--encoded-message <the encoded message in the log>`.")
            return ActionFailed(
                f"{where} failed: {code}{tail}",
                diagnosis=f"The identity in use lacks the IAM permission `{perm}` "
                          f"(or an SCP / permission boundary denies it).{decode}",
                fix=f"Grant `{perm}` to the user or role (see docs/aws.md for the full "
                    "policy this runbook needs), then resume the run.",
            )
        if code in THROTTLE_CODES:
            return ActionFailed(
                head,
                diagnosis=f"AWS throttled the API. botocore retried {retries} times with "
                          "backoff (standard retry mode) and was still throttled.",
                fix="Wait a minute and resume; if it persists, other tooling in the account "
                    "is using the same API quota.",
            )
        if code in CAPACITY_CODES and ("apacity" in code or "capacity" in msg.lower()):
            return ActionFailed(
                head,
                diagnosis="AWS has no capacity for this instance type in this availability "
                          "zone right now.",
                fix="Resume later, or pick another availability zone (subnet) or "
                    "`--set instance_type=t3.large`.",
            )
        if code in QUOTA_CODES:
            what = _QUOTA_HINT.get(code, "a service quota of the account")
            return ActionFailed(
                head,
                diagnosis=f"The account has reached {what}"
                          + (f" in {region}" if region else "") + ".",
                fix="Release unused resources or request an increase in the Service Quotas "
                    "console, then resume the run.",
            )
        return ActionFailed(head, diagnosis=f"AWS returned {code} for {where}.",
                            fix="Read the AWS message above; fix the cause and resume.")
    if isinstance(exc, NotImplementedError):
        return ActionFailed(
            f"{where}: not implemented by this AWS endpoint",
            diagnosis=f"The endpoint (an emulator such as moto) does not implement "
                      f"{op_api}: {exc}",
            fix="Run this step against real AWS; an emulator cannot exercise it.",
        )
    if isinstance(exc, bx.BotoCoreError):
        return ActionFailed(f"{where}: {exc}", diagnosis=type(exc).__name__,
                            fix="Check the AWS configuration and resume.")
    return ActionFailed(f"{where}: {type(exc).__name__}: {exc}")


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a ClientError, else None."""
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):
        code = resp.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None
