"""``compose.up`` and ``compose.exec``: Docker Compose on the host, judged by its own facts.

``compose.up``'s ``check`` asks compose itself what ``up`` would do, read-only:
``docker compose --dry-run up -d [services]`` runs compose's own convergence (v2
``pkg/compose/convergence.go``: the configuration hash of each service against the
``com.docker.compose.config-hash`` label of its container, the image, the container's
state) against a dry-run client that changes nothing, and prints per container
``Running`` (in place), ``Recreate``, ``Creating`` or ``Starting``. ``docker compose ps -a
--format json`` adds each container's state and health (``up --wait`` waits for healthy).
``docker compose config --hash`` is NOT that hash: measured with compose 2.40.3, a service
with an ``env_file`` hashes differently there than in the label, so comparing the two would
recreate postgres forever. ``apply`` runs ``docker compose up -d --wait`` only when something
differs. See ``docs/runbook-format.md`` (host-fact actions).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, field_validator

from ..engine.action import Action, ActionFailed, Check, Result, StepContext
from .hostfacts import facts_check, host_run, note_change
from .ssh import SshInputs, _Matcher, _on_this_machine, _tail_lines

# Marks between the parts of the one facts command's output.
_MARKS = ("::elematrix-ps::", "::elematrix-dry-run::")
# " DRY-RUN MODE -  Container <name>  <Word>"; a recreated container's stand-in name is
# prefixed with its old id ("07132875d4fe_<name>").
_DRY_RUN = re.compile(r"\b(Container|Network|Volume)\s+(?:[0-9a-f]{12}_)?(\S+)\s+([A-Z][a-z]+)")


class ComposeInputs(SshInputs):
    """Where the compose project lives on the host; shared by every ``compose.*`` action."""

    # The directory holding docker-compose.yml on the host (compose runs there).
    project_dir: str
    # Run docker as root (the SSH user may lack the docker group).
    sudo: bool = False
    timeout: float = Field(default=600.0, gt=0)

    @field_validator("project_dir")
    @classmethod
    def _dir(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("project_dir must name the directory of docker-compose.yml")
        return v


def _in_dir(inputs: ComposeInputs, command: str) -> str:
    return f"cd {shlex.quote(inputs.project_dir)} && {command}"


@dataclass
class Container:
    """One container of the project, as ``docker compose ps -a --format json`` shows it."""

    service: str
    name: str
    state: str
    health: str


@dataclass
class ProjectFacts:
    """What the host says about the project now."""

    project: str = ""
    services: dict[str, dict[str, Any]] = field(default_factory=dict)  # the config's
    containers: list[Container] = field(default_factory=list)
    # What compose's dry run would do: (kind, name, word) per line.
    planned: list[tuple[str, str, str]] = field(default_factory=list)

    def closure(self, wanted: list[str]) -> list[str]:
        """The services ``up`` would touch: the wanted ones and what they depend on."""
        todo = list(wanted or self.services)
        seen: list[str] = []
        while todo:
            s = todo.pop(0)
            if s in seen:
                continue
            seen.append(s)
            deps = (self.services.get(s) or {}).get("depends_on") or {}
            todo += list(deps)
        return seen

    def _service_of(self, container: str) -> str:
        for c in self.containers:
            if c.name == container:
                return c.service
        m = re.fullmatch(re.escape(self.project) + r"[-_](.+)[-_]\d+", container)
        return m.group(1) if m else container

    def differences(self, wanted: list[str], wait: bool) -> list[str]:
        """What ``docker compose up -d [--wait] wanted...`` would change, in operator words."""
        unknown = [s for s in wanted if s not in self.services]
        if unknown:
            raise ActionFailed(f"no service {', '.join(unknown)} in the compose file",
                               diagnosis=f"It defines: {', '.join(self.services) or 'none'}.",
                               fix="Fix 'services' in the step, or the compose file.")
        words: dict[tuple[str, str], set[str]] = {}
        for kind, name, word in self.planned:
            words.setdefault((kind, name), set()).add(word)
        out: list[str] = []
        for (kind, name), w in words.items():
            if kind != "Container":
                if w & {"Creating", "Create"}:
                    out.append(f"create {kind.lower()} {name}")
                continue
            s = self._service_of(name)
            state = next((c.state for c in self.containers if c.name == name), "")
            if w & {"Recreate", "Recreated"}:
                out.append(f"recreate {s} (its configuration or image changed)")
            elif w & {"Creating", "Created", "Create"}:
                out.append(f"create {s}")
            elif w & {"Starting", "Started", "Start"}:
                out.append(f"start {s} (it is {state or 'stopped'})")
        if wait:
            for c in self.containers:
                if c.service in self.closure(wanted) and c.state == "running" \
                        and c.health in ("starting", "unhealthy"):
                    out.append(f"wait for {c.service} to be healthy (it is {c.health})")
        return out

    def states(self, wanted: list[str]) -> dict[str, str]:
        return {c.service: c.state + (f" ({c.health})" if c.health else "")
                for c in self.containers if c.service in self.closure(wanted)}


def _ps_rows(text: str) -> list[dict[str, Any]]:
    """compose >= 2.21 prints one JSON object a line; older ones a JSON array."""
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        rows: list[dict[str, Any]] = json.loads(text)
        return rows
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


def parse_facts(stdout: str) -> ProjectFacts:
    """Split the facts command's output (see :func:`read_facts`) into :class:`ProjectFacts`."""
    config, _, rest = stdout.partition(_MARKS[0] + "\n")
    ps, _, dry = rest.partition(_MARKS[1] + "\n")
    facts = ProjectFacts()
    try:
        parsed = json.loads(config)
        facts.project = str(parsed.get("name") or "")
        facts.services = dict(parsed.get("services") or {})
        rows = _ps_rows(ps)
    except ValueError as e:
        # Not the parser's message: it quotes the text, which may hold the config's secrets.
        raise ActionFailed("cannot read docker compose's answer (no JSON)",
                           diagnosis="'docker compose config --format json' or "
                                     "'docker compose ps --format json' printed no JSON.",
                           fix="Check 'docker compose version' on the host (v2 needed).") from e
    for row in rows:
        facts.containers.append(Container(
            service=str(row.get("Service", "")), name=str(row.get("Name", "")),
            state=str(row.get("State", "")).lower(), health=str(row.get("Health", "")).lower()))
    facts.planned = [(m.group(1), m.group(2), m.group(3)) for m in _DRY_RUN.finditer(dry)]
    return facts


