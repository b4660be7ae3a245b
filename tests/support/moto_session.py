"""A boto3 "session" for a test's own clients of the moto server the CLI talks to.

``client(service)`` reaches ``AWS_ENDPOINT_URL_<SERVICE>`` when set (DLM: the stand-in
beside moto, ``elematrix_tui/practice_dlm.py``, started by tests/conftest.py), else the
moto server, exactly as botocore resolves a service-specific endpoint for the CLI. The one
home of that rule for tests: a client pointed only at moto asked moto for DLM and got a
500 (session 5, the drill's rehearsal after the DLM merge)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def endpoint_for(service: str, url: str, env: Mapping[str, str] | None = None) -> str:
    """The endpoint botocore would use for ``service``: its own variable, else ``url``."""
    key = f"AWS_ENDPOINT_URL_{service.upper().replace('-', '_')}"
    return (env or {}).get(key) or os.environ.get(key) or url


class MotoSession:
    def __init__(self, url: str, env: Mapping[str, str] | None = None,
                 region: str = "us-east-1") -> None:
        self.url = url
        self.env = dict(env or {})
        self.region = region

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, endpoint_url=endpoint_for(service, self.url, self.env),
                            region_name=self.region, aws_access_key_id="x",
                            aws_secret_access_key="x")
