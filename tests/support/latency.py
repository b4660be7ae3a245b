"""A latency model of real AWS and of the instance's boot, for the rehearsal and the bench.

Off by default: nothing in ``elematrix_tui`` imports this module. The figures (seconds,
bytes, bandwidths) live in :data:`FIGURES`, each with its source; ``docs/latency-model.md``
is the operator's page (which figures are measured by others, which are estimates).

Two ways in:

- :func:`patched_api_latency` (a context manager) slows every botocore API call made in
  this process (moto in-process: ``mock_aws``) by the per-call figure, and shows the state
  transitions moto skips (moto's instances are ``running`` with status ``ok`` at once):
  an instance is ``pending`` until its pending figure has passed, its status checks
  ``initializing`` until theirs, its console output empty until it is posted.
- :class:`World` + :func:`modelled_registry`: the real ``Runner`` runs a runbook whose
  actions are replaced by modelled ones, each sleeping what the model says its step costs
  on real AWS (including the SSH-side steps that depend on boot: cloud-init, the Docker
  install, image pulls at the stated bandwidth). ``bench/bench_e2e.py`` runs poc-ec2 so,
  before and after the critical-path changes.

Both run on a **scaled clock**: ``ELEMATRIX_LATENCY_SCALE=0.05`` (or ``scale=``) makes one
modelled second sleep 50 ms; :class:`Clock` gives the modelled time back.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ConfigDict

from elematrix_tui.engine.action import Action, Check, Inputs, Result
from elematrix_tui.engine.registry import Registry


@dataclass(frozen=True)
class Figure:
    value: float
    unit: str
    source: str
    estimate: bool  # True: our estimate, not a published measurement or documented figure


# One home for every figure of the model (docs/latency-model.md explains and cites them).
FIGURES: dict[str, Figure] = {
    "api_call_s": Figure(0.15, "s", "estimate: a control-plane call from a nearby region "
                         "(RunInstances itself took 1.5 s in ec2-boot-bench)", True),
    "run_instances_s": Figure(1.5, "s", "ec2-boot-bench (Percival 2021): 'RunInstances API "
                              "call took: 1.54 s'", False),
    "pending_to_running_s": Figure(17.0, "s", "brevdev/ec2-coldboot-research: pending->running "
                                   "16.4-16.6 s for every family tried (t3, m6i, m7i...); "
                                   "encrypted EBS is slower (martysweet.co.uk, 2023)", False),
    "running_to_ssh_s": Figure(23.0, "s", "ec2-boot-bench (Percival 2021): running -> TCP/22 "
                               "closed 17.2 s, closed -> open 5.6 s", False),
    "status_ok_s": Figure(180.0, "s", "estimate: AWS runs status checks every minute "
                          "(EC2 User Guide, 'Status checks'); the first 'ok' needs the "
                          "reachability check after boot; the runbook's own "
                          "expected_duration is 180", True),
    "console_output_s": Figure(90.0, "s", "estimate: GetConsoleOutput returns output 'posted "
                               "shortly after an instance transition state' (EC2 API "
                               "Reference); the runbook's expected_duration is 90", True),
    "iam_propagation_s": Figure(10.0, "s", "estimate: IAM is eventually consistent (IAM User "
                                "Guide, troubleshooting); RunInstances refuses a new profile "
                                "('Invalid IAM Instance Profile name', hashicorp/terraform "
                                "#15341, aws/karpenter-provider-aws #5018) for ~10 s", True),
    "eip_association_s": Figure(1.0, "s", "estimate: one AssociateAddress call and the "
                                "address moving", True),
    "cloud_init_base_s": Figure(8.0, "s", "estimate: cloud-init's modules before runcmd", True),
    "swap_file_s": Figure(16.4, "s", "gp3 baseline throughput 125 MiB/s (EBS User Guide): "
                          "dd of 2048 MiB", False),
    "docker_install_s": Figure(45.0, "s", "estimate: dnf install docker and the compose plugin "
                               "on AL2023 (two repositories' metadata, ~100 MB)", True),
    "pull_bandwidth_MBps": Figure(25.0, "MB/s", "estimate: ~200 Mbit/s typical from Docker Hub "
                                  "(dev-toolbox.tech bandwidth calculator, 'Registry "
                                  "performance')", True),
    "image_postgres_MB": Figure(105.0, "MB", "estimate: compressed size of postgres:15-alpine; "
                                "not looked up (no registry is reachable here)", True),
    "image_synapse_MB": Figure(160.0, "MB", "estimate: compressed size of matrixdotorg/synapse; "
                               "not looked up (no registry is reachable here)", True),
    "image_element_MB": Figure(60.0, "MB", "estimate: compressed size of vectorim/element-web",
                               True),
    "image_nginx_MB": Figure(20.0, "MB", "estimate: compressed size of nginx:alpine", True),
    "extract_MBps": Figure(60.0, "MB/s", "estimate: layer decompression and unpacking on 2 "
                           "vCPUs (pulls are bound by it above ~500 Mbit/s)", True),
    "ssh_command_s": Figure(0.3, "s", "estimate: one SSH command over an established "
                            "connection plus the operator's round trip", True),
    "ssh_connect_s": Figure(1.0, "s", "estimate: TCP + SSH handshake + auth from the operator",
                            True),
    "start_postgres_s": Figure(6.0, "s", "estimate: first start, initdb of an empty cluster",
                               True),
    "start_synapse_s": Figure(20.0, "s", "estimate: first start, schema creation in PostgreSQL",
                              True),
    "start_web_s": Figure(3.0, "s", "estimate: nginx and Element (static files)", True),
    "http_check_s": Figure(0.3, "s", "estimate: one HTTP round trip from the operator", True),
    "bootstrap_s": Figure(5.0, "s", "estimate: admin user, token, room over the tunnel", True),
    "e2ee_s": Figure(25.0, "s", "estimate: two users, keys, encrypted messages, uploads", True),
    "backup_s": Figure(15.0, "s", "estimate: pg_dump of an empty database, media, S3 upload",
                       True),
    "upload_s": Figure(3.0, "s", "estimate: the rendered stack (~100 kB, dozens of files)", True),
    "local_step_s": Figure(0.5, "s", "estimate: render, doctor, a local decision", True),
    "ssm_online_s": Figure(60.0, "s", "estimate: the SSM agent registering after boot", True),
    "ssm_command_s": Figure(30.0, "s", "estimate: an SSM Run Command (CloudWatch agent install)",
                            True),
    "logs_flowing_s": Figure(30.0, "s", "estimate: awslogs delivery plus CloudWatch Logs "
                             "ingestion until a filter finds the event", True),
}

# The four pinned images in the order the stack pulls them (stack/values.py IMAGES keys).
IMAGE_ORDER = ["postgres", "synapse", "element", "nginx"]


def fig(name: str) -> float:
    return FIGURES[name].value


def scale_from_env(default: float = 0.05) -> float:
    raw = os.environ.get("ELEMATRIX_LATENCY_SCALE")
    return float(raw) if raw else default


class Clock:
    """The modelled clock: modelled seconds since it started; sleeping is scaled."""

    def __init__(self, scale: float) -> None:
        if not 0 < scale <= 1:
            raise ValueError("ELEMATRIX_LATENCY_SCALE must be in (0, 1]")
        self.scale = scale
        self.t0 = time.monotonic()

    def now(self) -> float:
        return (time.monotonic() - self.t0) / self.scale

    def sleep(self, modelled: float, cancel: threading.Event | None = None) -> None:
        if modelled <= 0:
            return
        if cancel is not None:
            cancel.wait(modelled * self.scale)
        else:
            time.sleep(modelled * self.scale)

    def sleep_until(self, at: float, cancel: threading.Event | None = None) -> None:
        self.sleep(at - self.now(), cancel)


def pull_seconds(image: str) -> float:
    """Modelled seconds to pull one image: download and extraction, the slower bounds."""
    size = fig(f"image_{image}_MB")
    return size / min(fig("pull_bandwidth_MBps"), fig("extract_MBps"))


# -- the modelled world: what a real deployment's timeline looks like ----------------------

class World:
    """Timeline facts of one modelled deployment (modelled seconds on ``clock``)."""

    def __init__(self, clock: Clock, *, prepull: bool) -> None:
        self.clock = clock
        self.prepull = prepull  # user-data pulls the pinned images in the background
        self.lock = threading.Lock()
        self.profile_at: float | None = None
        self.launched_at: float | None = None
        self.pulled: dict[str, float] = {}  # image -> modelled time it is present
        self.started: set[str] = set()  # compose services started

    @property
    def running_at(self) -> float:
        assert self.launched_at is not None, "modelled instance not launched"
        return self.launched_at + fig("pending_to_running_s")

    @property
    def ssh_at(self) -> float:
        return self.running_at + fig("running_to_ssh_s")

    @property
    def docker_at(self) -> float:
        """Docker answers: cloud-init's base modules, swap file, then the install."""
        return self.ssh_at + fig("cloud_init_base_s") + fig("swap_file_s") \
            + fig("docker_install_s")

    def _prepulled_at(self, image: str) -> float:
        t = self.docker_at
        for name in IMAGE_ORDER:
            t += pull_seconds(name)
            if name == image:
                return t
        raise KeyError(image)

    def image_ready(self, image: str) -> float:
        """When the image is present: pre-pulled by user-data, or pulled now (compose)."""
        with self.lock:
            if image in self.pulled:
                return self.pulled[image]
            now = self.clock.now()
            at = self._prepulled_at(image) if self.prepull else now + pull_seconds(image)
            self.pulled[image] = at
            return at


