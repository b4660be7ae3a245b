"""IAM kinds: the instance role (trust policy and inline policies from assets) and
its instance profile."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from ...engine.action import ActionFailed, StepContext
from ...engine.containment import JsonAssetPath
from ..aws_errors import error_code, explain
from ..aws_session import AwsApi
from ..aws_tags import has_deployment_tag, tag_list
from .base import Found, Kind, Spec, asset_json, asset_text, canon_json, safe_call

# --------------------------------------------------------------------------- IAM


class RoleSpec(Spec):
    trust_policy: JsonAssetPath = "aws/ec2-trust-policy.json"
    managed_policies: list[str] = Field(default_factory=list)
    # policy name -> asset path; ${placeholders} filled from ``variables`` (the trust
    # policy's too).
    inline_policies: dict[str, JsonAssetPath] = Field(default_factory=dict)
    variables: dict[str, str] = Field(default_factory=dict)
    description: str = "elematrix-tui instance role"


def _trust(spec: RoleSpec) -> Any:
    """The trust policy with its placeholders filled; a policy without any is read as is
    (a placeholder-free asset needs no ``variables``)."""
    return asset_json(spec.trust_policy, spec.variables if "${" in asset_text(
        spec.trust_policy) else None)


class Role(Kind[RoleSpec]):
    Spec = RoleSpec
    title = "IAM role"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: RoleSpec) -> Found:
        r = safe_call(api, "iam", "get_role", ("NoSuchEntity",), RoleName=name)
        if r is None:
            return Found(None, changes=[f"create IAM role {name} (trust: {spec.trust_policy})"]
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
            want = canon_json(asset_json(asset, spec.variables))
            got = safe_call(api, "iam", "get_role_policy", ("NoSuchEntity",), RoleName=name,
                        PolicyName=pname)
            if got is None or canon_json(got["PolicyDocument"]) != want:
                changes.append(f"put inline policy {pname}")
        trust = canon_json(_trust(spec))
        if canon_json(role["AssumeRolePolicyDocument"]) != trust:
            changes.append("update the trust policy")
        return Found(role, {"role_name": name, "role_arn": role["Arn"]}, changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: RoleSpec,
              found: Found) -> tuple[dict[str, Any], bool]:
        trust = json.dumps(_trust(spec))
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
            got = safe_call(api, "iam", "get_role_policy", ("NoSuchEntity",), RoleName=name,
                        PolicyName=pname)
            if got is None or canon_json(got["PolicyDocument"]) != canon_json(doc):
                api.checked("iam", "put_role_policy", RoleName=name, PolicyName=pname,
                            PolicyDocument=json.dumps(doc))
                changed = True
        return {"role_name": name, "role_arn": arn}, changed


class InstanceProfileSpec(Spec):
    role_name: str


class InstanceProfile(Kind[InstanceProfileSpec]):
    Spec = InstanceProfileSpec
    title = "instance profile"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: InstanceProfileSpec) -> Found:
        r = safe_call(api, "iam", "get_instance_profile", ("NoSuchEntity",),
                  InstanceProfileName=name)
        if r is None:
            return Found(None, changes=[f"create instance profile {name} with role "
                                        f"{spec.role_name}"])
        ip = r["InstanceProfile"]
        roles = [x["RoleName"] for x in ip.get("Roles", [])]
        changes = [] if roles == [spec.role_name] else [f"put role {spec.role_name} in {name}"]
        return Found(ip, {"profile_name": name, "profile_arn": ip["Arn"]}, changes)

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: InstanceProfileSpec,
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
