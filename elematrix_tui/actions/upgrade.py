"""Day-two actions of the upgrade runbook: the pins old -> new, the schema guard, the
re-rendering with new images, and the rollback that proves itself with the gates.

- ``upgrade.pins`` compares the images of the stack this deployment last rendered (its
  ``stack/docker-compose.yml``, what the host was given) with the one table of pins,
  ``stack/values.py: IMAGES`` (optionally overridden per image for this upgrade): the plan
  shows each image ``old -> new``.
- ``upgrade.schema`` reads the database's schema version and the new Synapse image's
  ``SCHEMA_VERSION`` (a host command prints both) and refuses a downgrade across a schema
  change unless the upgrade restores a backup taken before it.
- ``upgrade.render`` renders the stack again with the values the deployment's last
  ``stack.render`` used (recorded in its journal) and the new images: the one renderer.
- ``upgrade.rollback`` (a cleanup step) puts the old images back (the same rendering and
  upload), restores the pre-upgrade backup when the schema moved, starts the stack and
  runs the runbook's gates again, passed to it as data: the rollback is proven or it fails.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ..engine.action import Action, ActionFailed, Check, Inputs, Result, StepContext
from ..engine.events import StepFinished, StepStarted
from ..engine.journal import Journal
from ..engine.poll import PollCancelled, PollTimeout, poll_step
from ..stack.values import IMAGES, SECRET_NAMES
from .restore import JOURNAL_FILE

RENDER_ACTION = "stack.render"
# poc-ec2's step for a stack of the operator's own (stack_source): never re-rendered here.
ADAPT_ACTION = "stack.adapt"
# The file of a rendering that names the images (assets/stack/docker-compose.yml.j2).
COMPOSE_FILE = "docker-compose.yml"


def parse_overrides(text: str) -> dict[str, str]:
    """``key=ref,key=ref`` (keys of ``IMAGES``) as a mapping; a bad entry is an error."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, ref = item.partition("=")
        if not sep or not ref or key not in IMAGES:
            raise ActionFailed(f"images: {item!r} is not <image>=<reference>",
                               diagnosis=f"the images are {', '.join(IMAGES)}",
                               fix="e.g. --set images=synapse=matrixdotorg/synapse:v1.164.0",
                               retry=False)
        out[key] = ref
    return out


def rendered_images(stack_dir: Path) -> dict[str, str]:
    """The image of each pinned service in a rendering's compose file (empty: none)."""
    path = stack_dir / COMPOSE_FILE
    if not path.exists():
        return {}
    doc = yaml.safe_load(path.read_text()) or {}
    services = doc.get("services") or {}
    return {k: str(services[k]["image"]) for k in IMAGES
            if isinstance(services.get(k), dict) and services[k].get("image")}


class PinsInputs(Inputs):
    # Per-image overrides of IMAGES for this upgrade: "synapse=<ref>,element=<ref>".
    images: str = ""
    # The rendering the host was given, inside the deployment directory.
    stack_dir: str = "stack"


class Pins(Action[PinsInputs]):
    """Each image of the deployment's last rendering against the pins: old -> new."""

    name = "upgrade.pins"
    Inputs = PinsInputs
    # It changes nothing, but it is not marked read-only: the plan then asks its check,
    # whose changes are the lines "image: old -> new" the operator must see.
    output_names = frozenset({"old", "new", "changed", "refs", "count", "summary",
                              "synapse_changed"})

    def _compare(self, ctx: StepContext, inputs: PinsInputs) -> dict[str, Any]:
        refuse_own_stack(ctx)
        old = rendered_images(Path(ctx.deployment_dir) / inputs.stack_dir)
        if not old:
            raise ActionFailed(
                f"deployment {ctx.deployment!r} has no rendered stack to upgrade",
                diagnosis=f"no {inputs.stack_dir}/{COMPOSE_FILE} in its state directory",
                fix=f"deploy it first: elematrix run poc-ec2 --deployment {ctx.deployment}",
                retry=False)
        new = {**IMAGES, **parse_overrides(inputs.images)}
        changed = [k for k in IMAGES if old.get(k) != new[k]]
        lines = [f"{k}: {old.get(k, '(none)')} -> {new[k]}" for k in changed]
        return {"old": {k: old.get(k, new[k]) for k in IMAGES}, "new": new, "changed": changed,
                "refs": [new[k] for k in changed], "count": len(changed),
                "synapse_changed": "synapse" in changed,
                "summary": "; ".join(lines) if lines else "every image is at its pin"}

    def check(self, ctx: StepContext, inputs: PinsInputs) -> Check:
        try:
            out = self._compare(ctx, inputs)
        except ActionFailed as e:
            return Check(in_sync=None, unknown_because=e.args[0] if e.args else str(e))
        changes = [f"{k}: {out['old'][k]} -> {out['new'][k]}" for k in out["changed"]]
        return Check(in_sync=not changes, changes=changes, outputs=out)

    def apply(self, ctx: StepContext, inputs: PinsInputs) -> Result:
        out = self._compare(ctx, inputs)
        for k in IMAGES:
            mark = "->" if k in out["changed"] else "=="
            ctx.log(f"{k:9} {out['old'][k]} {mark} {out['new'][k]}")
        return Result("ok", outputs=out, data=out, message=out["summary"])

    def describe(self, inputs: PinsInputs) -> str:
        return "compare the deployed images with the pins (old -> new)"