# -- modelled actions ----------------------------------------------------------------------

class AnyInputs(Inputs):
    model_config = ConfigDict(extra="allow")


SERVICE_IMAGES = {"postgres": ["postgres"], "synapse": ["synapse"],
                  "element": ["element"], "nginx": ["nginx"]}


def step_cost(world: World, step_id: str, action: str, inputs: dict[str, Any]) -> float:
    """The modelled time a step ends at minus now (what it waits for on real AWS)."""
    clock = world.clock
    now = clock.now()
    if action == "aws.ensure":
        kind = inputs.get("kind")
        if kind == "instance":
            # A brand-new profile is refused until IAM has propagated (the step retries).
            ready = (world.profile_at or 0.0) + fig("iam_propagation_s")
            start = max(now, ready)
            world.launched_at = start + fig("run_instances_s")
            return world.launched_at - now
        calls = {"bucket": 9, "iam_role": 6, "instance_profile": 3, "security_group": 4,
                 "eip": 2, "key_pair": 2, "eip_association": 2, "alarms": 5,
                 "log_groups": 4, "sns_topic": 3}.get(str(kind), 3)
        end = now + calls * fig("api_call_s")
        if kind == "instance_profile":
            world.profile_at = end
        if kind == "eip_association":
            end = max(end, world.running_at) + fig("eip_association_s")
        return end - now
    if action == "aws.wait":
        if inputs.get("waiter") == "instance_running":
            return max(0.0, world.running_at - now) + fig("api_call_s")
        if inputs.get("waiter") == "instance_status_ok":
            return max(0.0, world.running_at + fig("status_ok_s") - now) + fig("api_call_s")
        if inputs.get("host_keys_of"):
            return max(0.0, world.running_at + fig("console_output_s") - now) \
                + fig("api_call_s")
        if inputs.get("service") == "ssm":
            return max(0.0, world.running_at + fig("ssm_online_s") - now) + fig("api_call_s")
        return fig("api_call_s")
    if action == "aws.preflight":
        return 8 * fig("api_call_s")
    if action in ("aws.call",):
        return fig("api_call_s")
    if action == "aws.assert":
        return len(inputs.get("checks") or [1]) * fig("api_call_s")
    if action == "aws.ssm_run":
        return fig("ssm_command_s")
    if action == "aws.logs_flowing":
        return fig("logs_flowing_s")
    if action == "ssh.run":
        command = str(inputs.get("command", ""))
        if "cloud-init status --wait" in command:
            # cloud-init is done once user-data's bootstrap has finished (the Docker
            # install; a background pre-pull does not hold it).
            return max(0.0, world.docker_at - now) + fig("ssh_connect_s")
        if "backup.sh" in command:
            return fig("backup_s")
        if "wait_ssh" in step_id or "ssh_ready" in step_id:
            return max(0.0, world.ssh_at - now) + fig("ssh_connect_s")
        return fig("ssh_command_s")
    if action == "ssh.upload":
        return fig("upload_s")
    if action == "compose.up":
        # No services: the whole stack; the ones already up are left as they are.
        services = [str(x) for x in inputs.get("services") or IMAGE_ORDER]
        with world.lock:
            new = [x for x in services if x not in world.started]
            world.started |= set(new)
        ready = now
        for svc in services:
            for image in SERVICE_IMAGES.get(svc, []):
                ready = max(ready, world.image_ready(image))
        figure = {"postgres": "start_postgres_s", "synapse": "start_synapse_s"}
        starting = max((fig(figure.get(x, "start_web_s")) for x in new), default=0.0)
        return ready - now + starting + fig("ssh_command_s")
    if action in ("compose.exec", "postgres.locale", "systemd.install"):
        return 2 * fig("ssh_command_s")
    if action == "http.check":
        return fig("http_check_s")
    if action == "ssh.forward":
        return fig("ssh_connect_s")
    if action == "matrix.bootstrap":
        return fig("bootstrap_s")
    if action == "matrix.validate":
        return fig("e2ee_s")
    return fig("local_step_s")  # local.noop, stack.*, deploy.server_name


