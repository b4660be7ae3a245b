"""The resource kinds ``aws.ensure`` knows: find (read-only), then create or converge.

Every kind follows one rule: ``find`` never changes anything and identifies the resource
by its deployment tag (EC2, IAM) or by a name derived from the deployment (S3, SNS, logs,
alarms, SSM parameters: names unique per account), never by ClientToken. ``plan`` lists
what ``apply`` would change (empty = in sync). ``apply`` creates what is missing, tags it
in the create call where the API allows (so a kill between create and tag cannot leave
an untagged orphan) and converges the settings that can drift. Both return the same
outputs, so a resumed run sees the same ``steps.<id>.<output>`` values.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..engine.action import ActionFailed, StepContext
from ..engine.containment import AssetPath, JsonAssetPath, asset_path
from .aws_errors import error_code, explain
from .aws_session import AwsApi
from .aws_tags import TAG_DEPLOYMENT, has_deployment_tag, tag_dict, tag_list, tag_spec

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


def _canon(doc: Any) -> str:
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
    model_config = ConfigDict(extra="forbid")


@dataclass
class Found:
    """What ``find`` saw: the resource (None = absent), its outputs and pending changes."""

    obj: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)


class Kind:
    """A resource kind. ``find`` is read-only; ``apply`` converges and returns outputs."""

    Spec: type[Spec] = Spec
    title = "resource"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: Any) -> Found:
        raise NotImplementedError

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: Any,
              found: Found) -> tuple[dict[str, Any], bool]:
        """Create or converge; return (outputs, changed)."""
        raise NotImplementedError


def _safe(api: AwsApi, service: str, op: str, missing: tuple[str, ...] = (),
          **params: Any) -> dict[str, Any] | None:
    """A call whose 'not found' error codes mean None; other errors are explained."""
    try:
        return api.call(service, op, quiet=bool(missing), **params)
    except Exception as e:
        code = error_code(e)
        if code is not None and code in missing:
            return None
        raise explain(e, service, op, api.region) from e


# --------------------------------------------------------------------------- security group


class Rule(Spec):
    port: int = Field(ge=0, le=65535)
    protocol: str = "tcp"
    cidrs: list[str]
    description: str = ""


class SecurityGroupSpec(Spec):
    description: str = "elematrix-tui managed security group"
    vpc_id: str | None = None
    ingress: list[Rule] = Field(default_factory=list)
    # Revoke ingress rules that are not in the list (the posture says "nothing else").
    exact: bool = True


def _perm_set(perms: list[dict[str, Any]]) -> set[tuple[str, int, str]]:
    out: set[tuple[str, int, str]] = set()
    for p in perms:
        port = int(p.get("FromPort", -1)) if p.get("FromPort") is not None else -1
        proto = str(p.get("IpProtocol"))
        for r in p.get("IpRanges", []):
            out.add((proto, port, r["CidrIp"]))
        for r in p.get("Ipv6Ranges", []):
            out.add((proto, port, r["CidrIpv6"]))
        for g in p.get("UserIdGroupPairs", []):
            out.add((proto, port, f"group:{g.get('GroupId')}"))
        for pl in p.get("PrefixListIds", []):
            out.add((proto, port, f"prefix:{pl.get('PrefixListId')}"))
    return out


def _perm_of(proto: str, port: int, cidr: str, description: str = "") -> dict[str, Any]:
    p: dict[str, Any] = {"IpProtocol": proto}
    desc = {"Description": description} if description else {}
    if port >= 0:
        p["FromPort"] = port
        p["ToPort"] = port
    if cidr.startswith(("group:", "prefix:")):
        kind, _, ident = cidr.partition(":")
        if kind == "group":
            p["UserIdGroupPairs"] = [{"GroupId": ident}]
        else:
            p["PrefixListIds"] = [{"PrefixListId": ident}]
    elif ":" in cidr:
        p["Ipv6Ranges"] = [{"CidrIpv6": cidr, **desc}]
    else:
        p["IpRanges"] = [{"CidrIp": cidr, **desc}]
    return p


def _descriptions(spec: SecurityGroupSpec) -> dict[tuple[str, int, str], str]:
    """Rule -> its description (shown in the AWS console next to the rule)."""
    return {(r.protocol, r.port, str(ipaddress.ip_network(c, strict=False))): r.description
            for r in spec.ingress for c in r.cidrs}


def _want_rules(spec: SecurityGroupSpec) -> set[tuple[str, int, str]]:
    out = set()
    for r in spec.ingress:
        for c in r.cidrs:
            try:
                net = ipaddress.ip_network(c, strict=False)
            except ValueError as e:
                raise ActionFailed(f"security group rule: {c!r} is not a CIDR",
                                   fix="Use a CIDR such as 203.0.113.5/32.") from e
            out.add((r.protocol, r.port, str(net)))
    return out


class SecurityGroup(Kind):
    Spec = SecurityGroupSpec
    title = "security group"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: Any) -> Found:
        filters = [{"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [ctx.deployment]},
                   {"Name": "group-name", "Values": [name]}]
        if spec.vpc_id:
            filters.append({"Name": "vpc-id", "Values": [spec.vpc_id]})
        groups = api.checked("ec2", "describe_security_groups", Filters=filters)["SecurityGroups"]
        want = _want_rules(spec)
        if not groups:
            return Found(None, changes=[f"create security group {name}"]
                         + [f"allow {p}/{port} from {c}" for p, port, c in sorted(want)])
        g = groups[0]
        have = _perm_set(g.get("IpPermissions", []))
        changes = [f"allow {p}/{port} from {c}" for p, port, c in sorted(want - have)]
        if spec.exact:
            changes += [f"revoke {p}/{port} from {c}" for p, port, c in sorted(have - want)]
        return Found(g, {"group_id": g["GroupId"], "vpc_id": g.get("VpcId"),
                         "group_name": name}, changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: Any,
              found: Found) -> tuple[dict[str, Any], bool]:
        changed = False
        want = _want_rules(spec)
        if found.obj is None:
            params: dict[str, Any] = {"GroupName": name, "Description": spec.description,
                                      "TagSpecifications": tag_spec(ctx, "security-group", name)}
            if spec.vpc_id:
                params["VpcId"] = spec.vpc_id
            try:
                gid = api.call("ec2", "create_security_group", **params)["GroupId"]
                have: set[tuple[str, int, str]] = set()
                vpc_id = spec.vpc_id
            except Exception as e:
                # A retried create whose first attempt reached AWS (read timeout): adopt it.
                if error_code(e) != "InvalidGroup.Duplicate":
                    raise explain(e, "ec2", "create_security_group", api.region) from e
                again = self.find(api, ctx, name, spec)
                if again.obj is None:
                    raise explain(e, "ec2", "create_security_group", api.region) from e
                gid, vpc_id = again.obj["GroupId"], again.obj.get("VpcId")
                have = _perm_set(again.obj.get("IpPermissions", []))
            changed = True
        else:
            gid = found.obj["GroupId"]
            vpc_id = found.obj.get("VpcId")
            have = _perm_set(found.obj.get("IpPermissions", []))
        add = sorted(want - have)
        if add:
            desc = _descriptions(spec)
            perms = [_perm_of(p, port, c, desc.get((p, port, c), "")) for p, port, c in add]
            try:
                api.call("ec2", "authorize_security_group_ingress", GroupId=gid,
                         IpPermissions=perms)
            except Exception as e:
                # A concurrent or half-finished earlier attempt may have added some already.
                if error_code(e) != "InvalidPermission.Duplicate":
                    raise explain(e, "ec2", "authorize_security_group_ingress",
                                  api.region) from e
            changed = True
        remove = sorted(have - want) if spec.exact else []
        if remove:
            api.checked("ec2", "revoke_security_group_ingress", GroupId=gid,
                        IpPermissions=[_perm_of(p, port, c) for p, port, c in remove])
            changed = True
        return {"group_id": gid, "vpc_id": vpc_id, "group_name": name}, changed


class IngressAbsentSpec(Spec):
    group_id: str
    port: int = Field(ge=0, le=65535)
    protocol: str = "tcp"


class IngressAbsent(Kind):
    """No ingress rule for ``port`` remains (used to close SSH after Session Manager)."""

    Spec = IngressAbsentSpec
    title = "ingress rule removal"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: Any) -> Found:
        g = api.checked("ec2", "describe_security_groups",
                        GroupIds=[spec.group_id])["SecurityGroups"][0]
        rules = sorted(r for r in _perm_set(g.get("IpPermissions", []))
                       if r[0] == spec.protocol and r[1] == spec.port)
        # obj is the list of rules to revoke; [] (not None) means "in the desired state".
        return Found(rules, {"group_id": spec.group_id, "port": spec.port,
                                     "removed": [r[2] for r in rules]},
                     [f"revoke {p}/{port} from {c} on {spec.group_id}" for p, port, c in rules])

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: Any,
              found: Found) -> tuple[dict[str, Any], bool]:
        if not found.obj:
            return {"group_id": spec.group_id, "port": spec.port, "removed": []}, False
        api.checked("ec2", "revoke_security_group_ingress", GroupId=spec.group_id,
                    IpPermissions=[_perm_of(p, port, c) for p, port, c in found.obj])
        return found.outputs, True


# --------------------------------------------------------------------------- key pair


class KeyPairSpec(Spec):
    # The operator's public key; "" means: generate a key pair locally.
    public_key_path: str | None = "~/.ssh/id_ed25519.pub"


def _private_key_path(ctx: StepContext) -> Path:
    # The SSH actions look for exactly this file.
    return Path(ctx.deployment_dir) / "keys" / "id_ed25519"


def _generate_key(path: Path) -> str:
    """Write a new ed25519 private key (0600, atomically) and return the public key line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                        serialization.PublicFormat.OpenSSH).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.replace(tmp, path)
    path.with_suffix(".pub").write_text(pub + "\n")
    return pub