class SchemaInputs(Inputs):
    # The host command's output: "db <n>" (schema_version of the database) and
    # "code <n>" (the new Synapse image's synapse.storage.schema.SCHEMA_VERSION).
    facts: str
    # A backup prefix restored before the new Synapse starts: allows a schema downgrade.
    from_backup: str = ""


def parse_schema_facts(text: str) -> tuple[int, int]:
    """``(db, code)`` from the lines ``db <n>`` and ``code <n>``."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] in ("db", "code") and parts[1].isdigit():
            found[parts[0]] = int(parts[1])
    if set(found) != {"db", "code"}:
        raise ActionFailed("could not read the schema versions",
                           diagnosis="expected 'db <n>' and 'code <n>', got: "
                                     f"{text.strip()[:200]!r}",
                           fix="check that the database and the new Synapse image answer "
                               "(the step's command shows both)")
    return found["db"], found["code"]


def schema_verdict(db: int, code: int, from_backup: str) -> tuple[bool, str]:
    """Whether the new Synapse may start on this database, and what happens to its schema.

    Synapse migrates its schema forward at start and refuses a database newer than its own
    ``SCHEMA_VERSION`` (synapse/storage/prepare_database.py): a downgrade across a schema
    change can only go back to a database from before that change (a backup)."""
    if code < db and not from_backup:
        return False, (f"a downgrade across a database schema change: the database is at "
                       f"schema {db}, the new Synapse knows only up to {code}")
    if code < db:
        return True, f"schema {db} -> {code} by restoring backup {from_backup}"
    if code > db:
        return True, f"Synapse migrates the schema {db} -> {code} at start"
    return True, f"schema {db} unchanged"


class Schema(Action[SchemaInputs]):
    """Refuse a downgrade across a schema change; say whether the schema moves."""

    name = "upgrade.schema"
    Inputs = SchemaInputs
    read_only = True
    output_names = frozenset({"db_version", "code_version", "schema_moves", "verdict"})

    def apply(self, ctx: StepContext, inputs: SchemaInputs) -> Result:
        db, code = parse_schema_facts(inputs.facts)
        allowed, verdict = schema_verdict(db, code, inputs.from_backup)
        if not allowed:
            raise ActionFailed(
                f"refusing {verdict}",
                diagnosis="Synapse refuses a database newer than it understands; its data "
                          "cannot be migrated back",
                fix="roll back to a backup from before the schema change: "
                    "--set from_backup=<prefix> (elematrix run restore lists them); "
                    "everything written since that backup is lost",
                retry=False)
        out = {"db_version": db, "code_version": code, "schema_moves": code != db,
               "verdict": verdict}
        ctx.log(verdict)
        return Result("ok", outputs=out, message=verdict)

    def describe(self, inputs: SchemaInputs) -> str:
        return "compare the database's schema with the new Synapse's"


def last_stack_step(ctx: StepContext) -> tuple[str, dict[str, Any]] | None:
    """(action, inputs) of this deployment's last successful ``stack.render`` or
    ``stack.adapt`` step (any run): which of the two made the stack the host runs."""
    path = Path(ctx.deployment_dir) / JOURNAL_FILE
    started: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    found: tuple[str, dict[str, Any]] | None = None
    if path.exists():
        with Journal(path) as journal:
            for e in journal.read_events():
                if isinstance(e, StepStarted) and e.action in (RENDER_ACTION, ADAPT_ACTION):
                    started[(e.run_id, e.step_id)] = (e.action, dict(e.inputs))
                elif isinstance(e, StepFinished) and e.status in ("ok", "changed") \
                        and (e.run_id, e.step_id) in started:
                    found = started[(e.run_id, e.step_id)]
    return found


def refuse_own_stack(ctx: StepContext) -> None:
    """Fail (before the backup, the snapshot or any change) when the host runs the
    operator's own stack, adapted by ``stack.adapt``: this runbook renders the bundled
    stack, which would replace the operator's files and services."""
    last = last_stack_step(ctx)
    if last is not None and last[0] == ADAPT_ACTION:
        raise ActionFailed(
            f"deployment {ctx.deployment!r} runs your own stack (stack_source="
            f"{last[1].get('source', '?')}), which the upgrade runbook does not upgrade",
            diagnosis="upgrade renders the bundled stack again with the pinned images; on "
                      "your stack that would replace your compose file, your services' "
                      "names and your images with elematrix's",
            fix="change the image references in your own compose file, then run "
                f"'elematrix run poc-ec2 --deployment {ctx.deployment} --phase configure "
                "--phase deploy' (the adapt step shows the diff first); a backup before it "
                "('elematrix run restore' brings it back)", retry=False)


