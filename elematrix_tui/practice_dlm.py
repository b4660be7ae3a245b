"""A stand-in for Amazon Data Lifecycle Manager (DLM) beside the practice emulator.

moto 5.2 has no ``dlm`` backend, so ``elematrix practice``, the rehearsal and the moto
tests serve this one: a small HTTP server on 127.0.0.1 (never another address) speaking
DLM's REST-JSON protocol, reached by boto3 (and Prowler's boto3) through
``AWS_ENDPOINT_URL_DLM`` (botocore's per-service endpoint variable:
botocore/configprovider.py ``_get_service_env_var_name`` gives ``AWS_ENDPOINT_URL_`` + the
service id ``DLM``; the same in the botocore 1.40.61 Prowler pins). The execution role is
looked up in the IAM backend of the moto running in the same process (the emulator's
server or ``mock_aws``), so a role the runbook did not create, or one DLM cannot assume, is
refused as DLM refuses it.

It is never kinder than DLM. What it copies, and where that is written:

- Operations and routes, from botocore's ``botocore/data/dlm/2018-01-12/service-2.json``
  (1.44.8; lines of the decompressed file): CreateLifecyclePolicy ``POST /policies``
  (l.18), DeleteLifecyclePolicy ``DELETE /policies/{policyId}`` (l.33),
  GetLifecyclePolicies ``GET /policies`` (l.48), GetLifecyclePolicy ``GET
  /policies/{policyId}`` (l.64), ListTagsForResource / TagResource / UntagResource
  ``GET|POST|DELETE /tags/{resourceArn}`` (l.79-123), UpdateLifecyclePolicy ``PATCH
  /policies/{policyId}`` (l.124). Errors as the DLM API Reference lists them per
  operation ("Errors" section of each of those pages, and the ``errors`` lists there):
  ``InvalidRequestException`` 400 (l.753), ``ResourceNotFoundException`` 404 (l.1043),
  ``LimitExceededException`` 429 (l.855), sent with the ``x-amzn-ErrorType`` header and a
  ``Message``/``Code`` body, which botocore's rest-json error parser reads.
- Request rules (DLM enforces them server-side; botocore checks only required members and
  minimums, so a client alone would let them through):
  - CreateLifecyclePolicyRequest (l.241): ``ExecutionRoleArn``, ``Description`` and
    ``State`` required. ``ExecutionRoleArn`` (l.623) matches
    ``arn:aws(-[a-z]{1,3}){0,2}:iam::\\d+:role/.*``, and the role must exist and trust
    ``dlm.amazonaws.com``: DLM User Guide, "IAM service roles for Amazon Data Lifecycle
    Manager" ("The role must also have Amazon Data Lifecycle Manager listed as a trusted
    entity"). A role of another account than the caller's is refused too.
  - ``Description`` (PolicyDescription, l.928): 0..500 characters of ``[0-9A-Za-z _-]+``
    (no colon, no dot). ``State`` (SettablePolicyStateValues, l.1232): ENABLED | DISABLED.
  - PolicyDetails (l.934): ``PolicyType`` EBS_SNAPSHOT_MANAGEMENT (the default, l.1021);
    ``ResourceTypes`` exactly one (l.1068) of VOLUME | INSTANCE (l.1061); ``TargetTags``
    1..50 tags (l.1404), required for a custom EBS snapshot policy (API Reference,
    PolicyDetails: "TargetTags ... Required: Conditional ... for custom EBS snapshot
    policies"); ``Schedules`` 1..4 (l.1173).
  - CreateRule (l.308; API Reference CreateRule): either ``CronExpression`` (l.338:
    ``cron\\([^\\n]{11,100}\\)``) or ``Interval`` + ``IntervalUnit`` HOURS (l.749) +
    ``Times``, never both ("You must specify either CronExpression, or Interval,
    IntervalUnit, and Times"); ``Interval`` one of 1, 2, 3, 4, 6, 8, 12, 24 ("The
    supported values are 1, 2, 3, 4, 6, 8, 12, and 24"); ``Times`` one (l.1422) ``hh:mm``
    (l.1416).
  - RetainRule (l.1078): ``Count`` 1..1000 (l.1288 allows 0 only for archive-tier rules,
    which this stand-in does not take) or ``Interval`` + ``IntervalUnit``, not both.
  - Tags (TagMap l.1345: 1..200; TagKey l.1333: 1..128 of ``[a-zA-Z+-=._:/]``, never
    ``aws:``; TagValue l.1375: at most 256).
  - At most 100 lifecycle policies (DLM API Reference, CreateLifecyclePolicy, as the SDKs
    carry it: "You can create up to 100 lifecycle policies"), counted per account and
    Region here: the 101st create is ``LimitExceededException``.
- Answers: LifecyclePolicy (l.771) with ``PolicyArn``
  ``arn:aws:dlm:<region>:<account>:policy/<id>`` (PolicyArn l.922), ``PolicyId``
  ``policy-`` + hex (l.1004), timestamps ISO 8601 (l.1427); GetLifecyclePolicies gives
  LifecyclePolicySummary (l.821) and filters by ``policyIds`` (an unknown id:
  ResourceNotFoundException), ``state``, ``resourceTypes`` and ``targetTags`` (``key=value``).

Stricter than DLM, on purpose: only custom EBS snapshot policies (no default policies,
AMI or event-based policies, cross-region copy, archive or fast restore rules: refused as
InvalidRequestException "not supported by the stand-in"); the exact message texts are
ours (AWS does not publish DLM's). It takes no snapshots: nothing is scheduled.

State is per account and region, kept in memory or, with ``state_file``, in a JSON file
written after every change (practice keeps it in the emulator directory, beside moto's
recording, so a resumed practice run finds its policy and creates no second one).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ENV_ENDPOINT = "AWS_ENDPOINT_URL_DLM"
DLM_PRINCIPAL = "dlm.amazonaws.com"
POLICY_QUOTA = 100
INTERVALS = frozenset({1, 2, 3, 4, 6, 8, 12, 24})
_ROLE_ARN = re.compile(r"arn:aws(-[a-z]{1,3}){0,2}:iam::(\d+):role/.*")
_DESCRIPTION = re.compile(r"[0-9A-Za-z _-]+")
_CRON = re.compile(r"cron\([^\n]{11,100}\)")
_TIME = re.compile(r"^(0[0-9]|1[0-9]|2[0-3]):[0-5][0-9]$")
_TAG_KEY = re.compile(r"^(?!aws:)[a-zA-Z+-=._:/]+$")
_POLICY_ID = re.compile(r"policy-[a-f0-9]+")
_POLICY_ARN = re.compile(r"^arn:aws(-[a-z]{1,3}){0,2}:dlm:([A-Za-z0-9_/.-]{0,63}):(\d+):"
                         r"policy/([0-9A-Za-z_-]{1,128})$")
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/[^/]+/([^/]+)/dlm/")
_RETAIN_UNITS = frozenset({"DAYS", "WEEKS", "MONTHS", "YEARS"})
_UNSUPPORTED = ("FastRestoreRule", "CrossRegionCopyRules", "ShareRules", "DeprecateRule",
                "ArchiveRule", "VariableTags")


class DlmError(Exception):
    """A DLM error answer: HTTP status, error code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _invalid(message: str) -> DlmError:
    return DlmError(400, "InvalidRequestException", message)