class KeyPair(Kind):
    Spec = KeyPairSpec
    title = "key pair"

    def _operator_key(self, spec: KeyPairSpec) -> Path | None:
        if not spec.public_key_path:
            return None
        p = Path(spec.public_key_path).expanduser()
        if not (p.exists() or p.is_symlink()):
            return None
        self._public_key(p)  # refuse a private key (or anything else) before any AWS call
        return p

    @staticmethod
    def _public_key(path: Path) -> str:
        from ..engine.params import ParamValueError, read_public_key

        try:
            return read_public_key(path)
        except ParamValueError as e:
            raise ActionFailed(f"ssh_public_key_path: {e}",
                               diagnosis="only a single OpenSSH public key line is ever "
                                         "imported into AWS",
                               fix="point ssh_public_key_path at your .pub file, or at a path "
                                   "that does not exist to have a key pair generated") from None

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: Any) -> Found:
        kps = api.checked("ec2", "describe_key_pairs", Filters=[
            {"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [ctx.deployment]},
            {"Name": "key-name", "Values": [name]}])["KeyPairs"]
        op_key = self._operator_key(spec)
        priv = _private_key_path(ctx)
        source = str(op_key) if op_key else str(priv)
        if not kps:
            how = (f"import the operator's public key {op_key}" if op_key else
                   f"generate an ed25519 key pair; private key to {priv} (0600)")
            return Found(None, changes=[f"key pair {name}: {how}"])
        kp = kps[0]
        out = {"key_name": name, "key_pair_id": kp.get("KeyPairId"),
               "fingerprint": kp.get("KeyFingerprint"),
               "private_key_path": "" if op_key else str(priv), "source": source}
        if op_key is None and not priv.exists():
            return Found(kp, out, [f"key pair {name} exists but its private key {priv} is "
                                   "gone: replace it with a new generated key"])
        return Found(kp, out, [])

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: Any,
              found: Found) -> tuple[dict[str, Any], bool]:
        if found.obj is not None and not found.changes:
            return found.outputs, False
        if found.obj is not None:
            # The generated private key was lost (e.g. killed before it was written):
            # the pair is unusable, replace it.
            api.checked("ec2", "delete_key_pair", KeyName=name)
        op_key = self._operator_key(spec)
        priv = _private_key_path(ctx)
        if op_key:
            pub = self._public_key(op_key)
        elif priv.exists() and priv.with_suffix(".pub").exists():
            # Written by an earlier attempt that died before the import: reuse it.
            pub = priv.with_suffix(".pub").read_text().strip()
        else:
            pub = _generate_key(priv)
            ctx.log(f"generated an ed25519 key pair; private key written to {priv} (0600)")
        try:
            r = api.call("ec2", "import_key_pair", KeyName=name, PublicKeyMaterial=pub.encode(),
                         TagSpecifications=tag_spec(ctx, "key-pair", name))
        except Exception as e:
            # A retried import whose first attempt reached AWS: it holds this same public key.
            if error_code(e) != "InvalidKeyPair.Duplicate":
                raise explain(e, "ec2", "import_key_pair", api.region) from e
            r = api.checked("ec2", "describe_key_pairs", KeyNames=[name])["KeyPairs"][0]
        return {"key_name": name, "key_pair_id": r.get("KeyPairId"),
                "fingerprint": r.get("KeyFingerprint"),
                "private_key_path": "" if op_key else str(priv),
                "source": str(op_key) if op_key else str(priv)}, True


