"""``elematrix practice``: the real runbook against an embedded AWS emulator (moto).

The emulator is a moto server on 127.0.0.1 (never 0.0.0.0), started and stopped with the
app. Its state is kept in the practice deployment: every request is recorded to
``<deployment>/emulator/recording.jsonl``, and the next start replays the recording into a
fresh server seeded the same way, so the resources come back with the same ids and a
practice run can be resumed like a real one. moto has no Data Lifecycle Manager: a
stand-in (``practice_dlm.py``) serves it beside the server and keeps its policies in
``<deployment>/emulator/dlm.json``.

The deploy and harden phases need an instance. In practice the "instance" is this machine,
through the ``local`` host transport: the stack runs on this machine's Docker engine, as
compose project ``elematrix-<deployment>``, from files under the deployment's state
directory. What practice does NOT do on this machine (the runbook skips these steps when
``host_transport`` is ``local``, and the banner says so): wait for cloud-init, install the
boot unit and the backup timer into systemd, or wait for an SSM agent and install the
CloudWatch agent (on AWS those go to the instance; here the SSM calls would go to the
emulator and nothing would run). Where no engine answers, or the host steps could not run
as root, practice stops before deploy and says exactly why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine.model import Runbook

PRACTICE_RUNBOOK = "poc-ec2"  # the bundled runbook practice runs
PRACTICE_REGION = "us-east-1"  # moto resolves the AL2023 AMI for it
SEED = 20261127
STAGING_HINT = ("or against a staging AWS account with "
                "'elematrix run poc-ec2 --deployment staging --set expected_account=<staging id> "
                "...'.")
NO_DOCKER = (
    "No Docker engine answers on this machine, so practice stops before the deploy phase: "
    "in practice the 'instance' is this machine itself. The infra and configure phases run "
    "for real against the emulator. To practise deploy: run 'elematrix practice' where "
    "'docker info' works, " + STAGING_HINT)
NOT_ROOT = (
    "Practice stops before the deploy phase: its host steps run on this machine as root "
    "(they give Synapse's 0600 configuration to the container's uid 991, as on the "
    "instance, where ec2-user has passwordless sudo), and this session is not root. The "
    "infra and configure phases run for real against the emulator. To practise deploy: "
    "'sudo elematrix practice', " + STAGING_HINT)
NO_AWS_CLI = (
    "Practice stops before the deploy phase: the stack's backup.sh copies the first backup "
    "into the (emulated) bucket with the aws CLI, and there is no 'aws' on PATH. Install "
    "AWS CLI v2 (scripts/setup.sh --test puts one in .tools/awscli), " + STAGING_HINT)
# What practice leaves out on this machine (the poc-ec2 steps with `when:` on host_transport).
# Short enough for the banner (at most 4 rows, with the practice line): docs say the rest.
LOCAL_NOTICE = (
    "Practice deploys onto THIS machine: compose project '{project}' on your Docker (nginx "
    ":{http_port}, 127.0.0.1:{admin_port}). Skipped here: cloud-init, systemd units, "
    "SSM/CloudWatch agents. Remove: docker compose -p {project} down -v")
# scripts/setup.sh --test installs the aws CLI here (a source checkout).
REPO_AWS_CLI = Path(__file__).resolve().parents[1] / ".tools" / "awscli" / "bin" / "aws"


class PracticeUnavailable(RuntimeError):
    pass


# What AWS knows of a request from the instance's aws CLI, which speaks HTTPS (the emulator
# is plain HTTP on loopback). Only these condition keys are decided here.
_REQUEST_CONTEXT = {"aws:securetransport": "true"}


def _condition_holds(condition: dict[str, dict[str, Any]]) -> bool | None:
    """True/False for the Bool/StringEquals conditions on the keys above; None: undecided."""
    for operator, pairs in condition.items():
        for key, wanted in pairs.items():
            actual = _REQUEST_CONTEXT.get(key.lower())
            if operator not in ("Bool", "StringEquals") or actual is None:
                return None  # cannot tell: leave the statement to moto
            values = [wanted] if isinstance(wanted, str) else wanted
            if actual.lower() not in [str(v).lower() for v in values]:
                return False
    return True


def default_vpc_like_aws() -> None:
    """Make moto create its default VPCs as AWS does: with an internet gateway and a
    0.0.0.0/0 route to it in the main route table.

    AWS gives every default VPC an attached internet gateway and that route (Amazon VPC
    User Guide, "Default VPCs": default VPC components). moto 5.2.5 creates the VPC and its
    default subnets only (moto/ec2/models/vpcs.py ``VPCBackend.create_default_vpc``), so an
    instance there could reach nothing, and the infra phase rightly refuses a subnet with
    no internet route. This adds exactly what AWS adds, nothing else: a default VPC whose
    gateway the operator deleted is still refused. Idempotent; affects only default VPCs
    created after it is installed (moto makes them when a region's EC2 backend starts)."""
    from moto.ec2.models.vpcs import VPCBackend

    if getattr(VPCBackend.create_default_vpc, "elematrix_like_aws", False):
        return
    original = VPCBackend.create_default_vpc

    def create_default_vpc(self: Any) -> Any:
        vpc = original(self)
        igw = self.create_internet_gateway()
        self.attach_internet_gateway(igw.id, vpc.id)
        main = next(rt for rt in self.route_tables.values()
                    if rt.vpc_id == vpc.id and rt.main_association_id is not None)
        self.create_route(main.id, "0.0.0.0/0", gateway_id=igw.id)
        return vpc

    create_default_vpc.elematrix_like_aws = True  # type: ignore[attr-defined]
    VPCBackend.create_default_vpc = create_default_vpc  # type: ignore[method-assign]


def bucket_policy_permission(self: Any, action: str, resource: str) -> Any:
    """moto's ``FakeBucket.get_permission``, with statement conditions evaluated as AWS does.

    moto 5.2 answers DENIED for any statement whose condition does not hold, whatever its
    Effect (moto/s3/models.py FakeBucket.get_permission -> moto/iam/access_control.py
    IAMPolicyStatement), so the backup bucket's "deny unless aws:SecureTransport" statement
    refused every request, also the HTTPS ones AWS allows. Here a statement whose condition
    does not hold does not apply (IAM policy evaluation logic); one whose condition holds
    applies without it; an undecided one is left to moto. Never kinder than AWS: only
    statements that AWS would also skip are dropped."""
    import json

    from moto.iam.access_control import IAMPolicy, PermissionResult

    if self.policy is None:
        return PermissionResult.NEUTRAL
    policy = json.loads(self.policy.decode())
    statements = policy["Statement"] if isinstance(policy["Statement"], list) \
        else [policy["Statement"]]
    kept = []
    for st in statements:
        verdict = _condition_holds(st["Condition"]) if "Condition" in st else True
        if verdict is False:
            continue  # its condition does not hold: the statement does not apply
        kept.append({k: v for k, v in st.items() if k != "Condition"} if verdict else st)
    if not kept:
        return PermissionResult.NEUTRAL
    return IAMPolicy(json.dumps({**policy, "Statement": kept})).is_action_permitted(
        action, resource)


class OneRequestAtATime:
    """A WSGI wrapper that lets the emulator handle one AWS request at a time.

    The runner overlaps steps (engine/schedule.py), so requests arrive at once. moto draws
    every id from one generator seeded by ``SEED`` while it handles a request, and its
    recorder writes the request when it arrives (``moto/core/utils.py:
    convert_to_flask_response.__call__``: ``_record_request`` and then the callback, with no
    lock between them). Two requests handled at once can draw their ids in another order
    than the one recorded; the next start replays the recording one request at a time, so
    the ids come out differently and a recorded AssociateAddress names an instance that does
    not exist (session 4: practice's second run found ``eip_association`` changed).
    Recording and handling under one lock makes the recorded order the handled order. AWS
    answers concurrent calls, and so does this: they are only queued for a few milliseconds.

    ``/moto-api/`` is not serialized: the replay is itself a moto-api request that sends the
    recorded requests back to this server and waits for them.
    """

    def __init__(self, app: Any) -> None:
        import threading

        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if str(environ.get("PATH_INFO", "")).startswith("/moto-api/"):
            return self.app(environ, start_response)
        with self.lock:
            # The whole body inside the lock: moto's responses are not streamed lazily
            # from state, but an iterator finished outside it could be.
            return list(self.app(environ, start_response))


def _serial_moto_server(server_class: Any) -> Any:
    """moto's ThreadedMotoServer with its application wrapped in ``OneRequestAtATime``."""
    from moto.moto_server import werkzeug_app as tms
    from werkzeug.serving import make_server

    class SerialMotoServer(server_class):  # type: ignore[misc]
        # Same as ThreadedMotoServer._server_entry (moto 5.x, moto_server/
        # threaded_moto_server.py) but for the wrapper.
        def _server_entry(self) -> None:
            app = OneRequestAtATime(tms.DomainDispatcherApplication(tms.create_backend_app))
            self._server = make_server(self._ip_address, self._port, app, True,
                                       request_handler=tms.MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    return SerialMotoServer


@dataclass
class Emulator:
    """A moto server on 127.0.0.1 whose state is recorded into ``directory``."""

    directory: Path
    url: str = ""
    _server: Any = None
    _dlm: Any = None

    @property
    def recording(self) -> Path:
        return self.directory / "recording.jsonl"

    @property
    def dlm_state(self) -> Path:
        """The DLM stand-in's policies (moto has no DLM to record): practice_dlm.py."""
        return self.directory / "dlm.json"

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
        # The recorder reads these when moto is imported: set before anything imports moto.
        os.environ["MOTO_RECORDER_FILEPATH"] = str(self.recording)
        os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
        # The deploy phase's backup.sh writes to the bucket through its TLS-only policy.
        from moto.s3.models import FakeBucket

        FakeBucket.get_permission = bucket_policy_permission  # type: ignore[method-assign]
        default_vpc_like_aws()
        self._server = _serial_moto_server(ThreadedMotoServer)(
            ip_address="127.0.0.1", port=0, verbose=False)
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
        from .practice_dlm import DlmStandIn

        # moto has no DLM: the stand-in beside it keeps its policies in the emulator
        # directory, so a resumed practice run finds its snapshot policy again.
        self._dlm = DlmStandIn(self.dlm_state).start()
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
        if self._dlm is not None:
            self._dlm.stop()
            self._dlm = None

    def environ(self) -> dict[str, str]:
        """What boto3 needs to talk to the emulator and nothing else."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            **(self._dlm.environ() if self._dlm is not None else {}),
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


def aws_cli() -> str | None:
    """The aws CLI backup.sh will find: on PATH, or the checkout's .tools copy."""
    found = shutil.which("aws")
    if found:
        return found
    return str(REPO_AWS_CLI) if REPO_AWS_CLI.exists() else None


def host_problem() -> str | None:
    """Why the deploy phase cannot run on this machine (None: it can)."""
    if not docker_answers():
        return NO_DOCKER
    if os.geteuid() != 0:
        return NOT_ROOT
    if aws_cli() is None:
        return NO_AWS_CLI
    return None


def compose_project(deployment: str) -> str:
    """The practice stack's compose project (COMPOSE_PROJECT_NAME, unless already set)."""
    return os.environ.get("COMPOSE_PROJECT_NAME") or f"elematrix-{deployment}"


def prepare_host(deployment: str, deployment_dir: Path) -> dict[str, str]:
    """Environment for the local host steps: the compose project name, and the aws CLI's
    directory first on PATH (backup.sh calls `aws`)."""
    env = {"COMPOSE_PROJECT_NAME": compose_project(deployment)}
    cli = aws_cli()
    if cli is not None:
        env["PATH"] = f"{Path(cli).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


def _port_free(port: int, host: str = "0.0.0.0") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _remembered_port(deployment_dir: Path, memo_name: str, candidates: tuple[int, ...],
                     host: str) -> int:
    """The first free of ``candidates`` on ``host`` (the first when none is), remembered in
    the deployment: its running practice stack holds the port on the next start."""
    memo = deployment_dir / memo_name
    if memo.exists():
        with contextlib.suppress(ValueError):
            return int(memo.read_text().strip())
    port = next((p for p in candidates if _port_free(p, host)), candidates[0])
    deployment_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    memo.write_text(f"{port}\n")
    return port


def practice_http_port(deployment_dir: Path) -> int:
    """nginx's published port: 80 when free, else the first free of 8080-8099; remembered
    in the deployment (the running practice stack holds it on the next start)."""
    return _remembered_port(deployment_dir, "practice-http-port", (80, *range(8080, 8100)),
                            "0.0.0.0")


def practice_admin_port(deployment_dir: Path) -> int:
    """Synapse's admin API's host port (loopback): 8008 when free, else the first free of
    8010-8029; remembered like the http port. Two practice deployments' stacks then run at
    once on one machine (each has its compose project, compose_project())."""
    return _remembered_port(deployment_dir, "practice-admin-port", (8008, *range(8010, 8030)),
                            "127.0.0.1")


def practice_params(deployment_dir: Path, *, local_host: bool = False) -> dict[str, Any]:
    """Parameter values that make poc-ec2 fit the emulator and this machine. ``local_host``:
    the deploy phase will run here, so the stack's directory and port are this machine's."""
    key = deployment_dir / "keys" / "operator_ed25519"
    _ensure_key(key)
    params: dict[str, Any] = {
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
    if local_host:
        params["remote_dir"] = str(deployment_dir / "host" / "stack")
        params["http_port"] = practice_http_port(deployment_dir)
        params["admin_port"] = practice_admin_port(deployment_dir)
    return params


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


@dataclass
class PracticeSession:
    """What a practice session runs with: the parameter values, the phases it may run
    (None: every phase) and the notices the banner shows."""

    params: dict[str, Any]
    phases: list[str] | None
    notices: list[str]


@contextlib.contextmanager
def practice_session(deployment: str, deployment_dir: Path) -> Iterator[PracticeSession]:
    """Start the emulator for ``deployment`` and point this process's environment at it
    (AWS variables, secret store, compose project); stop the emulator on exit.

    The one set-up `elematrix practice` and scripts/readme_picture.py share. Raises
    :class:`PracticeUnavailable` when the emulator cannot start."""
    notices = ["Practice: AWS is an emulator on 127.0.0.1 (moto); nothing real is touched."]
    if not os.environ.get("ELEMATRIX_SECRET_STORE"):
        from .engine.secrets import _usable_keyring

        if _usable_keyring() is None:
            # Practice secrets are throwaway; a headless machine should still practise.
            os.environ["ELEMATRIX_SECRET_STORE"] = "file"
            notices.append("No OS keyring here: practice secrets go to the opt-in 0600 file "
                           "(ELEMATRIX_SECRET_STORE=file).")
    # Before the emulator starts: importing moto builds a boto3 session, which reads the
    # operator's AWS_PROFILE (a profile this machine lacks stopped practice right there).
    cleared = isolate_aws_environment(os.environ, deployment_dir / "emulator")
    if cleared:
        notices.append(f"Cleared {', '.join(cleared)} for practice: every AWS call goes to "
                       f"the emulator, never elsewhere.")
    emulator = Emulator(deployment_dir / "emulator").start()
    try:
        os.environ.update(emulator.environ())
        phases = None
        problem = host_problem()
        if problem is not None:
            phases = ["infra", "configure"]
            params = practice_params(deployment_dir)
            notices.append(problem)
        else:
            # The deploy phase runs on this machine (the local host transport).
            params = practice_params(deployment_dir, local_host=True)
            os.environ.update(prepare_host(deployment, deployment_dir))
            notices.append(LOCAL_NOTICE.format(project=compose_project(deployment),
                                               http_port=params["http_port"],
                                               admin_port=params["admin_port"]))
        yield PracticeSession(params=params, phases=phases, notices=notices)
    finally:
        emulator.stop()


def run_practice_headless(rb: Runbook, path: Path, state_dir: Path, deployment: str,
                          session: PracticeSession) -> int:
    """``elematrix practice --headless``: the practice phases on the terminal, resuming the
    deployment's unfinished run if there is one (the runner is wired in engine/wiring.py,
    as for ``elematrix run``)."""
    from .engine.journal import Journal
    from .engine.runner import RunOptions
    from .headless import run_headless

    phases, notices = session.phases, session.notices
    for n in notices[:-1] if phases else notices:
        print(n)
    resume_of = None
    if Journal.exists(state_dir, deployment):
        j = Journal.open(state_dir, deployment)
        runs = [r for r in j.runs() if r.status != "passed"]
        j.close()
        resume_of = runs[0].id if runs else None
    code = run_headless(rb, deployment=deployment, state_dir=state_dir, params=session.params,
                        runbook_path=path, resume_of=resume_of,
                        options=RunOptions(phases=phases, assume_yes=True))
    if code == 0 and phases:
        print(f"\n{notices[-1]}")
    return code
