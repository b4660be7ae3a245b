"""``elematrix practice``: the real runbook against an embedded AWS emulator (moto).

The emulator is a moto server on 127.0.0.1 (never 0.0.0.0), started and stopped with the
app. Its state is kept in the practice deployment: every request is recorded to
``<deployment>/emulator/recording.jsonl``, and the next start replays the recording into a
fresh server seeded the same way, so the resources come back with the same ids and a
practice run can be resumed like a real one.

The deploy phase needs an instance. In practice the "instance" is this machine through the
``local`` host transport; that only works where a Docker engine answers. Where none does,
practice stops before deploy and says so (the engine and the runbook are the same either
way; only the host differs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PRACTICE_REGION = "us-east-1"  # moto resolves the AL2023 AMI for it
SEED = 20261127
NO_DOCKER = (
    "No Docker engine answers on this machine, so practice stops before the deploy phase: "
    "in practice the 'instance' is this machine itself. The infra and configure phases run "
    "for real against the emulator. To practise deploy: run 'elematrix practice' where "
    "'docker info' works, or against a staging AWS account with "
    "'elematrix run poc-ec2 --deployment staging --set expected_account=<staging id> ...'.")


class PracticeUnavailable(RuntimeError):
    pass


@dataclass
class Emulator:
    """A moto server on 127.0.0.1 whose state is recorded into ``directory``."""

    directory: Path
    url: str = ""
    _server: Any = None

    @property
    def recording(self) -> Path:
        return self.directory / "recording.jsonl"

    def start(self) -> Emulator:
        try:
            import requests
            from moto.server import ThreadedMotoServer
        except ImportError as e:
            raise PracticeUnavailable(
                "practice needs the AWS emulator: pip install 'elematrix-tui[practice]' "
                f"(missing: {e.name})") from None
        import logging

        # The server logs every request to stderr: that would scribble over the TUI.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The recorder reads these when moto is imported: set before the server starts.
        os.environ["MOTO_RECORDER_FILEPATH"] = str(self.recording)
        os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.url = f"http://{host}:{port}"
        api = f"{self.url}/moto-api"
        # Same seed, same requests in the same order: the same ids as last time.
        requests.post(f"{api}/seed?a={SEED}", timeout=10)
        requests.post(f"{api}/recorder/stop-recording", timeout=10)
        if self.recording.exists() and self.recording.stat().st_size:
            requests.post(f"{api}/recorder/replay-recording", timeout=300)
        else:
            self.recording.touch()
        requests.post(f"{api}/recorder/start-recording", timeout=10)
        return self

    def stop(self) -> None:
        if self._server is not None:
            try:
                import requests

                requests.post(f"{self.url}/moto-api/recorder/stop-recording", timeout=5)
            except Exception:
                pass
            self._server.stop()
            self._server = None

    def environ(self) -> dict[str, str]:
        """What boto3 needs to talk to the emulator and nothing else."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "practice",
            "AWS_SECRET_ACCESS_KEY": "practice",
            "AWS_SESSION_TOKEN": "practice",
            "AWS_REGION": PRACTICE_REGION,
            "AWS_DEFAULT_REGION": PRACTICE_REGION,
        }


def isolate_aws_environment(environ: MutableMapping[str, str], directory: Path) -> list[str]:
    """Remove every setting that could send practice's AWS calls anywhere but the emulator.

    boto3 prefers ``AWS_ENDPOINT_URL_<SERVICE>`` to the ``AWS_ENDPOINT_URL`` practice sets,
    ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`` would ignore ours, and a profile or the
    operator's config files can carry ``endpoint_url``, credentials or a
    ``credential_process``. They are cleared in this process, and the config files pointed
    at names that do not exist. Returns the names cleared (to tell the operator).
    """
    cleared = sorted(k for k in environ if k.startswith("AWS_ENDPOINT_URL_")
                     or k in _FOREIGN_AWS)
    for k in cleared:
        del environ[k]
    environ["AWS_CONFIG_FILE"] = str(directory / "no-aws-config")
    environ["AWS_SHARED_CREDENTIALS_FILE"] = str(directory / "no-aws-credentials")
    return cleared


# Other settings of the standard chain that would take practice elsewhere.
_FOREIGN_AWS = frozenset({
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
    "AWS_USE_FIPS_ENDPOINT", "AWS_USE_DUALSTACK_ENDPOINT", "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT"})


def docker_answers() -> bool:
    """Whether a Docker engine (not just the client) answers on this machine."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        res = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0 and bool(res.stdout.strip())


def practice_params(deployment_dir: Path) -> dict[str, Any]:
    """Parameter values that make poc-ec2 fit the emulator and this machine."""
    key = deployment_dir / "keys" / "operator_ed25519"
    _ensure_key(key)
    return {
        "operator_cidr": "127.0.0.1/32",
        "server_name": "practice.localhost",
        "alert_email": "operator@example.org",
        "ssh_public_key_path": str(key) + ".pub",
        "host_transport": "local",
        # The local Docker engine has no AWS credentials: its awslogs driver could not
        # write to the emulator, so the containers keep logging locally.
        "container_logs": "local",
        "status_wait": 60,
        "host_key_wait": 0,
    }


def _ensure_key(path: Path) -> None:
    """An operator key pair of the practice deployment's own (never the user's ~/.ssh)."""
    if path.exists() and path.with_suffix(".pub").exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    pub = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    path.with_suffix(".pub").write_bytes(pub + b" elematrix-practice\n")