def last_render_inputs(ctx: StepContext) -> dict[str, Any]:
    """The inputs of this deployment's last successful ``stack.render`` step (any run)."""
    last = last_stack_step(ctx)
    found = last[1] if last is not None and last[0] == RENDER_ACTION else None
    if found is None:
        raise ActionFailed(f"deployment {ctx.deployment!r} never rendered the bundled stack",
                           diagnosis="upgrade renders the bundled stack again with new "
                                     "images; a stack of your own (stack_source) keeps its "
                                     "images in your files",
                           fix="deploy with the bundled stack first, or change the images "
                               "in your own compose file", retry=False)
    return found


class RerenderInputs(Inputs):
    # The full table of images to render (upgrade.pins' new or old).
    images: dict[str, str]


def _render_inputs(ctx: StepContext, images: dict[str, str]) -> Any:
    from .stack import RenderInputs

    return RenderInputs.model_validate({**last_render_inputs(ctx), "images": images})


class Rerender(Action[RerenderInputs]):
    """``stack.render`` again with the values last used and these images."""

    name = "upgrade.render"
    Inputs = RerenderInputs
    stored_secrets = frozenset(SECRET_NAMES)

    def check(self, ctx: StepContext, inputs: RerenderInputs) -> Check:
        from .stack import Render

        try:
            values = _render_inputs(ctx, inputs.images)
        except ActionFailed as e:
            return Check(in_sync=None, unknown_because=e.args[0] if e.args else str(e))
        return Render().check(ctx, values)

    def apply(self, ctx: StepContext, inputs: RerenderInputs) -> Result:
        from .stack import Render

        return Render().apply(ctx, _render_inputs(ctx, inputs.images))

    def describe(self, inputs: RerenderInputs) -> str:
        return "render the stack again with " + ", ".join(
            f"{k} {v}" for k, v in sorted(inputs.images.items()))


class GateSpec(BaseModel):
    """One of the runbook's gates, run again by the rollback."""

    model_config = ConfigDict(extra="forbid")
    id: str
    action: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    attempts: int = Field(default=1, ge=1, le=20)
    delay: float = Field(default=5, ge=0, le=60)
    # The gate's own ``when`` (rendered): False skips it here as the run skips it.
    when: bool = True


class RollbackInputs(Inputs):
    # The images before the upgrade (upgrade.pins' old).
    images: dict[str, str]
    # The upload step's inputs (the same anchor as the upgrade's upload).
    upload: dict[str, Any]
    # compose.up's inputs for the whole stack.
    compose: dict[str, Any]
    # The database's schema version before the upgrade (upgrade.schema's db_version).
    db_version: int | None = None
    # The pre-upgrade backup (restored only when the schema moved) and restore.sh's path.
    backup: str = ""
    restore_command: str = ""
    # The gates that prove the rollback (the runbook's gates, as data).
    prove: list[GateSpec] = Field(default_factory=list)