# --------------------------------------------------------------------------- IAM


class RoleSpec(Spec):
    trust_policy: JsonAssetPath = "aws/ec2-trust-policy.json"
    managed_policies: list[str] = Field(default_factory=list)
    # policy name -> asset path; ${placeholders} filled from ``variables``.
    inline_policies: dict[str, JsonAssetPath] = Field(default_factory=dict)
    variables: dict[str, str] = Field(default_factory=dict)
    description: str = "elematrix-tui instance role"


class Role(Kind):
    Spec = RoleSpec
    title = "IAM role"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: Any) -> Found:
        r = _safe(api, "iam", "get_role", ("NoSuchEntity",), RoleName=name)
        if r is None:
            return Found(None, changes=[f"create IAM role {name} (EC2 trust)"]
                         + [f"attach {p}" for p in spec.managed_policies]
                         + [f"put inline policy {n}" for n in spec.inline_policies])
        role = r["Role"]
        tags = api.checked("iam", "list_role_tags", RoleName=name).get("Tags", [])
        if not has_deployment_tag(tags, ctx.deployment):
            raise ActionFailed(
                f"IAM role {name} exists but is not tagged for deployment {ctx.deployment!r}",
                diagnosis="Another deployment or a person created a role with this name.",
                fix="Pick another deployment name or delete/retag the role.")
        changes: list[str] = []
        attached = {p["PolicyArn"] for p in api.checked(
            "iam", "list_attached_role_policies", RoleName=name)["AttachedPolicies"]}
        changes += [f"attach {p}" for p in spec.managed_policies if p not in attached]
        for pname, asset in spec.inline_policies.items():
            want = _canon(asset_json(asset, spec.variables))
            got = _safe(api, "iam", "get_role_policy", ("NoSuchEntity",), RoleName=name,
                        PolicyName=pname)
            if got is None or _canon(got["PolicyDocument"]) != want:
                changes.append(f"put inline policy {pname}")
        if _canon(role["AssumeRolePolicyDocument"]) != _canon(asset_json(spec.trust_policy)):
            changes.append("update the trust policy")
        return Found(role, {"role_name": name, "role_arn": role["Arn"]}, changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: Any,
              found: Found) -> tuple[dict[str, Any], bool]:
        trust = json.dumps(asset_json(spec.trust_policy))
        changed = False
        if found.obj is None:
            try:
                arn = api.call("iam", "create_role", RoleName=name, AssumeRolePolicyDocument=trust,
                               Description=spec.description,
                               Tags=tag_list(ctx, name))["Role"]["Arn"]
                changed = True
            except Exception as e:
                if error_code(e) != "EntityAlreadyExists":
                    raise explain(e, "iam", "create_role", api.region) from e
                arn = api.checked("iam", "get_role", RoleName=name)["Role"]["Arn"]
        else:
            arn = found.obj["Arn"]
            if "update the trust policy" in found.changes:
                api.checked("iam", "update_assume_role_policy", RoleName=name,
                            PolicyDocument=trust)
                changed = True
        attached = {p["PolicyArn"] for p in api.checked(
            "iam", "list_attached_role_policies", RoleName=name)["AttachedPolicies"]}
        for p in spec.managed_policies:
            if p not in attached:
                api.checked("iam", "attach_role_policy", RoleName=name, PolicyArn=p)
                changed = True
        for pname, asset in spec.inline_policies.items():
            doc = asset_json(asset, spec.variables)
            got = _safe(api, "iam", "get_role_policy", ("NoSuchEntity",), RoleName=name,
                        PolicyName=pname)
            if got is None or _canon(got["PolicyDocument"]) != _canon(doc):
                api.checked("iam", "put_role_policy", RoleName=name, PolicyName=pname,
                            PolicyDocument=json.dumps(doc))
                changed = True
        return {"role_name": name, "role_arn": arn}, changed


