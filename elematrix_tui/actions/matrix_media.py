"""The media check's big uploads, run ON THE HOST over SSH against nginx on its loopback.

Proving the upload limit means moving about ``max_upload_size`` (50 MiB by default)
through nginx and Synapse, twice. From the operator's laptop that is minutes on a normal
uplink; on the host it is a second. With an SSH target (``host_ssh``) the gate therefore
uploads limit - 1 KiB and limit + 1 KiB with ``curl`` on the host, to nginx at
``host_url`` (``http://127.0.0.1:<http_port>``): through nginx, so what is proven is the
relation of nginx's ``client_max_body_size`` to Synapse's ``max_upload_size``, the same as
from outside. The operator's own link is proven by a small round trip from this machine.

The access token never appears on a command line (the host's process list): each script
reads it from stdin into a 0600 header file in a private temporary directory, which a
trap removes. Only ``sh``, ``head``, ``sha256sum``, ``base64``, ``wc`` and ``curl`` are
needed (all on Amazon Linux 2023 and Debian).
"""

from __future__ import annotations

import asyncio
import base64
import shlex
from typing import Any

from ..engine.action import StepContext
from . import sshconn
from .matrix_transfer import Transfer

_PRELUDE = """set -u
umask 077
t=$(mktemp -d) || exit 90
trap 'rm -rf "$t"' EXIT
IFS= read -r tok || exit 91
printf 'Authorization: Bearer %s\\n' "$tok" > "$t/h"
command -v curl >/dev/null 2>&1 || {{ echo "nocurl"; exit 92; }}
"""

_UPLOAD = _PRELUDE + """head -c {size} /dev/urandom > "$t/b" || exit 93
echo "sha256 $(sha256sum < "$t/b" | cut -d' ' -f1)"
s=$(date +%s.%N)
w=$(curl -sS -o "$t/r" -w '%{{http_code}} %{{content_type}}' -H @"$t/h" \\
    -H 'Content-Type: application/octet-stream' --data-binary @"$t/b" \\
    --max-time {max_time} {url} 2>"$t/e"); c=$?
echo "took $s $(date +%s.%N)"
echo "curl $c $(head -c 300 "$t/e" | tr '\\n' ' ')"
echo "status $w"
echo "body $( (head -c 8192 "$t/r" 2>/dev/null || true) | base64 | tr -d '\\n')"
"""

_DOWNLOAD = _PRELUDE + """s=$(date +%s.%N)
w=$(curl -sS -o "$t/d" -w '%{{http_code}} %{{content_type}}' -H @"$t/h" \\
    --max-time {max_time} {url} 2>"$t/e"); c=$?
echo "took $s $(date +%s.%N)"
echo "curl $c $(head -c 300 "$t/e" | tr '\\n' ' ')"
echo "status $w"
echo "sha256 $(sha256sum < "$t/d" | cut -d' ' -f1) $(wc -c < "$t/d")"
echo "body $(head -c 8192 "$t/d" | base64 | tr -d '\\n')"
"""


# curl's exit code for "Failed to connect to host" (curl(1), EXIT CODES).
CURL_COULDNT_CONNECT = 7


class HostError(Exception):
    """The host-side command could not run (SSH, a missing tool): not a finding on nginx."""


def _fields(stdout: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        key, _, rest = line.partition(" ")
        out.setdefault(key, rest.strip())
    return out


class HostSide:
    """Runs the upload/download scripts on the host through the run's SSH connection."""

    def __init__(self, ctx: StepContext, ssh: Any, host_url: str) -> None:
        # ssh: validated ssh.* inputs (actions.ssh.SshInputs).
        self.ctx = ctx
        self.target = sshconn.resolve_target(ssh.host, ssh.port, ssh.user, ssh.key_path,
                                              ssh.connect_timeout, ctx.deployment_dir)
        self.pins = sshconn.parse_fingerprints(ssh.host_key_fingerprints)
        self.url = host_url.rstrip("/")

    def __str__(self) -> str:
        return f"{self.target} -> {self.url}"

    def _exec(self, script: str, token: str, timeout: float) -> dict[str, str]:
        try:
            conn = sshconn.connection(self.ctx, self.target, self.pins, interactive=False)
            res = conn.exec(script, timeout=timeout, cancel=self.ctx.cancel,
                            sink=lambda _s, _l: None, stdin=(token + "\n").encode())
        except sshconn.ChannelOpenError as e:
            raise HostError(f"SSH to {self.target}: {e}") from e
        except Exception as e:  # ActionFailed from connecting (host key, auth, refused)
            raise HostError(f"SSH to {self.target}: {e}") from e
        f = _fields(res.stdout)
        if "nocurl" in f:
            raise HostError(f"curl is not installed on {self.target}")
        if res.timed_out:
            raise HostError(f"the host-side transfer did not finish within {timeout:.0f} s")
        if res.exit_code != 0 or "status" not in f:
            raise HostError(f"host-side script exited {res.exit_code}: "
                            f"{(res.stderr or res.stdout)[-300:].strip()}")
        return f

    @staticmethod
    def _transfer(f: dict[str, str], size: int) -> Transfer:
        code, _, ctype = f.get("status", "000").partition(" ")
        try:
            body = base64.b64decode(f.get("body", "")).decode(errors="replace")
        except ValueError:
            body = ""
        t = f.get("took", "0 0").split()
        try:
            seconds = max(float(t[1]) - float(t[0]), 0.0)
        except (IndexError, ValueError):
            seconds = 0.0
        status = int(code) if code.isdigit() else 0
        curl_code, _, curl_msg = f.get("curl", "").partition(" ")
        sha = f.get("sha256", "").split()
        if len(sha) > 1 and sha[1].isdigit():
            size = int(sha[1])
        return Transfer(status, body, ctype.strip(), sha[0] if sha else "", size, seconds,
                        "" if status else f"curl exit {curl_code}: {curl_msg.strip()}")

    async def upload(self, path: str, token: str, size: int, timeout: float) -> Transfer:
        """POST ``size`` random bytes from the host to ``host_url + path``."""
        script = _UPLOAD.format(size=int(size), max_time=max(int(timeout) - 1, 1),
                                url=shlex.quote(self.url + path))
        f = await asyncio.to_thread(self._exec, script, token, timeout)
        return self._transfer(f, size)

    async def download(self, path: str, token: str, timeout: float) -> Transfer:
        """GET ``host_url + path`` on the host; the sha256 and size of what arrived."""
        script = _DOWNLOAD.format(max_time=max(int(timeout) - 1, 1),
                                  url=shlex.quote(self.url + path))
        f = await asyncio.to_thread(self._exec, script, token, timeout)
        return self._transfer(f, 0)