def _not_found(message: str) -> DlmError:
    return DlmError(404, "ResourceNotFoundException", message)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def role_trusts_dlm(document: Any) -> bool:
    """Whether a trust policy lets ``dlm.amazonaws.com`` assume the role (an Allow of
    sts:AssumeRole, or sts:*, for that service principal, without a condition)."""
    if isinstance(document, str):
        try:
            document = json.loads(unquote(document) if document.startswith("%") else document)
        except json.JSONDecodeError:
            return False
    statements = document.get("Statement", []) if isinstance(document, dict) else []
    if isinstance(statements, dict):
        statements = [statements]
    for st in statements:
        # A condition the stand-in cannot evaluate: not counted (stricter than DLM, which
        # would assume the role when the condition holds).
        if not isinstance(st, dict) or st.get("Effect") != "Allow" or "Condition" in st:
            continue
        actions = st.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if not any(a in ("sts:AssumeRole", "sts:*", "*") for a in actions):
            continue
        principal = st.get("Principal", {})
        services = principal.get("Service", []) if isinstance(principal, dict) else []
        services = [services] if isinstance(services, str) else services
        if DLM_PRINCIPAL in services:
            return True
    return False


def _moto_role(account: str, arn: str) -> Any:
    """The role of that ARN in this process's moto IAM backend (None: no such role)."""
    from moto.iam.models import iam_backends

    partition = arn.split(":")[1]
    try:
        return iam_backends[account][partition].get_role_by_arn(arn)
    except Exception:
        return None