class InstanceProfileSpec(Spec):
    role_name: str


class InstanceProfile(Kind):
    Spec = InstanceProfileSpec
    title = "instance profile"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: Any) -> Found:
        r = _safe(api, "iam", "get_instance_profile", ("NoSuchEntity",),
                  InstanceProfileName=name)
        if r is None:
            return Found(None, changes=[f"create instance profile {name} with role "
                                        f"{spec.role_name}"])
        ip = r["InstanceProfile"]
        roles = [x["RoleName"] for x in ip.get("Roles", [])]
        changes = [] if roles == [spec.role_name] else [f"put role {spec.role_name} in {name}"]
        return Found(ip, {"profile_name": name, "profile_arn": ip["Arn"]}, changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: Any,
              found: Found) -> tuple[dict[str, Any], bool]:
        roles: list[str] = []
        if found.obj is None:
            try:
                ip = api.call("iam", "create_instance_profile", InstanceProfileName=name,
                              Tags=tag_list(ctx, name))["InstanceProfile"]
            except Exception as e:
                if error_code(e) != "EntityAlreadyExists":
                    raise explain(e, "iam", "create_instance_profile", api.region) from e
                ip = api.checked("iam", "get_instance_profile",
                                 InstanceProfileName=name)["InstanceProfile"]
                roles = [x["RoleName"] for x in ip.get("Roles", [])]
        else:
            ip = found.obj
            roles = [x["RoleName"] for x in ip.get("Roles", [])]
        changed = found.obj is None
        for other in roles:
            if other != spec.role_name:
                api.checked("iam", "remove_role_from_instance_profile",
                            InstanceProfileName=name, RoleName=other)
                changed = True
        if spec.role_name not in roles:
            api.checked("iam", "add_role_to_instance_profile", InstanceProfileName=name,
                        RoleName=spec.role_name)
            changed = True
        return {"profile_name": name, "profile_arn": ip["Arn"]}, changed


# --------------------------------------------------------------------------- S3


class BucketSpec(Spec):
    versioning: bool = True
    block_public: bool = True
    encryption: Literal["AES256", "aws:kms"] = "AES256"
    kms_key_id: str | None = None
    deny_insecure_transport: bool = True
    policy: JsonAssetPath = "aws/bucket-policy.json"
    noncurrent_version_days: int = Field(default=30, ge=1)
    # Backups are new keys every day, so they are all *current* versions: without an
    # expiry of current objects the bucket grows forever. Applies under ``expire_prefix``
    # (the deployment's prefix); None: keep current objects forever.
    expire_current_days: int | None = Field(default=None, ge=1)
    expire_prefix: str = ""


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


def _lc_change(spec: BucketSpec) -> str:
    extra = (f"; current backups under {spec.expire_prefix or '/'} after "
             f"{spec.expire_current_days} days" if spec.expire_current_days else "")
    return f"lifecycle: expire old versions after {spec.noncurrent_version_days} days{extra}"


class Bucket(Kind):
    """The backup bucket. Its name is unique per account (``elematrix-<dep>-<account>``)."""

    Spec = BucketSpec
    title = "S3 bucket"

    def _settings(self, api: AwsApi, name: str, spec: BucketSpec) -> list[str]:
        changes: list[str] = []
        v = api.checked("s3", "get_bucket_versioning", Bucket=name)
        if spec.versioning and v.get("Status") != "Enabled":
            changes.append("enable versioning")
        if spec.block_public:
            pab = _safe(api, "s3", "get_public_access_block",
                        ("NoSuchPublicAccessBlockConfiguration",), Bucket=name)
            if pab is None or pab["PublicAccessBlockConfiguration"] != _PAB:
                changes.append("block all public access (4 settings)")
        enc = _safe(api, "s3", "get_bucket_encryption",
                    ("ServerSideEncryptionConfigurationNotFoundError",), Bucket=name)
        algo = None
        if enc:
            rules = enc["ServerSideEncryptionConfiguration"]["Rules"]
            algo = rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
        if algo != spec.encryption:
            changes.append(f"default encryption {spec.encryption}")
        if spec.deny_insecure_transport:
            pol = _safe(api, "s3", "get_bucket_policy", ("NoSuchBucketPolicy",), Bucket=name)
            want = _canon(asset_json(spec.policy, {"bucket_arn": api.arn("s3", name)}))
            if pol is None or _canon(pol["Policy"]) != want:
                changes.append("bucket policy denying non-TLS access")
        lc = _safe(api, "s3", "get_bucket_lifecycle_configuration",
                   ("NoSuchLifecycleConfiguration",), Bucket=name)
        if lc is None or _lc_view(lc["Rules"]) != _lc_view(_lifecycle_rules(spec)):
            changes.append(_lc_change(spec))
        tags = _safe(api, "s3", "get_bucket_tagging", ("NoSuchTagSet",), Bucket=name)
        if tags is None or not has_deployment_tag(tags["TagSet"], api.ctx.deployment):
            changes.append("tag the bucket")
        return changes

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: Any) -> Found:
        try:
            head = _safe(api, "s3", "head_bucket", ("404", "NoSuchBucket", "NotFound"),
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
                f"default encryption {spec.encryption}", "bucket policy denying non-TLS access",
                _lc_change(spec), "tag the bucket"]

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: Any,
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
            elif change.startswith("bucket policy"):
                api.checked("s3", "put_bucket_policy", Bucket=name, Policy=json.dumps(
                    asset_json(spec.policy, {"bucket_arn": arn})))
            elif change.startswith("lifecycle"):
                api.checked("s3", "put_bucket_lifecycle_configuration", Bucket=name,
                            LifecycleConfiguration={"Rules": _lifecycle_rules(spec)})
        return {"bucket": name, "bucket_arn": arn}, bool(todo)