def _db_version(ctx: StepContext, compose: Any) -> int | None:
    from .compose import exec_command
    from .hostfacts import host_run

    cmd = exec_command(compose, "postgres", ["psql", "-U", "synapse", "-d", "synapse", "-tAc",
                                             "SELECT version FROM schema_version"])
    res = host_run(ctx, compose, cmd, sudo=compose.sudo, timeout=60,
                   what="read the database's schema version", check_exit=False)
    text = res.stdout.strip()
    return int(text) if res.exit_code == 0 and text.isdigit() else None


def _run_gate(ctx: StepContext, gate: GateSpec) -> str:
    from . import default_registry

    action = default_registry().create(gate.action)
    inputs = action.Inputs.model_validate(gate.with_)
    last = ""

    def attempt(_n: int) -> str | None:
        nonlocal last
        try:
            res = action.apply(ctx, inputs)
        except ActionFailed as e:
            last = e.args[0] if e.args else str(e)
            return None
        if res.status != "failed":
            return res.message or res.status
        last = res.message or "failed"
        return None

    # The gate's own attempts and delay, through the one polling helper (deadline, cancel).
    try:
        return poll_step(ctx, attempt, what=f"gate {gate.id} after the rollback",
                         timeout=gate.delay * max(gate.attempts - 1, 0), interval=gate.delay)
    except PollCancelled as e:
        raise ActionFailed("interrupted while proving the rollback") from e
    except PollTimeout:
        pass
    raise ActionFailed(f"the rollback is not proven: gate {gate.id} failed: {last}",
                       diagnosis="the old images are back but the service does not pass "
                                 "the gate again",
                       fix="read the gate's output above; `elematrix run restore` brings "
                           "the pre-upgrade backup back")


class Rollback(Action[RollbackInputs]):
    """Old images back (the pre-upgrade database too when the schema moved), proven by the gates."""

    name = "upgrade.rollback"
    Inputs = RollbackInputs
    stored_secrets = frozenset(SECRET_NAMES)
    output_names = frozenset({"rollback_s", "db_restored", "proven"})

    def apply(self, ctx: StepContext, inputs: RollbackInputs) -> Result:
        from .compose import Up, UpInputs
        from .hostfacts import host_run
        from .ssh_upload import Upload, UploadInputs

        started = time.monotonic()
        ctx.log("rolling back to " + ", ".join(f"{k} {v}" for k, v in inputs.images.items()))
        rendered = Rerender().apply(ctx, RerenderInputs(images=inputs.images))
        # The owners come from the rendering (its layout: stack/layout.py), as the upgrade's
        # own upload takes them from upgrade_render: one home for who owns which file.
        upload = {**inputs.upload, "owners": rendered.outputs.get("owners")}
        Upload().apply(ctx, UploadInputs.model_validate(upload))
        compose = UpInputs.model_validate(inputs.compose)
        now = _db_version(ctx, compose)
        restored = False
        if inputs.db_version is not None and now != inputs.db_version:
            if not (inputs.backup and inputs.restore_command):
                raise ActionFailed(f"the schema moved ({inputs.db_version} -> {now}) and no "
                                   "pre-upgrade backup is known",
                                   fix="elematrix run restore --set backup=<prefix>")
            ctx.log(f"the schema moved ({inputs.db_version} -> {now}): restoring {inputs.backup}")
            import shlex

            host_run(ctx, compose, f"{inputs.restore_command} {shlex.quote(inputs.backup)}",
                     sudo=True, timeout=3600, what="restore the pre-upgrade backup", stream=True)
            restored = True
        Up().apply(ctx, compose)
        proven: list[str] = []
        for gate in inputs.prove:
            if not gate.when:
                ctx.log(f"gate {gate.id} skipped (its when is false)")
                continue
            msg = _run_gate(ctx, gate)
            ctx.log(f"gate {gate.id} passed after the rollback: {msg}")
            proven.append(gate.id)
        took = round(time.monotonic() - started, 1)
        out = {"rollback_s": took, "db_restored": restored, "proven": proven}
        gates = ", ".join(proven) or "nothing"
        return Result("changed", outputs=out, message=f"rolled back in {took} s, proven by {gates}")

    def describe(self, inputs: RollbackInputs) -> str:
        return "roll back to the images before the upgrade and prove it with the gates"