def modelled_registry(world: World, names: list[str]) -> Registry:
    """A registry whose every action ``name`` sleeps its modelled cost on the world's clock
    and returns the outputs later steps read (``wanted[step_id]``: output names)."""
    reg = Registry()
    for name in names:
        reg.add(name, _modelled_action(world, name))
    return reg


# Output names each step must give (steps.<id>.<name> read by later expressions); set by
# the bench from the runbook before the run.
WANTED: dict[str, set[str]] = {}


def _modelled_action(world: World, name: str) -> type[Action]:
    class Modelled(Action[AnyInputs]):
        Inputs = AnyInputs

        def check(self, ctx: Any, inputs: AnyInputs) -> Check:
            return Check(in_sync=False)

        def apply(self, ctx: Any, inputs: AnyInputs) -> Result:
            data = inputs.model_dump()
            cost = step_cost(world, ctx.step_id, name, data)
            world.clock.sleep(cost, ctx.cancel)
            outputs = {k: f"modelled-{k}" for k in WANTED.get(ctx.step_id, ())}
            return Result("ok", outputs=outputs)

    Modelled.__name__ = Modelled.__qualname__ = "Modelled_" + name.replace(".", "_")
    return Modelled


# -- in-process moto: per-call delay and the transitions moto skips -------------------------