# --------------------------------------------------------------------------- EC2


class EipSpec(Spec):
    pass


class ElasticIp(Kind):
    Spec = EipSpec
    title = "Elastic IP"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: Any) -> Found:
        addrs = api.checked("ec2", "describe_addresses", Filters=[
            {"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [ctx.deployment]},
            {"Name": "tag:Name", "Values": [name]}])["Addresses"]
        if not addrs:
            return Found(None, changes=[f"allocate Elastic IP {name}"])
        a = addrs[0]
        return Found(a, {"allocation_id": a["AllocationId"], "public_ip": a["PublicIp"]})

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: Any,
              found: Found) -> tuple[dict[str, Any], bool]:
        if found.obj is not None:
            return found.outputs, False
        a = api.checked("ec2", "allocate_address", Domain="vpc",
                        TagSpecifications=tag_spec(ctx, "elastic-ip", name))
        return {"allocation_id": a["AllocationId"], "public_ip": a["PublicIp"]}, True


class EipAssociationSpec(Spec):
    allocation_id: str
    instance_id: str


class EipAssociation(Kind):
    Spec = EipAssociationSpec
    title = "Elastic IP association"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: Any) -> Found:
        a = api.checked("ec2", "describe_addresses",
                        AllocationIds=[spec.allocation_id])["Addresses"][0]
        out = {"public_ip": a["PublicIp"], "association_id": a.get("AssociationId"),
               "instance_id": spec.instance_id}
        if a.get("InstanceId") == spec.instance_id:
            return Found(a, out)
        return Found(None, out, [f"associate {a['PublicIp']} with {spec.instance_id}"
                                 + (f" (moving it from {a['InstanceId']})"
                                    if a.get("InstanceId") else "")])

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: Any,
              found: Found) -> tuple[dict[str, Any], bool]:
        if found.obj is not None:
            return found.outputs, False
        r = api.checked("ec2", "associate_address", AllocationId=spec.allocation_id,
                        InstanceId=spec.instance_id, AllowReassociation=True)
        return {**found.outputs, "association_id": r.get("AssociationId")}, True


class InstanceSpec(Spec):
    image_id: str
    instance_type: str = "t3.medium"
    subnet_id: str | None = None
    security_group_ids: list[str]
    key_name: str | None = None
    instance_profile: str | None = None
    volume_gb: int = Field(default=30, ge=8, le=16384)
    volume_type: str = "gp3"
    encrypted: bool = True
    kms_key_id: str | None = None
    root_device: str = "/dev/xvda"
    http_tokens: Literal["required", "optional"] = "required"
    # 1: only the host reaches IMDS (backup.sh runs on the host). 2 would let every
    # container fetch the instance role's credentials through the docker bridge hop.
    hop_limit: int = Field(default=1, ge=1, le=64)
    user_data: AssetPath | None = "cloud-init/user-data.yaml"
    # An explicit public IPv4 on the interface: a subnet whose "auto-assign public IPv4"
    # is off (any non-default subnet) would otherwise give an unreachable instance.
    public_ip: bool = True
    # T3 launches as "unlimited" by default (surplus credits billed); say which.
    cpu_credits: Literal["standard", "unlimited"] | None = "standard"


_LIVE_STATES = ["pending", "running", "stopping", "stopped"]


def _instance_outputs(i: dict[str, Any]) -> dict[str, Any]:
    return {"instance_id": i["InstanceId"],
            "availability_zone": i.get("Placement", {}).get("AvailabilityZone"),
            "private_ip": i.get("PrivateIpAddress"), "state": i.get("State", {}).get("Name"),
            "image_id": i.get("ImageId"), "instance_type": i.get("InstanceType")}


def _metadata_wanted(spec: InstanceSpec) -> dict[str, Any]:
    return {"HttpTokens": spec.http_tokens, "HttpPutResponseHopLimit": spec.hop_limit,
            "HttpEndpoint": "enabled"}


def _metadata_changes(i: dict[str, Any], spec: InstanceSpec) -> list[str]:
    """IMDS settings drift (e.g. an instance launched with hop limit 2): converged live."""
    have = i.get("MetadataOptions") or {}
    want = _metadata_wanted(spec)
    diff = [f"{k} {have.get(k)!r} -> {v!r}" for k, v in want.items() if have.get(k) != v]
    return [f"set instance metadata options of {i['InstanceId']}: " + ", ".join(diff)] \
        if diff else []


def launch_token(ctx: StepContext, name: str) -> str:
    """The ClientToken of one launch attempt. A new one per attempt: AWS may have bound
    the token of a failed request (e.g. the instance-profile propagation error) to that
    failure, and a retry with it would get the same answer back (EC2 API reference,
    "Ensuring idempotency": a repeated token returns the original result). Deterministic
    from run and attempt, so botocore's own retry of one attempt reuses it, and a resumed
    run finds the instance by tag before it launches at all."""
    return hashlib.sha256(f"{ctx.deployment}/{name}/{ctx.run_id}/{ctx.attempt}".encode()
                          ).hexdigest()[:64]


