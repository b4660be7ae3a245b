"""``ssm.forward``: a Session Manager port forward to a port on the instance's loopback.

After ``close_ssh`` (harden removes the SSH rule) ``ssh.forward`` cannot reach Synapse's
admin API any more. Session Manager can: ``ssm.start_session`` with the document
``AWS-StartPortForwardingSession`` starts a session on the instance's SSM agent, and the
**session-manager-plugin** binary on this machine opens the data channel (a websocket
to the session's ``StreamUrl``) and listens on the local port. The API call is ours; the
bytes are always carried by the plugin - without it there is no tunnel, and this action
says how to install it instead of pretending.

The plugin is started exactly as the AWS CLI starts it (awscli/customizations/
sessionmanager.py, ``StartSessionCaller.invoke``): ``session-manager-plugin RESPONSE
REGION StartSession PROFILE REQUEST_JSON ENDPOINT_URL``, where RESPONSE is the JSON of
SessionId/TokenValue/StreamUrl, or - for plugins newer than 1.2.497.0 - the name of the
environment variable ``AWS_SSM_START_SESSION_RESPONSE`` holding it (so the session
token is not on a command line). The forward lives until the run ends: the plugin is
stopped and the session terminated then.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

from pydantic import Field

from ..engine.action import Action, ActionFailed, Inputs, Result, StepContext
from ..engine.poll import PollCancelled, PollTimeout, poll

PLUGIN = "session-manager-plugin"
DOCUMENT = "AWS-StartPortForwardingSession"
RESPONSE_ENV = "AWS_SSM_START_SESSION_RESPONSE"
# Plugins newer than this read the start_session response from RESPONSE_ENV.
LAST_PLUGIN_WITHOUT_ENV = (1, 2, 497, 0)
INSTALL_URL = ("https://docs.aws.amazon.com/systems-manager/latest/userguide/"
               "session-manager-working-with-install-plugin.html")
INSTALL_HINT = (f"Install the Session Manager plugin ({INSTALL_URL}): Debian/Ubuntu the "
                "session-manager-plugin.deb from that page (`sudo dpkg -i "
                "session-manager-plugin.deb`), macOS `brew install --cask "
                "session-manager-plugin`, Windows the installer; check with "
                "`session-manager-plugin --version`, then re-run.")


class SsmForwardInputs(Inputs):
    instance_id: str = Field(pattern=r"^(i|mi)-[0-9a-f]{8,17}$")
    remote_port: int = Field(default=8008, ge=1, le=65535)
    local_port: int = Field(default=0, ge=0, le=65535)  # 0: a free port
    plugin: str = PLUGIN  # name on PATH, or a path
    ready_timeout: float = Field(default=30, gt=0, le=300)


def plugin_version(path: str) -> tuple[int, ...] | None:
    """The plugin's version as numbers (None when it does not say one)."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True,
                             timeout=15).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+){0,3})\s*", out)
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Tunnel:
    """The running plugin and its session (closed at the end of the run)."""

    def __init__(self, proc: subprocess.Popen[bytes], session_id: str, client: Any,
                 local_port: int, log_path: str) -> None:
        self.proc = proc
        self.session_id = session_id
        self.client = client
        self.local_port = local_port
        self.log_path = log_path

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        # The agent would keep an abandoned session until its idle timeout.
        with contextlib.suppress(Exception):
            self.client.terminate_session(SessionId=self.session_id)
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)


