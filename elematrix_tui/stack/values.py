"""The parameters of the bundled stack, their defaults and the pinned image versions.

Everything a deployment can vary lives here, in one place, so the templates, the
``stack.render`` action, the docs and the tests agree on names and defaults.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Pinned images: the one table of them. The compose template, `elematrix plan` (under
# stack.render) and the local test-image builder all read it, so bumping a tag here is
# the whole bump. It is a deliberate, reviewed change: the compose file never says
# ``latest``, so a reboot can never pull a different Synapse than the one tested.
# Synapse follows the version tested here (.venv-synapse, PyPI); the others are the
# newest releases of their lines seen in public sources on 2026-12-01 (docs/stack.md).
IMAGES: dict[str, str] = {
    "postgres": "postgres:15.19-alpine",
    "synapse": "matrixdotorg/synapse:v1.163.2",
    "element": "vectorim/element-web:v1.12.30",
    "nginx": "nginx:1.30.5-alpine",
}

# The compose services whose logs go to CloudWatch, one log group each: the one naming
# scheme of container logs. The compose template (awslogs-group), the harden phase's
# log groups (aws.ensure kind log_groups) and the hardened gate all come from here.
LOGGED_SERVICES: tuple[str, ...] = ("postgres", "synapse", "element", "nginx")


def log_group_name(prefix: str, service: str) -> str:
    """The CloudWatch log group of one compose service: ``<prefix>/<service>``."""
    return f"{prefix.rstrip('/')}/{service}"


# Names of the secrets in the deployment's keyring, in the order they are generated.
SECRET_NAMES: tuple[str, ...] = (
    "registration_shared_secret",
    "macaroon_secret_key",
    "form_secret",
    "postgres_password",
)
# Generated secrets: 43 letters and digits (256 bits, as the 32 URL-safe bytes before), from
# the engine's one generator (engine/params.py: generate_secret); they fit YAML, env files,
# URLs and shells unquoted. stack.render and stack.adapt both generate with it.
SECRET_LENGTH = 43

# Memory tuning by instance type: Synapse's cache factor and PostgreSQL's shared_buffers.
# The whole stack must fit in RAM next to the OS (research: ~2.5-3 GB at POC scale on 4 GB).
_TUNING: dict[str, tuple[float, str]] = {
    "t3.small": (0.5, "128MB"),
    "t3.medium": (1.0, "256MB"),
    "t3.large": (2.0, "512MB"),
    "t3.xlarge": (4.0, "1GB"),
    "t3.2xlarge": (8.0, "2GB"),
    "m6i.large": (2.0, "512MB"),
    "m6i.xlarge": (4.0, "1GB"),
}

# host, or host:port; host is a DNS name or an IPv4 address (IPv6 literals are not
# supported by the rest of the toolchain either).
_HOSTPORT_RE = re.compile(
    r"^(?=.{1,253}(:\d{1,5})?$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(:(\d{1,5}))?$"
)
_LOG_GROUP_RE = re.compile(r"^[A-Za-z0-9_\-/.#]{0,400}$")
# The one home of these two rules for the stack (values and the worker layout); empty is
# allowed where the field is optional.
BUCKET_RE = re.compile(r"^$|^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
REGION_RE = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")


def _hostport(v: str, what: str) -> str:
    m = _HOSTPORT_RE.fullmatch(v)
    if not m:
        raise ValueError(f"{what} {v!r} must be a host name or IPv4 address, optionally :port")
    port = m.group(7)
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError(f"{what} {v!r}: port must be 1-65535")
    return v


# Connections each Synapse process may hold to PostgreSQL (homeserver.yaml's cp_max): a
# worker deployment needs this many per process on the database server.
DB_POOL_MAX = 10

# The host port of Synapse's admin API by default (the bundled stack publishes it on
# 127.0.0.1; the runbooks' SSH tunnels reach it there).
ADMIN_PORT = 8008


class StackValues(BaseModel):
    """What the templates see as values (secrets are passed separately)."""

    model_config = ConfigDict(extra="forbid")

    # Permanent: baked into every user id and room alias.
    server_name: str
    # The address browsers and clients use (EIP or public DNS name), optionally with a port.
    public_address: str
    deployment: str = "default"
    brand: str = "Element"
    theme: Literal["light", "dark"] = "light"
    logo_url: str = ""
    welcome_url: str = ""
    max_upload_size_mb: int = Field(default=50, ge=1, le=4096)
    instance_type: str = "t3.medium"
    backup_bucket: str = ""
    aws_region: str = "us-east-1"
    # Empty: containers log with json-file (rotated). Set: awslogs into
    # log_group_name(prefix, service) for each of LOGGED_SERVICES.
    log_group_prefix: str = ""
    # Host port nginx is published on (the security group opens it).
    http_port: int = Field(default=80, ge=1, le=65535)
    # Host port of Synapse's admin API, on the host's loopback only (reached through an SSH
    # port forward). Another port lets a second stack run beside the first on one host (the
    # rehearsal's restore drill: docs/day-two.md); Synapse itself always listens on 8008.
    admin_port: int = Field(default=ADMIN_PORT, ge=1, le=65535)
    # Where the rendered stack lives on the instance.
    remote_dir: str = "/opt/elematrix/stack"
    # Federation needs TLS on a real domain: off for the HTTP-only POC.
    federation: bool = False
    backup_schedule: str = "*-*-* 03:15:00"
    images: dict[str, str] = Field(default_factory=lambda: dict(IMAGES))

    @field_validator("server_name")
    @classmethod
    def _server_name(cls, v: str) -> str:
        return _hostport(v, "server_name")

    @field_validator("public_address")
    @classmethod
    def _public_address(cls, v: str) -> str:
        v = v.removeprefix("http://").rstrip("/")
        return _hostport(v, "public_address")

    @field_validator("deployment")
    @classmethod
    def _deployment(cls, v: str) -> str:
        # It lands in comments, unit descriptions and S3 keys: one safe word, no newline.
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", v):
            raise ValueError(f"deployment {v!r} must be lowercase letters, digits, - or _")
        return v

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z0-9]+\.[a-z0-9]+", v):
            raise ValueError(f"instance_type {v!r} is not an EC2 instance type (e.g. t3.medium)")
        return v

    @field_validator("backup_schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        # A systemd OnCalendar expression: a newline would inject unit directives.
        if not re.fullmatch(r"[A-Za-z0-9*:,./ ~-]{1,100}", v):
            raise ValueError(f"backup_schedule {v!r} is not a systemd calendar expression")
        return v

    @field_validator("log_group_prefix")
    @classmethod
    def _log_group(cls, v: str) -> str:
        if not _LOG_GROUP_RE.fullmatch(v):
            raise ValueError(f"log_group_prefix {v!r} has characters CloudWatch Logs refuses")
        return v.rstrip("/")

    @field_validator("backup_bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not BUCKET_RE.fullmatch(v):
            raise ValueError(f"backup_bucket {v!r} is not a valid S3 bucket name")
        return v

    @field_validator("aws_region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not REGION_RE.fullmatch(v):
            raise ValueError(f"aws_region {v!r} is not an AWS region name")
        return v

    @field_validator("logo_url", "welcome_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not re.fullmatch(r"(https?://|/)\S+", v):
            raise ValueError(f"{v!r} must be an http(s):// URL or an absolute path")
        return v

    @field_validator("remote_dir")
    @classmethod
    def _remote_dir(cls, v: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9_./-]+", v) or ".." in v:
            raise ValueError(f"remote_dir {v!r} must be an absolute path without spaces or ..")
        return v.rstrip("/")

    @field_validator("images")
    @classmethod
    def _images(cls, v: dict[str, str]) -> dict[str, str]:
        merged = dict(IMAGES)
        for key, ref in v.items():
            if key not in IMAGES:
                raise ValueError(f"unknown image {key!r} (known: {', '.join(IMAGES)})")
            if ":" not in ref.rsplit("/", 1)[-1] or ref.endswith(":latest"):
                raise ValueError(f"image {key}={ref!r} must be pinned to a version tag")
            merged[key] = ref
        return merged

    @property
    def public_baseurl(self) -> str:
        """``http://<public address>/``: set explicitly, Synapse would assume https."""
        return f"http://{self.public_address}/"

    @property
    def max_upload_size(self) -> str:
        """The same figure for Synapse and nginx (``client_max_body_size``)."""
        return f"{self.max_upload_size_mb}M"

    @property
    def cache_factor(self) -> float:
        return _TUNING.get(self.instance_type, _TUNING["t3.medium"])[0]

    @property
    def shared_buffers(self) -> str:
        return _TUNING.get(self.instance_type, _TUNING["t3.medium"])[1]

    def log_group(self, service: str) -> str:
        """The awslogs group of a compose service (``log_group_prefix`` must be set)."""
        if service not in LOGGED_SERVICES:
            raise ValueError(f"service {service!r} is not in LOGGED_SERVICES")
        return log_group_name(self.log_group_prefix, service)

    @property
    def signing_key_file(self) -> str:
        return f"{self.server_name}.signing.key"