@contextlib.contextmanager
def patched_api_latency(clock: Clock) -> Iterator[dict[str, float]]:
    """Every botocore call in this process sleeps ``api_call_s`` (modelled) first, and
    moto's instant transitions are held back: DescribeInstances says ``pending`` until
    ``pending_to_running_s`` after RunInstances, DescribeInstanceStatus ``initializing``
    until ``status_ok_s`` after running, GetConsoleOutput has no output until
    ``console_output_s`` after running. Yields instance id -> launch time (modelled)."""
    from botocore.client import BaseClient

    launched: dict[str, float] = {}
    original = BaseClient._make_api_call

    def call(self: Any, operation: str, params: dict[str, Any]) -> Any:
        clock.sleep(fig("run_instances_s") if operation == "RunInstances"
                    else fig("api_call_s"))
        out = original(self, operation, params)
        now = clock.now()
        if operation == "RunInstances":
            for inst in out.get("Instances", []):
                launched[inst["InstanceId"]] = now
                inst["State"] = {"Code": 0, "Name": "pending"}
        elif operation == "DescribeInstances":
            for res in out.get("Reservations", []):
                for inst in res.get("Instances", []):
                    at = launched.get(inst["InstanceId"])
                    if at is not None and now < at + fig("pending_to_running_s") \
                            and inst.get("State", {}).get("Name") == "running":
                        inst["State"] = {"Code": 0, "Name": "pending"}
        elif operation == "DescribeInstanceStatus":
            kept = []
            for st in out.get("InstanceStatuses", []):
                at = launched.get(st["InstanceId"])
                if at is None:
                    kept.append(st)
                    continue
                running = at + fig("pending_to_running_s")
                if now < running:
                    continue  # AWS lists no status for a pending instance by default
                if now < running + fig("status_ok_s"):
                    for key in ("InstanceStatus", "SystemStatus"):
                        st[key] = {"Status": "initializing",
                                   "Details": [{"Name": "reachability",
                                                "Status": "initializing"}]}
                kept.append(st)
            out["InstanceStatuses"] = kept
        elif operation == "GetConsoleOutput":
            at = launched.get(params.get("InstanceId", ""))
            if at is not None and now < at + fig("pending_to_running_s") \
                    + fig("console_output_s"):
                out.pop("Output", None)
        return out

    BaseClient._make_api_call = call
    try:
        yield launched
    finally:
        BaseClient._make_api_call = original


@contextlib.contextmanager
def patched_server_latency(clock: Clock) -> Iterator[list[str]]:
    """A moto server in this process (``ThreadedMotoServer``, the rehearsal's and the CLI
    tests'): every action it dispatches sleeps ``api_call_s`` (modelled) first, whichever
    client sent it (the ``elematrix`` CLI in a subprocess included). Per-call delay only:
    the state transitions are held back by :func:`patched_api_latency`, in-process.
    Yields the actions served, in order."""
    from moto.core.responses import BaseResponse

    served: list[str] = []
    original = BaseResponse.call_action

    def call_action(self: Any) -> Any:
        served.append(str(getattr(self, "_get_action", lambda: "?")()))
        clock.sleep(fig("api_call_s"))
        return original(self)

    BaseResponse.call_action = call_action  # type: ignore[method-assign]
    try:
        yield served
    finally:
        BaseResponse.call_action = original  # type: ignore[method-assign]
