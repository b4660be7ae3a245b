"""EC2 kinds: the SSH key pair (made on this machine, imported into EC2) and the
instance (found by its deployment tag, launched with a ClientToken per attempt)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ...engine.action import ActionFailed, StepContext
from ...engine.containment import AssetPath
from ..aws_errors import error_code, explain
from ..aws_session import AwsApi
from ..aws_tags import tag_spec
from .base import Found, Kind, Spec, asset_text, owned_filters

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


class KeyPair(Kind[KeyPairSpec]):
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
        from ...engine.params import ParamValueError, read_public_key

        try:
            return read_public_key(path)
        except ParamValueError as e:
            raise ActionFailed(f"ssh_public_key_path: {e}",
                               diagnosis="only a single OpenSSH public key line is ever "
                                         "imported into AWS",
                               fix="point ssh_public_key_path at your .pub file, or at a path "
                                   "that does not exist to have a key pair generated") from None

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: KeyPairSpec) -> Found:
        kps = api.checked("ec2", "describe_key_pairs", Filters=[
            *owned_filters(ctx, "key-name", name)])["KeyPairs"]
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

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: KeyPairSpec,
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


class Instance(Kind[InstanceSpec]):
    Spec = InstanceSpec
    title = "EC2 instance"

    def find(self, api: AwsApi, ctx: StepContext, name: str, spec: InstanceSpec) -> Found:
        res = api.checked("ec2", "describe_instances", Filters=[
            *owned_filters(ctx, "tag:Name", name),
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

    def apply(self, api: AwsApi, ctx: StepContext, name: str, spec: InstanceSpec,
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