class Instance(Kind):
    Spec = InstanceSpec
    title = "EC2 instance"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: Any) -> Found:
        res = api.checked("ec2", "describe_instances", Filters=[
            {"Name": f"tag:{TAG_DEPLOYMENT}", "Values": [ctx.deployment]},
            {"Name": "tag:Name", "Values": [name]},
            {"Name": "instance-state-name", "Values": _LIVE_STATES}])["Reservations"]
        insts = [i for r in res for i in r["Instances"]]
        if not insts:
            kms = f", KMS key {spec.kms_key_id}" if spec.kms_key_id else ""
            return Found(None, changes=[
                f"launch {spec.instance_type} {name} from {spec.image_id}: "
                f"{spec.volume_type} {spec.volume_gb} GB encrypted{kms}, IMDSv2 "
                f"{spec.http_tokens} (hop limit {spec.hop_limit})"
                + (", public IPv4 on the interface" if spec.public_ip else "")
                + (f", {spec.cpu_credits} CPU credits" if spec.cpu_credits else "")
                + (f", profile {spec.instance_profile}" if spec.instance_profile else "")])
        if len(insts) > 1:
            ids = ", ".join(i["InstanceId"] for i in insts)
            ctx.log(f"warning: {len(insts)} live instances tagged {name}: {ids}; using the "
                    "oldest", "stderr")
        insts.sort(key=lambda i: str(i.get("LaunchTime", "")))
        i = insts[0]
        if i.get("InstanceType") != spec.instance_type:
            # Not a change apply could make: a resize stops the instance.
            ctx.log(f"note: instance is {i.get('InstanceType')}, the runbook asks "
                    f"{spec.instance_type}; not changed (resize by hand)", "stderr")
        return Found(i, _instance_outputs(i), _metadata_changes(i, spec))

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: Any,
              found: Found) -> tuple[dict[str, Any], bool]:
        if found.obj is not None:
            if not found.changes:
                return found.outputs, False
            api.checked("ec2", "modify_instance_metadata_options",
                        InstanceId=found.obj["InstanceId"], **_metadata_wanted(spec))
            return found.outputs, True
        ebs: dict[str, Any] = {"VolumeSize": spec.volume_gb, "VolumeType": spec.volume_type,
                               "Encrypted": spec.encrypted, "DeleteOnTermination": True}
        if spec.kms_key_id:
            ebs["KmsKeyId"] = spec.kms_key_id
        params: dict[str, Any] = {
            "ImageId": spec.image_id, "InstanceType": spec.instance_type,
            "MinCount": 1, "MaxCount": 1,
            "BlockDeviceMappings": [{"DeviceName": spec.root_device, "Ebs": ebs}],
            "MetadataOptions": _metadata_wanted(spec),
            "TagSpecifications": tag_spec(ctx, "instance", name) + tag_spec(ctx, "volume", name),
        }
        if spec.cpu_credits:
            params["CreditSpecification"] = {"CpuCredits": spec.cpu_credits}
        # Not our idempotency (find-by-tag is; moto ignores tokens): it stops botocore's own
        # retry of a timed-out RunInstances from launching a second instance on real AWS.
        params["ClientToken"] = launch_token(ctx, name)
        if spec.public_ip:
            # Subnet and groups then belong to the interface (EC2 refuses them on both).
            nic: dict[str, Any] = {"DeviceIndex": 0, "AssociatePublicIpAddress": True,
                                   "DeleteOnTermination": True,
                                   "Groups": spec.security_group_ids}
            if spec.subnet_id:
                nic["SubnetId"] = spec.subnet_id
            params["NetworkInterfaces"] = [nic]
            params["TagSpecifications"] += tag_spec(ctx, "network-interface", name)
        else:
            params["SecurityGroupIds"] = spec.security_group_ids
            if spec.subnet_id:
                params["SubnetId"] = spec.subnet_id
        if spec.key_name:
            params["KeyName"] = spec.key_name
        if spec.instance_profile:
            params["IamInstanceProfile"] = {"Name": spec.instance_profile}
        if spec.user_data:
            params["UserData"] = asset_text(spec.user_data)
        try:
            r = api.call("ec2", "run_instances", **params)
        except Exception as e:
            # A just-created instance profile takes a few seconds to be visible to EC2.
            if error_code(e) == "InvalidParameterValue" and "iamInstanceProfile" in str(e):
                raise ActionFailed(
                    "the instance profile is not visible to EC2 yet",
                    diagnosis="IAM is eventually consistent: a new instance profile can "
                              "take ~10 s to propagate.",
                    fix="The step retries; if it still fails, resume in a minute.") from e
            raise explain(e, "ec2", "run_instances", api.region) from e
        if r["Instances"][0].get("State", {}).get("Name") in ("shutting-down", "terminated"):
            # The token matched an instance of this run that was terminated since: launch anew
            # (deterministic too, so botocore's retry of this relaunch reuses it).
            params["ClientToken"] = hashlib.sha256(
                f"{params['ClientToken']}/after-terminated".encode()).hexdigest()[:64]
            r = api.checked("ec2", "run_instances", **params)
        return _instance_outputs(r["Instances"][0]), True


# --------------------------------------------------------------------------- monitoring


class TopicSpec(Spec):
    email: str | None = None


class Topic(Kind):
    Spec = TopicSpec
    title = "SNS topic"

    def _arn(self, api: AwsApi, name: str) -> str | None:
        token = None
        while True:
            kw: dict[str, Any] = {"NextToken": token} if token else {}
            r = api.checked("sns", "list_topics", **kw)
            for t in r.get("Topics", []):
                if t["TopicArn"].rsplit(":", 1)[-1] == name:
                    return str(t["TopicArn"])
            token = r.get("NextToken")
            if not token:
                return None

    def _subscribed(self, api: AwsApi, arn: str, email: str) -> bool:
        subs = api.checked("sns", "list_subscriptions_by_topic", TopicArn=arn)["Subscriptions"]
        return any(s.get("Protocol") == "email" and s.get("Endpoint") == email for s in subs)

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: Any) -> Found:
        arn = self._arn(api, name)
        sub = [f"subscribe {spec.email} (AWS emails a confirmation link)"] if spec.email else []
        if arn is None:
            return Found(None, changes=[f"create SNS topic {name}", *sub])
        changes = [] if not spec.email or self._subscribed(api, arn, spec.email) else sub
        return Found(arn, {"topic_arn": arn}, changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: Any,
              found: Found) -> tuple[dict[str, Any], bool]:
        changed = False
        arn = found.obj
        if arn is None:
            arn = api.checked("sns", "create_topic", Name=name,
                              Tags=tag_list(ctx, name))["TopicArn"]
            changed = True
        if spec.email and not self._subscribed(api, arn, spec.email):
            api.checked("sns", "subscribe", TopicArn=arn, Protocol="email", Endpoint=spec.email)
            ctx.log(f"AWS sent a confirmation email to {spec.email}: alarms reach it only "
                    "after the link in it is clicked")
            changed = True
        return {"topic_arn": arn}, changed