class SsmForward(Action[SsmForwardInputs]):
    """A local port forwarded through Session Manager to a port on the instance."""

    name = "ssm.forward"
    Inputs = SsmForwardInputs
    read_only = True       # nothing on the instance changes
    process_local = True   # the plugin dies with the process: a resumed run reopens it

    def describe(self, inputs: SsmForwardInputs) -> str:
        return (f"Session Manager forward 127.0.0.1:{inputs.local_port or 'free port'} -> "
                f"{inputs.instance_id} localhost:{inputs.remote_port}")

    def apply(self, ctx: StepContext, inputs: SsmForwardInputs) -> Result:
        from .aws_session import aws_for

        plugin = shutil.which(inputs.plugin)
        if plugin is None:
            raise ActionFailed(
                f"{inputs.plugin} is not installed (not on PATH)",
                diagnosis="The Session Manager plugin carries a port forward's data; "
                          "elematrix starts the session through the API, but without the "
                          "plugin nothing can listen on the local port.",
                fix=INSTALL_HINT + " While SSH is still open, ssh.forward works too.")
        key = f"ssm.forward:{inputs.instance_id}:{inputs.remote_port}:{inputs.local_port}"
        created: list[bool] = []
        # Outside the factory: the runner's resource lock is not reentrant, and aws_for
        # takes a resource of its own (the shared AWS session).
        api = aws_for(ctx)

        def factory() -> _Tunnel:
            tunnel = self._open(ctx, inputs, plugin, api)
            created.append(True)
            return tunnel

        tunnel = ctx.resource(key, factory, lambda t: t.close())
        url = f"http://127.0.0.1:{tunnel.local_port}"
        if created:
            ctx.log(f"forwarding {url} -> {inputs.instance_id} localhost:"
                    f"{inputs.remote_port} (Session Manager, session {tunnel.session_id})")
        outputs = {"local_port": tunnel.local_port, "url": url,
                   "session_id": tunnel.session_id,
                   "remote": f"{inputs.instance_id}:{inputs.remote_port}"}
        return Result(status="changed" if created else "ok", outputs=outputs,
                      message=f"{url} -> {inputs.instance_id}:{inputs.remote_port}")

    @staticmethod
    def _closer(api: Any) -> Any:
        """An SSM client for terminate_session at the end of the run: two attempts, short
        timeouts (the run is ending; the agent drops an idle session by itself anyway)."""
        from botocore.config import Config

        cfg = Config(retries={"mode": "standard", "total_max_attempts": 2},
                     connect_timeout=5, read_timeout=10)
        return api.shared.session.client("ssm", region_name=api.region, config=cfg)

    @staticmethod
    def _instance_running(api: Any, instance_id: str) -> None:
        """A clear message for the common mistakes before Session Manager's generic one."""
        from botocore.exceptions import ClientError

        try:
            resp = api.call("ec2", "describe_instances", InstanceIds=[instance_id])
        except ClientError as e:
            if "InvalidInstanceID" in str(e):
                raise ActionFailed(
                    f"instance {instance_id} does not exist in {api.region}",
                    diagnosis="The instance id is wrong, or it lives in another region.",
                    fix="Pass the deployment's instance id (`elematrix report` shows it) "
                        "and the region it runs in (AWS_REGION / --set aws_region).") from e
            raise
        states = [i["State"]["Name"] for r in resp.get("Reservations", [])
                  for i in r.get("Instances", [])]
        if states and states[0] != "running":
            raise ActionFailed(
                f"instance {instance_id} is {states[0]}, not running",
                diagnosis="Session Manager reaches only a running instance with its SSM "
                          "agent online.",
                fix=f"Start it (`aws ec2 start-instances --instance-ids {instance_id}`), "
                    "wait for it, then re-run.")

    def _open(self, ctx: StepContext, inputs: SsmForwardInputs, plugin: str,
              api: Any) -> _Tunnel:
        from .aws_errors import explain

        local = inputs.local_port or _free_port()
        request = {"Target": inputs.instance_id, "DocumentName": DOCUMENT,
                   "Parameters": {"portNumber": [str(inputs.remote_port)],
                                  "localPortNumber": [str(local)]}}
        self._instance_running(api, inputs.instance_id)
        client = api.client("ssm")
        t0 = time.monotonic()
        try:
            # Called directly, not through api.call: its summary would log TokenValue.
            resp = client.start_session(**request)
        except Exception as e:
            raise explain(e, "ssm", "start_session", api.region) from e
        token = str(resp.get("TokenValue", ""))
        if token:
            ctx.add_secret(token)
        session_id = str(resp["SessionId"])
        ctx.note("aws.call", service="ssm", operation="start_session", params=request,
                 duration=round(time.monotonic() - t0, 4), summary=f"SessionId={session_id}")
        ctx.log(f"aws ssm.start_session -> SessionId={session_id} "
                f"({(time.monotonic() - t0) * 1000:.0f} ms)")
        response = json.dumps({"SessionId": session_id, "TokenValue": token,
                               "StreamUrl": resp.get("StreamUrl", "")})
        env = dict(os.environ)
        version = plugin_version(plugin)
        arg = response
        if version is not None and version > LAST_PLUGIN_WITHOUT_ENV:
            env[RESPONSE_ENV] = response
            arg = RESPONSE_ENV
        profile = str(ctx.params.get("aws_profile") or "")
        fd, log_path = tempfile.mkstemp(prefix="elematrix-ssm-", suffix=".log")
        with os.fdopen(fd, "wb") as log:
            proc = subprocess.Popen(
                [plugin, arg, api.region, "StartSession", profile, json.dumps(request),
                 client.meta.endpoint_url],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True)
        tunnel = _Tunnel(proc, session_id, self._closer(api), local, log_path)

        def listening(attempt: int) -> bool | None:
            if proc.poll() is not None:
                return False  # the plugin exited: it will never listen
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", local), timeout=0.5):
                return True
            return None

        try:
            # At least 1 s even when the step's deadline is closer (as before the helper).
            up = poll(listening, what=f"the Session Manager plugin on 127.0.0.1:{local}",
                      timeout=min(inputs.ready_timeout, max(
                          (ctx.deadline or float("inf")) - time.monotonic(), 1)),
                      interval=0.1, cancel=ctx.cancel)
        except PollCancelled:
            tunnel.close()
            raise
        except PollTimeout:
            up = False
        if up:
            return tunnel
        tail = ""
        with contextlib.suppress(OSError), open(log_path, errors="replace") as f:
            tail = f.read()[-800:].strip()
        tunnel.close()
        if token:
            tail = tail.replace(token, "********")
        raise ActionFailed(
            f"the Session Manager plugin did not open 127.0.0.1:{local}"
            + (f" (exit {proc.returncode})" if proc.returncode is not None else ""),
            diagnosis="The session started, but its data channel did not come up: the SSM "
                      f"agent is offline, the instance profile lacks AmazonSSMManagedInstance"
                      f"Core, or the plugin failed. Plugin output: {tail or '(none)'}",
            fix="Check `aws ssm describe-instance-information` lists the instance as Online "
                "(the harden phase's ssm_ready step waits for it), then re-run.")