def _services_args(services: list[str]) -> str:
    return "".join(" " + shlex.quote(s) for s in services)


def read_facts(ctx: StepContext, inputs: ComposeInputs, services: list[str], *,
               interactive: bool = True) -> ProjectFacts:
    """One read-only command on the host: the config, the containers, compose's dry run."""
    command = _in_dir(inputs, " && ".join([
        "docker compose config --format json", f"echo {_MARKS[0]}",
        "docker compose ps -a --format json", f"echo {_MARKS[1]}",
        # Without --wait: a dry run has nothing real to wait for.
        # Its exit code is not the fact: it may stop at a dependency it would wait for
        # (a stopped postgres that synapse needs healthy) after printing what it would do.
        f"{{ docker compose --dry-run up -d{_services_args(services)} 2>&1 || true; }}"]))
    # The config JSON holds the env_file's secrets: it is parsed here, never logged.
    res = host_run(ctx, inputs, command, sudo=inputs.sudo, timeout=min(inputs.timeout, 120.0),
                   what=f"read the compose project in {inputs.project_dir}",
                   interactive=interactive, private_stdout=True)
    return parse_facts(res.stdout)


class UpInputs(ComposeInputs):
    # Services to bring up (with what they depend on); empty: all of them.
    services: list[str] = Field(default_factory=list)
    # Wait until the services run and are healthy (compose up --wait).
    wait: bool = True