def _caller_account(access_key: str) -> str:
    """The account moto gives these credentials (its default account for unknown keys)."""
    from moto.iam.models import get_account_id_from

    return str(get_account_id_from(access_key))


class DlmState:
    """The policies of every account and region, validated as DLM validates them."""

    def __init__(self, state_file: Path | None = None) -> None:
        self.state_file = state_file
        self.lock = threading.Lock()
        # "<account>/<region>" -> policy id -> policy
        self.policies: dict[str, dict[str, dict[str, Any]]] = {}
        if state_file is not None and state_file.exists() and state_file.stat().st_size:
            self.policies = json.loads(state_file.read_text())
        # Without a file, the policies live as long as the moto IAM backend their roles
        # are in: a reset of moto (a new mock_aws) resets them too, as if DLM were a moto
        # backend.
        self._by_backend: weakref.WeakKeyDictionary[Any, dict[str, dict[str, Any]]] = \
            weakref.WeakKeyDictionary()

    def _save(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.policies, f, indent=1, sort_keys=True)
        os.replace(tmp, self.state_file)

    # -- validation ---------------------------------------------------------------------

    @staticmethod
    def _tags(tags: Any, what: str = "Tags") -> dict[str, str]:
        if not isinstance(tags, dict) or not 1 <= len(tags) <= 200:
            raise _invalid(f"{what} must be a map of 1 to 200 tags")
        for k, v in tags.items():
            if not isinstance(k, str) or not 1 <= len(k) <= 128 or not _TAG_KEY.match(k):
                raise _invalid(f"tag key {k!r} is not valid (1-128 characters of "
                               f"[a-zA-Z+-=._:/], not starting with aws:)")
            if not isinstance(v, str) or len(v) > 256:
                raise _invalid(f"tag {k!r}: the value must be a string of at most 256 "
                               f"characters")
        return dict(tags)

    @staticmethod
    def _description(d: Any) -> str:
        if not isinstance(d, str) or len(d) > 500 or not _DESCRIPTION.fullmatch(d):
            raise _invalid(f"Description {d!r} must be 1-500 characters of [0-9A-Za-z _-]")
        return d

    @staticmethod
    def _state(s: Any) -> str:
        if s not in ("ENABLED", "DISABLED"):
            raise _invalid(f"State {s!r} must be ENABLED or DISABLED")
        return str(s)

    @staticmethod
    def _role(arn: Any, account: str) -> str:
        m = _ROLE_ARN.fullmatch(arn) if isinstance(arn, str) and len(arn) <= 2048 else None
        if m is None:
            raise _invalid(f"ExecutionRoleArn {arn!r} is not an IAM role ARN")
        if m.group(2) != account:
            raise _invalid(f"ExecutionRoleArn {arn}: the role must be in this account "
                           f"({account})")
        role = _moto_role(account, arn)
        if role is None:
            raise _invalid(f"ExecutionRoleArn {arn}: the role does not exist")
        if not role_trusts_dlm(role.assume_role_policy_document):
            raise _invalid(f"ExecutionRoleArn {arn}: Amazon Data Lifecycle Manager cannot "
                           f"assume the role (its trust policy does not allow "
                           f"{DLM_PRINCIPAL} sts:AssumeRole)")
        return str(arn)

    @classmethod
    def _details(cls, d: Any) -> dict[str, Any]:
        if not isinstance(d, dict):
            raise _invalid("PolicyDetails is required for a custom EBS snapshot policy")
        ptype = d.get("PolicyType", "EBS_SNAPSHOT_MANAGEMENT")
        if ptype != "EBS_SNAPSHOT_MANAGEMENT":
            raise _invalid(f"PolicyType {ptype!r}: only EBS_SNAPSHOT_MANAGEMENT is "
                           f"supported by the stand-in")
        for k in ("EventSource", "Actions", "Parameters", "CrossRegionCopyTargets",
                  "Exclusions", "CreateInterval", "RetainInterval", "ExtendDeletion"):
            if k in d:
                raise _invalid(f"PolicyDetails.{k} is not supported by the stand-in")
        rtypes = d.get("ResourceTypes")
        if not isinstance(rtypes, list) or len(rtypes) != 1 or rtypes[0] not in (
                "VOLUME", "INSTANCE"):
            raise _invalid("PolicyDetails.ResourceTypes must be exactly one of VOLUME, "
                           "INSTANCE")
        locations = d.get("ResourceLocations", ["CLOUD"])
        if locations != ["CLOUD"]:
            raise _invalid("PolicyDetails.ResourceLocations: only CLOUD is supported by the "
                           "stand-in")
        targets = d.get("TargetTags")
        if not isinstance(targets, list) or not 1 <= len(targets) <= 50:
            raise _invalid("PolicyDetails.TargetTags (1 to 50 tags) is required for a "
                           "custom EBS snapshot policy")
        for t in targets:
            if not isinstance(t, dict) or set(t) != {"Key", "Value"} or not all(
                    isinstance(t[k], str) for k in t):
                raise _invalid(f"TargetTags: {t!r} must be {{Key, Value}}")
            cls._tags({t["Key"]: t["Value"]}, "TargetTags")
        schedules = d.get("Schedules")
        if not isinstance(schedules, list) or not 1 <= len(schedules) <= 4:
            raise _invalid("PolicyDetails.Schedules must hold 1 to 4 schedules")
        for s in schedules:
            cls._schedule(s)
        if d.get("PolicyLanguage", "STANDARD") not in ("SIMPLIFIED", "STANDARD"):
            raise _invalid("PolicyLanguage must be SIMPLIFIED or STANDARD")
        return {**d, "PolicyType": ptype, "ResourceLocations": locations}

    @classmethod
    def _schedule(cls, s: Any) -> None:
        if not isinstance(s, dict):
            raise _invalid("a schedule must be a structure")
        for k in _UNSUPPORTED:
            if k in s:
                raise _invalid(f"Schedule.{k} is not supported by the stand-in")
        name = s.get("Name", "")
        if not isinstance(name, str) or len(name) > 120 or (
                name and not re.fullmatch(r"[0-9A-Za-z _-]+", name)):
            raise _invalid(f"Schedule Name {name!r} must be up to 120 characters of "
                           f"[0-9A-Za-z _-]")
        for t in s.get("TagsToAdd", []):
            cls._tags({t.get("Key"): t.get("Value")}, "TagsToAdd")
        if len(s.get("TagsToAdd", [])) > 45:
            raise _invalid("TagsToAdd holds at most 45 tags")
        rule = s.get("CreateRule")
        if not isinstance(rule, dict):
            raise _invalid("Schedule.CreateRule is required")
        if rule.get("Location", "CLOUD") != "CLOUD" or "Scripts" in rule:
            raise _invalid("CreateRule: only Location CLOUD without Scripts is supported by "
                           "the stand-in")
        cron = rule.get("CronExpression")
        by_interval = any(k in rule for k in ("Interval", "IntervalUnit", "Times"))
        if cron is not None and by_interval:
            raise _invalid("CreateRule: specify either CronExpression, or Interval, "
                           "IntervalUnit and Times, not both")
        if cron is not None:
            if not isinstance(cron, str) or not 17 <= len(cron) <= 106 or not _CRON.fullmatch(
                    cron):
                raise _invalid(f"CreateRule.CronExpression {cron!r} is not a cron(...) "
                               f"expression")
        else:
            interval, unit, times = (rule.get("Interval"), rule.get("IntervalUnit"),
                                     rule.get("Times"))
            if interval not in INTERVALS or isinstance(interval, bool):
                raise _invalid(f"CreateRule.Interval {interval!r}: the supported values are "
                               f"1, 2, 3, 4, 6, 8, 12 and 24")
            if unit != "HOURS":
                raise _invalid(f"CreateRule.IntervalUnit {unit!r} must be HOURS")
            if not isinstance(times, list) or len(times) != 1 or not isinstance(
                    times[0], str) or not _TIME.match(times[0]):
                raise _invalid(f"CreateRule.Times {times!r} must be one time hh:mm (UTC)")
        retain = s.get("RetainRule")
        if not isinstance(retain, dict):
            raise _invalid("Schedule.RetainRule is required")
        count, r_int, r_unit = (retain.get("Count"), retain.get("Interval"),
                                retain.get("IntervalUnit"))
        if count is not None and (r_int is not None or r_unit is not None):
            raise _invalid("RetainRule: specify Count, or Interval and IntervalUnit, not both")
        if count is not None:
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1000:
                raise _invalid(f"RetainRule.Count {count!r} must be 1 to 1000")
        elif not (isinstance(r_int, int) and r_int >= 1 and r_unit in _RETAIN_UNITS):
            raise _invalid("RetainRule needs Count (1-1000), or Interval (>= 1) and "
                           "IntervalUnit (DAYS, WEEKS, MONTHS, YEARS)")

    # -- operations ---------------------------------------------------------------------

    def _scope(self, account: str, region: str) -> dict[str, dict[str, Any]]:
        if self.state_file is not None:
            return self.policies.setdefault(f"{account}/{region}", {})
        from moto.iam.models import iam_backends

        per_region = self._by_backend.setdefault(iam_backends[account]["aws"], {})
        return per_region.setdefault(region, {})

    def _get(self, account: str, region: str, policy_id: str) -> dict[str, Any]:
        p = self._scope(account, region).get(policy_id)
        if p is None:
            raise _not_found(f"Policy {policy_id} not found")
        return p

    def create(self, account: str, region: str, body: dict[str, Any]) -> dict[str, Any]:
        missing = [k for k in ("ExecutionRoleArn", "Description", "State") if k not in body]
        if missing:
            raise _invalid(f"missing required parameter(s): {', '.join(missing)}")
        for k in ("DefaultPolicy", "CreateInterval", "RetainInterval", "CopyTags",
                  "ExtendDeletion", "CrossRegionCopyTargets", "Exclusions"):
            if k in body:
                raise _invalid(f"{k}: default policies are not supported by the stand-in")
        policy = {
            "Description": self._description(body["Description"]),
            "State": self._state(body["State"]),
            "ExecutionRoleArn": self._role(body["ExecutionRoleArn"], account),
            "PolicyDetails": self._details(body.get("PolicyDetails")),
            "Tags": self._tags(body["Tags"]) if "Tags" in body else {},
        }
        scope = self._scope(account, region)
        if len(scope) >= POLICY_QUOTA:
            raise DlmError(429, "LimitExceededException",
                           f"the quota of {POLICY_QUOTA} lifecycle policies per Region is "
                           f"reached")
        pid = "policy-" + secrets.token_hex(9)[:17]
        now = _now()
        scope[pid] = {**policy, "PolicyId": pid, "DateCreated": now, "DateModified": now,
                      "StatusMessage": "ENABLED" if policy["State"] == "ENABLED" else
                      "DISABLED",
                      "PolicyArn": f"arn:aws:dlm:{region}:{account}:policy/{pid}",
                      "DefaultPolicy": False}
        self._save()
        return {"PolicyId": pid}

    def update(self, account: str, region: str, pid: str, body: dict[str, Any]) -> None:
        p = self._get(account, region, pid)
        for k in ("DefaultPolicy", "CreateInterval", "RetainInterval", "CopyTags",
                  "ExtendDeletion", "CrossRegionCopyTargets", "Exclusions"):
            if k in body:
                raise _invalid(f"{k}: default policies are not supported by the stand-in")
        new = dict(p)
        if "Description" in body:
            new["Description"] = self._description(body["Description"])
        if "State" in body:
            new["State"] = new["StatusMessage"] = self._state(body["State"])
        if "ExecutionRoleArn" in body:
            new["ExecutionRoleArn"] = self._role(body["ExecutionRoleArn"], account)
        if "PolicyDetails" in body:
            new["PolicyDetails"] = self._details(body["PolicyDetails"])
        new["DateModified"] = _now()
        self._scope(account, region)[pid] = new
        self._save()

    def delete(self, account: str, region: str, pid: str) -> None:
        self._get(account, region, pid)
        del self._scope(account, region)[pid]
        self._save()

    def get(self, account: str, region: str, pid: str) -> dict[str, Any]:
        return {"Policy": self._get(account, region, pid)}

    def summaries(self, account: str, region: str,
                  query: dict[str, list[str]]) -> dict[str, Any]:
        scope = self._scope(account, region)
        ids = query.get("policyIds")
        if ids:
            unknown = [i for i in ids if i not in scope]
            if unknown:
                raise _not_found(f"Policies {', '.join(unknown)} not found")
        states = query.get("state")
        if states and states[0] not in ("ENABLED", "DISABLED", "ERROR"):
            raise _invalid(f"state {states[0]!r} must be ENABLED, DISABLED or ERROR")
        rtypes = query.get("resourceTypes")
        targets = query.get("targetTags") or []
        out = []
        for p in scope.values():
            if ids and p["PolicyId"] not in ids:
                continue
            if states and p["State"] != states[0]:
                continue
            if rtypes and p["PolicyDetails"]["ResourceTypes"] != rtypes:
                continue
            have = {f"{t['Key']}={t['Value']}" for t in p["PolicyDetails"]["TargetTags"]}
            if targets and not set(targets) <= have:
                continue
            out.append({"PolicyId": p["PolicyId"], "Description": p["Description"],
                        "State": p["State"], "Tags": p["Tags"],
                        "PolicyType": p["PolicyDetails"]["PolicyType"],
                        "DefaultPolicy": False})
        return {"Policies": out}

    def _by_arn(self, account: str, region: str, arn: str) -> dict[str, Any]:
        m = _POLICY_ARN.match(arn)
        if m is None:
            raise _invalid(f"ResourceArn {arn!r} is not a lifecycle policy ARN")
        if m.group(2) != region or m.group(3) != account:
            raise _not_found(f"Resource {arn} not found")
        return self._get(account, region, m.group(4))

    def tag(self, account: str, region: str, arn: str, tags: Any) -> None:
        p = self._by_arn(account, region, arn)
        merged = {**p["Tags"], **self._tags(tags)}
        if len(merged) > 200:
            raise _invalid("a policy holds at most 200 tags")
        p["Tags"] = merged
        self._save()

    def untag(self, account: str, region: str, arn: str, keys: list[str]) -> None:
        p = self._by_arn(account, region, arn)
        if not keys:
            raise _invalid("tagKeys is required")
        p["Tags"] = {k: v for k, v in p["Tags"].items() if k not in keys}
        self._save()

    def tags(self, account: str, region: str, arn: str) -> dict[str, Any]:
        return {"Tags": self._by_arn(account, region, arn)["Tags"]}

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any,
               account: str, region: str) -> tuple[int, dict[str, Any]]:
        """One request: (HTTP status, JSON answer) or :class:`DlmError`."""
        parts = [unquote(p) for p in path.strip("/").split("/", 1)] if path.strip("/") else []
        with self.lock:
            if parts[:1] == ["policies"]:
                if len(parts) == 1:
                    if method == "POST":
                        return 200, self.create(account, region, self._body(body))
                    if method == "GET":
                        return 200, self.summaries(account, region, query)
                else:
                    pid = parts[1]
                    if not _POLICY_ID.fullmatch(pid) or len(pid) > 64:
                        raise _invalid(f"PolicyId {pid!r} is not a policy id (policy-<hex>)")
                    if method == "GET":
                        return 200, self.get(account, region, pid)
                    if method == "PATCH":
                        self.update(account, region, pid, self._body(body))
                        return 200, {}
                    if method == "DELETE":
                        self.delete(account, region, pid)
                        return 200, {}
            elif parts[:1] == ["tags"] and len(parts) == 2:
                if method == "GET":
                    return 200, self.tags(account, region, parts[1])
                if method == "POST":
                    b = self._body(body)
                    if "Tags" not in b:
                        raise _invalid("missing required parameter: Tags")
                    self.tag(account, region, parts[1], b["Tags"])
                    return 200, {}
                if method == "DELETE":
                    self.untag(account, region, parts[1], query.get("tagKeys") or [])
                    return 200, {}
        raise DlmError(404, "UnknownOperationException", f"no DLM operation {method} {path}")

    @staticmethod
    def _body(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _invalid("the request body must be a JSON object")
        return body


class _Handler(BaseHTTPRequestHandler):
    state: DlmState  # set on the server's subclass

    def log_message(self, format: str, *args: Any) -> None:
        return  # a request log would scribble over the TUI

    def _answer(self, status: int, doc: dict[str, Any], code: str | None = None) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-amzn-RequestId", secrets.token_hex(16))
        if code:
            self.send_header("x-amzn-ErrorType", code)
        self.end_headers()
        self.wfile.write(data)

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization") or ""
        m = _CREDENTIAL.search(auth)
        try:
            if m is None:
                raise DlmError(403, "UnrecognizedClientException",
                               "the request is not signed for dlm (SigV4)")
            try:
                body = json.loads(raw) if raw else {}
            except json.JSONDecodeError as e:
                raise _invalid(f"the request body is not JSON: {e}") from e
            status, doc = self.state.handle(
                self.command, url.path, parse_qs(url.query, keep_blank_values=True), body,
                _caller_account(m.group(1)), m.group(2))
            self._answer(status, doc)
        except DlmError as e:
            self._answer(e.status, {"Message": e.message, "message": e.message,
                                    "Code": e.code}, e.code)

    do_GET = do_POST = do_PATCH = do_DELETE = _serve


class DlmStandIn:
    """The stand-in's server on 127.0.0.1 (a free port), in a daemon thread."""

    def __init__(self, state_file: Path | None = None) -> None:
        self.state = DlmState(state_file)
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    def start(self) -> DlmStandIn:
        handler = type("DlmHandler", (_Handler,), {"state": self.state})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        threading.Thread(target=self._server.serve_forever, name="dlm-stand-in",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def environ(self) -> dict[str, str]:
        """What points boto3 (and Prowler) at this stand-in for DLM only."""
        return {ENV_ENDPOINT: self.url}


@contextmanager
def dlm_stand_in(state_file: Path | None = None) -> Iterator[DlmStandIn]:
    """A started stand-in, stopped on exit."""
    s = DlmStandIn(state_file).start()
    try:
        yield s
    finally:
        s.stop()