def _logged_services() -> list[str]:
    from ..stack.values import LOGGED_SERVICES

    return list(LOGGED_SERVICES)


class LogGroupsSpec(Spec):
    # Default: the stack's logged compose services (stack/values.py: LOGGED_SERVICES), so
    # the groups are exactly the ones the rendered compose file's awslogs driver writes to.
    names: list[str] = Field(default_factory=_logged_services)
    retention_days: int = 30


class LogGroups(Kind):
    """Log groups ``<name>/<service>`` with retention; outputs the compose awslogs options.

    ``name`` is the prefix (``log_group_prefix`` of ``stack.render``); the group names
    come from ``stack.values.log_group_name``, the one naming scheme of container logs.
    """

    Spec = LogGroupsSpec
    title = "log groups"

    def _full(self, name: str, spec: LogGroupsSpec) -> list[str]:
        from ..stack.values import log_group_name

        return [log_group_name(name, n) for n in spec.names]

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: Any) -> Found:
        groups = {g["logGroupName"]: g for g in api.checked(
            "logs", "describe_log_groups", logGroupNamePrefix=name)["logGroups"]}
        changes = []
        for g in self._full(name, spec):
            if g not in groups:
                changes.append(f"create log group {g} (retention {spec.retention_days} days)")
            elif groups[g].get("retentionInDays") != spec.retention_days:
                changes.append(f"set retention of {g} to {spec.retention_days} days")
        return Found(groups or None, self._outputs(api, name, spec), changes)

    def _outputs(self, api: AwsApi, name: str, spec: LogGroupsSpec) -> dict[str, Any]:
        return {"log_groups": self._full(name, spec), "prefix": name,
                "awslogs": {n: {"driver": "awslogs", "options": {
                    "awslogs-region": api.region, "awslogs-group": group,
                    "mode": "non-blocking"}}
                    for n, group in zip(spec.names, self._full(name, spec), strict=True)}}

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: Any,
              found: Found) -> tuple[dict[str, Any], bool]:
        have = found.obj or {}
        for g in self._full(name, spec):
            if g not in have:
                try:
                    api.call("logs", "create_log_group", logGroupName=g,
                             tags=tag_dict(ctx, g))
                except Exception as e:
                    if error_code(e) != "ResourceAlreadyExistsException":
                        raise explain(e, "logs", "create_log_group", api.region) from e
            if have.get(g, {}).get("retentionInDays") != spec.retention_days:
                api.checked("logs", "put_retention_policy", logGroupName=g,
                            retentionInDays=spec.retention_days)
        return self._outputs(api, name, spec), bool(found.changes)


class AlarmDef(Spec):
    id: str
    metric: str
    namespace: str = "AWS/EC2"
    statistic: str = "Average"
    threshold: float
    comparison: str = "GreaterThanThreshold"
    period: int = 300
    evaluation_periods: int = 2
    dimensions: dict[str, str] = Field(default_factory=dict)
    description: str = ""
    # What no data means. "breaching" where silence is itself the fault (a dead
    # CloudWatch agent sends nothing); see the alarms in runbooks/poc-ec2.yaml.
    treat_missing_data: Literal["breaching", "notBreaching", "ignore", "missing"] = "missing"


class AlarmsSpec(Spec):
    topic_arn: str
    alarms: list[AlarmDef]


# put_metric_alarm parameters compared with describe_alarms (same names in both).
_ALARM_FIELDS = ("Namespace", "MetricName", "Statistic", "Period", "EvaluationPeriods",
                 "ComparisonOperator", "Threshold", "TreatMissingData", "AlarmActions",
                 "OKActions", "ActionsEnabled", "AlarmDescription")


def alarm_drift(have: dict[str, Any], want: dict[str, Any]) -> list[str]:
    """Which settings of an existing alarm differ from the wanted ``put_metric_alarm``
    parameters: dimensions first (an alarm on a replaced instance watches nothing)."""
    diff = []

    def dims(x: Any) -> list[tuple[str, str]]:
        return sorted((str(d.get("Name")), str(d.get("Value"))) for d in x or [])

    if dims(have.get("Dimensions")) != dims(want.get("Dimensions")):
        diff.append("dimensions " + ",".join(f"{k}={v}" for k, v in dims(want["Dimensions"])))
    for k in _ALARM_FIELDS:
        h, w = have.get(k), want.get(k)
        if k == "Threshold":
            h = float(h) if h is not None else None
            w = float(w) if w is not None else None
        elif k == "TreatMissingData":
            h = h or "missing"  # CloudWatch's default when never set
        elif k in ("AlarmActions", "OKActions"):
            h, w = sorted(h or []), sorted(w or [])
        if h != w:
            diff.append(f"{k} {h!r} -> {w!r}")
    return diff