class Up(Action[UpInputs]):
    """``docker compose up -d --wait [services]``, only when the host's facts differ."""

    name = "compose.up"
    Inputs = UpInputs
    check_first = True
    output_names = frozenset({"services", "changes"})

    def local_effects(self, with_: dict[str, Any]) -> list[str]:
        return _on_this_machine(with_, "starts containers with docker compose")

    def describe(self, inputs: UpInputs) -> str:
        what = " ".join(inputs.services) or "every service"
        return f"docker compose up {what} in {inputs.project_dir} on {inputs.host}"

    def check(self, ctx: StepContext, inputs: UpInputs) -> Check:
        return facts_check(self.describe(inputs), lambda: self._check(ctx, inputs))

    def _check(self, ctx: StepContext, inputs: UpInputs) -> Check:
        facts = read_facts(ctx, inputs, inputs.services, interactive=False)
        changes = facts.differences(inputs.services, inputs.wait)
        outputs = {"services": facts.states(inputs.services), "changes": []}
        return Check(in_sync=not changes, changes=changes, outputs=outputs)

    def apply(self, ctx: StepContext, inputs: UpInputs) -> Result:
        facts = read_facts(ctx, inputs, inputs.services)
        changes = facts.differences(inputs.services, inputs.wait)
        if not changes:
            states = facts.states(inputs.services)
            return Result("ok", outputs={"services": states, "changes": []},
                          message="in place: " + ", ".join(f"{k} {v}" for k, v in states.items()))
        note_change(ctx, self.name, changes)
        up = "docker compose up -d" + (" --wait" if inputs.wait else "")
        up += _services_args(inputs.services)
        ctx.log(f"$ {up}", "cmd")
        res = host_run(ctx, inputs, _in_dir(inputs, up), sudo=inputs.sudo,
                       timeout=inputs.timeout, what="bring the services up", stream=True,
                       check_exit=False)
        if res.exit_code != 0:
            logs = " ".join(inputs.services) or ""
            raise ActionFailed(
                f"docker compose up exited with {res.exit_code}",
                diagnosis=f"Last output lines:\n{_tail_lines(res.stderr + res.stdout)}",
                fix=f"Read the service's log on the host: cd {inputs.project_dir} && "
                    f"docker compose logs --tail 50 {logs}".rstrip())
        after = read_facts(ctx, inputs, inputs.services)
        left = after.differences(inputs.services, inputs.wait)
        if left:
            raise ActionFailed("docker compose up returned, but the services are not in place: "
                               + "; ".join(left),
                               fix=f"cd {inputs.project_dir} && docker compose ps on the host")
        states = after.states(inputs.services)
        return Result("changed", outputs={"services": states, "changes": changes},
                      message="; ".join(changes))


# --------------------------------------------------------------------------------------
# compose.exec
# --------------------------------------------------------------------------------------
Argv = str | list[str]


def _argv(command: Argv) -> str:
    """A list runs as given; a string runs under ``sh -c`` inside the container."""
    if isinstance(command, str):
        return f"sh -c {shlex.quote(command)}"
    return shlex.join(command)


class ExecInputs(ComposeInputs):
    service: str
    command: Argv
    # The user inside the container (compose exec -u); None: the image's. (``user`` is the
    # SSH login user.)
    as_user: str | None = None
    # A query or a gate: changes nothing (check runs it, apply reports ok, not changed).
    read_only: bool = False
    # Substring of stdout, or 're:<regex>' (as ssh.run's expect_output).
    expect_output: str | None = None
    # A probe in the service: exit 0 means the command's effect is already there.
    unless: Argv | None = None
    # A path in the service: when it exists the command's effect is already there.
    creates: str | None = None
    timeout: float = Field(default=300.0, gt=0)


def exec_command(inputs: ComposeInputs, service: str, command: Argv,
                 user: str | None = None) -> str:
    """``docker compose exec -T`` of one command in a running service, in the project dir."""
    who = f"-u {shlex.quote(user)} " if user else ""
    return _in_dir(inputs, f"docker compose exec -T {who}{shlex.quote(service)} "
                           f"{_argv(command)}")