class Alarms(Kind):
    """CloudWatch alarms named ``<name>-<id>`` sending to the topic (put is an upsert)."""

    Spec = AlarmsSpec
    title = "CloudWatch alarms"

    def _params(self, ctx: StepContext, name: str, spec: AlarmsSpec,
                a: AlarmDef) -> dict[str, Any]:
        return {"AlarmName": f"{name}-{a.id}", "AlarmDescription": a.description or a.id,
                "MetricName": a.metric, "Namespace": a.namespace, "Statistic": a.statistic,
                "Threshold": a.threshold, "ComparisonOperator": a.comparison,
                "Period": a.period, "EvaluationPeriods": a.evaluation_periods,
                "Dimensions": [{"Name": k, "Value": v} for k, v in a.dimensions.items()],
                "AlarmActions": [spec.topic_arn], "OKActions": [spec.topic_arn],
                "TreatMissingData": a.treat_missing_data, "ActionsEnabled": True}

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: Any) -> Found:
        names = [f"{name}-{a.id}" for a in spec.alarms]
        have = {a["AlarmName"]: a for a in api.checked(
            "cloudwatch", "describe_alarms", AlarmNames=names)["MetricAlarms"]}
        changes = []
        for a in spec.alarms:
            p = self._params(ctx, name, spec, a)
            h = have.get(p["AlarmName"])
            if h is None:
                changes.append(f"create alarm {p['AlarmName']}: {a.metric} "
                               f"{a.comparison} {a.threshold:g}")
            else:
                diff = alarm_drift(h, p)
                if diff:
                    changes.append(f"update alarm {p['AlarmName']} ({', '.join(diff)})")
        return Found(have or None, {"alarm_names": names}, changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: Any,
              found: Found) -> tuple[dict[str, Any], bool]:
        have = found.obj or {}
        changed = False
        for a in spec.alarms:
            p = self._params(ctx, name, spec, a)
            h = have.get(p["AlarmName"])
            if h is None or alarm_drift(h, p):
                api.checked("cloudwatch", "put_metric_alarm",
                            Tags=tag_list(ctx, p["AlarmName"]), **p)
                changed = True
        return found.outputs, changed


class SsmParameterSpec(Spec):
    value: str | None = None
    asset: AssetPath | None = None
    description: str = ""


class SsmParameter(Kind):
    """A String parameter (the CloudWatch agent config the agent fetches with ``ssm:``)."""

    Spec = SsmParameterSpec
    title = "SSM parameter"

    def _value(self, spec: SsmParameterSpec) -> str:
        if spec.asset:
            return asset_text(spec.asset)
        if spec.value is None:
            raise ActionFailed("ssm_parameter needs 'value' or 'asset'")
        return spec.value

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: Any) -> Found:
        r = _safe(api, "ssm", "get_parameter", ("ParameterNotFound",), Name=name)
        out = {"parameter_name": name}
        if r is None:
            return Found(None, out, [f"create SSM parameter {name}"])
        ok = r["Parameter"]["Value"] == self._value(spec)
        return Found(r["Parameter"], out, [] if ok else [f"update SSM parameter {name}"])

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: Any,
              found: Found) -> tuple[dict[str, Any], bool]:
        if not found.changes:
            return found.outputs, False
        if found.obj is None:
            api.checked("ssm", "put_parameter", Name=name, Value=self._value(spec),
                        Type="String", Description=spec.description,
                        Tags=tag_list(ctx, name))
        else:
            api.checked("ssm", "put_parameter", Name=name, Value=self._value(spec),
                        Type="String", Overwrite=True)
        return found.outputs, True


# --------------------------------------------------------------------------- generic


class OpSpec(Spec):
    operation: str
    params: dict[str, Any] = Field(default_factory=dict)
    # JMESPath selecting the resource in the response (null/empty = not found).
    query: str | None = None


class GenericSpec(Spec):
    service: str
    find: OpSpec
    create: OpSpec
    # EC2 resource type: tags go into TagSpecifications of the create call.
    tag_resource_type: str | None = None
    # Or the name of the create call's tag-list parameter (``Tags``).
    tags_param: str | None = None


class Generic(Kind):
    """Any resource: a describe call + JMESPath finds it, a create call makes it."""

    Spec = GenericSpec
    title = "resource"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: Any) -> Found:
        import jmespath

        r = api.checked(spec.service, spec.find.operation, **spec.find.params)
        obj = jmespath.search(spec.find.query, r) if spec.find.query else r
        if obj in (None, [], {}):
            return Found(None, changes=[f"{spec.service}.{spec.create.operation} ({name})"])
        return Found(obj, {"resource": obj})

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: Any,
              found: Found) -> tuple[dict[str, Any], bool]:
        import jmespath

        if found.obj is not None:
            return found.outputs, False
        params = dict(spec.create.params)
        if spec.tag_resource_type:
            params["TagSpecifications"] = tag_spec(ctx, spec.tag_resource_type, name)
        if spec.tags_param:
            params[spec.tags_param] = tag_list(ctx, name)
        r = api.checked(spec.service, spec.create.operation, **params)
        obj = jmespath.search(spec.create.query, r) if spec.create.query else r
        if isinstance(obj, dict):
            obj = {k: v for k, v in obj.items() if k != "ResponseMetadata"}
        return {"resource": obj}, True


KINDS: dict[str, Kind] = {
    "security_group": SecurityGroup(),
    "ingress_absent": IngressAbsent(),
    "key_pair": KeyPair(),
    "iam_role": Role(),
    "instance_profile": InstanceProfile(),
    "bucket": Bucket(),
    "eip": ElasticIp(),
    "eip_association": EipAssociation(),
    "instance": Instance(),
    "sns_topic": Topic(),
    "log_groups": LogGroups(),
    "alarms": Alarms(),
    "ssm_parameter": SsmParameter(),
    "generic": Generic(),
}