class Exec(Action[ExecInputs]):
    """A command in a running service; ``check`` reads a fact (the command itself when it is
    read-only, else ``unless``/``creates``) to tell whether it would change anything."""

    name = "compose.exec"
    Inputs = ExecInputs
    check_first = True
    output_names = frozenset({"exit_code", "stdout"})

    def local_effects(self, with_: dict[str, Any]) -> list[str]:
        return _on_this_machine(with_, f"runs a command in the {with_.get('service')} container")

    def describe(self, inputs: ExecInputs) -> str:
        cmd = inputs.command if isinstance(inputs.command, str) else shlex.join(inputs.command)
        return f"in {inputs.service} on {inputs.host}: {cmd}"

    def _run(self, ctx: StepContext, inputs: ExecInputs, command: Argv, *,
             interactive: bool = True, stream: bool = False) -> tuple[int, str, str]:
        res = host_run(ctx, inputs, exec_command(inputs, inputs.service, command, inputs.as_user),
                       sudo=inputs.sudo, timeout=inputs.timeout,
                       what=f"run a command in {inputs.service}", stream=stream,
                       interactive=interactive, check_exit=False)
        return res.exit_code, res.stdout, res.stderr

    def _passes(self, inputs: ExecInputs, code: int, out: str) -> bool:
        m = _Matcher(inputs.expect_output)
        m.text(out)
        return code == 0 and m.found

    def _already(self, ctx: StepContext, inputs: ExecInputs,
                 interactive: bool) -> tuple[bool | None, str]:
        """Whether the effect is already there, and the fact that says so.

        The probe prints its own exit code inside the container: ``docker compose exec``
        also exits 1 when it cannot run anything (the service is not running), which must
        never read as "not done yet"."""
        if inputs.creates:
            probe: list[str] = ["test", "-e", inputs.creates]
        elif inputs.unless is not None:
            probe = (["sh", "-c", inputs.unless] if isinstance(inputs.unless, str)
                     else list(inputs.unless))
        else:
            return None, ""
        wrapped = ["sh", "-c", '"$@"; echo "::probe::$?"', "sh", *probe]
        code, out, err = self._run(ctx, inputs, wrapped, interactive=interactive)
        found = [line for line in out.splitlines() if line.startswith("::probe::")]
        if not found:
            raise ActionFailed(f"cannot run the probe in {inputs.service} (exit {code})",
                               diagnosis=_tail_lines(err) or _tail_lines(out) or "(no output)",
                               fix=f"Is {inputs.service} running? cd {inputs.project_dir} && "
                                   "docker compose ps")
        done = found[-1] == "::probe::0"
        if inputs.creates:
            return done, f"{inputs.creates} {'exists' if done else 'is missing'}"
        return done, f"the probe exited {found[-1][len('::probe::'):]}"

    def check(self, ctx: StepContext, inputs: ExecInputs) -> Check:
        return facts_check(self.describe(inputs), lambda: self._check(ctx, inputs))

    def _check(self, ctx: StepContext, inputs: ExecInputs) -> Check:
        if inputs.read_only:
            code, out, err = self._run(ctx, inputs, inputs.command, interactive=False)
            if self._passes(inputs, code, out):
                return Check(in_sync=True, outputs={"exit_code": code, "stdout": out})
            last = _tail_lines(err or out, 1) or "(no output)"
            return Check(in_sync=False,
                         changes=[f"{self.describe(inputs)}: not yet (exit {code}: {last})"])
        done, fact = self._already(ctx, inputs, interactive=False)
        if done:
            return Check(in_sync=True, outputs={"exit_code": 0, "stdout": ""})
        return Check(in_sync=done, changes=[f"{self.describe(inputs)}"
                                            + (f" ({fact})" if fact else "")])

    def apply(self, ctx: StepContext, inputs: ExecInputs) -> Result:
        if not inputs.read_only:
            done, fact = self._already(ctx, inputs, interactive=True)
            if done:
                return Result("ok", outputs={"exit_code": 0, "stdout": ""},
                              message=f"in place: {fact}")
            note_change(ctx, self.name, [self.describe(inputs)])
        ctx.log(f"$ {self.describe(inputs)}", "cmd")
        code, out, err = self._run(ctx, inputs, inputs.command, stream=True)
        outputs = {"exit_code": code, "stdout": out}
        if not self._passes(inputs, code, out):
            why = (f"exited with {code}" if code != 0 else
                   f"printed no {inputs.expect_output!r}")
            raise ActionFailed(f"the command in {inputs.service} {why}",
                               diagnosis=f"Last output lines:\n"
                                         f"{_tail_lines(err) or _tail_lines(out) or '(none)'}")
        return Result("ok" if inputs.read_only else "changed", outputs=outputs, data=outputs,
                      message=f"exit {code}")
