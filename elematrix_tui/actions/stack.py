"""Actions over the bundled stack: ``stack.render`` and ``stack.doctor``.

``stack.render`` renders the Matrix/Element stack for the deployment into
``<deployment_dir>/stack`` and logs a unified diff against the previous rendering, so
the operator sees exactly what will be uploaded. ``stack.doctor`` lints a stack
directory (the bundled one or an operator's own) for the known HTTP-only pitfalls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..engine.action import Action, ActionFailed, Check, Inputs, Result, StepContext
from ..engine.containment import DeploymentPath, deployment_path, deployment_problem
from ..engine.params import generate_secret
from ..stack.values import SECRET_LENGTH, SECRET_NAMES, StackValues


class RenderInputs(StackValues, Inputs):
    """The stack values (see ``elematrix_tui/stack/values.py``) plus where to render."""

    # Default: <deployment_dir>/stack. Relative paths are taken from the deployment dir;
    # the rendering always stays inside it (engine/containment.py).
    out_dir: DeploymentPath | None = None


def _values(ctx: StepContext, inputs: RenderInputs) -> StackValues:
    # Only the stack values (a subclass's inputs add their own, e.g. the worker layout).
    data = inputs.model_dump(include=set(StackValues.model_fields))
    if "deployment" not in inputs.model_fields_set:
        data["deployment"] = ctx.deployment
    return StackValues.model_validate(data)


def _layout(ctx: StepContext, inputs: RenderInputs) -> dict[str, Any]:
    """The layout facts the deploy steps read (upload owners, the signing key's path):
    the same outputs stack.adapt gives for an operator's stack."""
    from ..stack.layout import bundled_layout

    values = _values(ctx, inputs)
    # The pinned PostgreSQL image: psql for a database outside the stack runs in it.
    return {**bundled_layout(values).outputs(), "postgres_image": values.images["postgres"]}


def _out_dir(ctx: StepContext, inputs: RenderInputs) -> Path:
    return deployment_path(ctx.deployment_dir, inputs.out_dir or "stack", what="out_dir")


def _lost(ctx: StepContext, out: Path) -> bool:
    """Secrets missing from the store while an earlier rendering holds them."""
    from ..stack.recover import rendering_exists

    return rendering_exists(out)


def _lost_message(ctx: StepContext, missing: list[str]) -> str:
    return (f"refusing to generate new stack secrets ({', '.join(missing)}): the secret store "
            f"lost them, and the earlier rendering still holds them. Recover them with: "
            f"elematrix recover-secrets --deployment {ctx.deployment}")


class Render(Action[RenderInputs]):
    """Render the stack for this deployment and show the diff against the last rendering."""

    name = "stack.render"
    Inputs = RenderInputs
    stored_secrets = frozenset(SECRET_NAMES)
    # The secrets the rendering needs (generated into the keyring when missing).
    secret_names: tuple[str, ...] = SECRET_NAMES

    def rendered_files(self, values: StackValues, secrets: dict[str, str],
                       inputs: RenderInputs) -> dict[str, str] | None:
        """The tree to render; None: the bundled templates (``stack.render``)."""
        return None

    def secret_overrides(self, inputs: RenderInputs) -> dict[str, str]:
        """Secrets given by the step itself (a runbook's secret parameter), which win over
        the keyring's for this rendering; none for ``stack.render``."""
        return {}

    def extra_outputs(self, inputs: RenderInputs) -> dict[str, Any]:
        """Outputs of this kind of rendering beyond the layout's; none for ``stack.render``."""
        return {}

    def describe(self, inputs: RenderInputs) -> str:
        return f"render the Matrix/Element stack for {inputs.server_name} ({inputs.public_address})"

    @classmethod
    def plan_notes(cls, rendered: dict[str, Any]) -> list[str]:
        """The image pins of the stack this step renders (``IMAGES`` with the step's
        ``images`` overrides), one line per service."""
        from ..stack.values import IMAGES

        overrides = rendered.get("images") or {}
        if not isinstance(overrides, dict):
            return []
        images = {**IMAGES, **{k: str(v) for k, v in overrides.items() if k in IMAGES}}
        return [f"image {name}: {ref}" for name, ref in images.items()]

    def check(self, ctx: StepContext, inputs: RenderInputs) -> Check:
        from ..stack.render import RenderError, plan_render

        missing = [n for n in self.secret_names if not ctx.get_secret(n)]
        if missing and _lost(ctx, _out_dir(ctx, inputs)):
            return Check(in_sync=False, changes=[_lost_message(ctx, missing)])
        if missing:
            return Check(in_sync=False, changes=[f"generate secret {n}" for n in missing]
                         + ["render the stack"])
        secrets = {n: ctx.get_secret(n) or "" for n in self.secret_names}
        secrets.update(self.secret_overrides(inputs))
        out = _out_dir(ctx, inputs)
        try:
            values = _values(ctx, inputs)
            files, changed, _diff = plan_render(values, secrets, out,
                                                self.rendered_files(values, secrets, inputs))
        except RenderError as e:
            return Check(in_sync=None, changes=[str(e)])
        outputs = {"path": str(out), "files": sorted(files), "changed_files": [],
                   "diff_lines": 0, **_layout(ctx, inputs),
                   **self.extra_outputs(inputs)}
        if changed:
            return Check(in_sync=False, changes=[f"{'update' if (out / f).exists() else 'create'}"
                                                  f" {f}" for f in changed], outputs=outputs)
        return Check(in_sync=True, outputs=outputs)

    def apply(self, ctx: StepContext, inputs: RenderInputs) -> Result:
        from ..stack.render import NotARendering, RenderError, render_stack

        secrets: dict[str, str] = {}
        missing = [n for n in self.secret_names if not ctx.get_secret(n)]
        if missing and _lost(ctx, _out_dir(ctx, inputs)):
            raise ActionFailed(
                _lost_message(ctx, missing),
                diagnosis="the secret store no longer has these secrets, but the stack was "
                          "rendered (and may be running) with them: new ones would rotate "
                          "every stack secret while the database keeps its old password",
                fix=f"recover them from the rendering: elematrix recover-secrets "
                    f"--deployment {ctx.deployment}; then resume. To rotate on purpose "
                    f"instead, move {_out_dir(ctx, inputs)} away first",
                retry=False)
        for name in self.secret_names:
            value = ctx.get_secret(name)
            if not value:
                value = generate_secret(SECRET_LENGTH)
                ctx.set_secret(name, value)
                ctx.log(f"generated secret {name} (stored in the keyring)")
            ctx.add_secret(value)
            secrets[name] = value
        for name, value in self.secret_overrides(inputs).items():
            ctx.add_secret(value)
            secrets[name] = value
        out = _out_dir(ctx, inputs)
        try:
            values = _values(ctx, inputs)
            res = render_stack(values, secrets, out,
                               self.rendered_files(values, secrets, inputs))
        except NotARendering as e:
            raise ActionFailed(str(e), diagnosis="the directory holds files elematrix did not "
                                                 "render (or a rendering from before renderings "
                                                 "were marked, with files no template makes)",
                               fix="move your own files out of it, or give another out_dir; "
                                   "an old rendering can be deleted: the next run renders it "
                                   "again") from e
        except RenderError as e:
            raise ActionFailed(str(e), diagnosis="the stack parameters cannot be rendered",
                               fix="correct the parameter named in the message") from e
        for line in res.diff:
            ctx.log(line, "diff")
        ctx.log(f"rendered {len(res.files)} files into {out}: "
                f"{len(res.changed_files)} changed")
        return Result(
            status="changed" if res.changed else "ok",
            outputs={"path": str(out), "files": res.files, "changed_files": res.changed_files,
                     "diff_lines": len(res.diff), **_layout(ctx, inputs),
                     **self.extra_outputs(inputs)},
            message=f"{len(res.changed_files)} file(s) changed" if res.changed else "unchanged",
        )


class DoctorInputs(Inputs):
    """A stack directory to lint; relative paths are taken from the deployment dir."""

    path: str = "stack"


class Doctor(Action[DoctorInputs]):
    """Lint a stack directory for the HTTP-only pitfalls (read-only)."""

    name = "stack.doctor"
    Inputs = DoctorInputs
    read_only = True

    def local_effects(self, with_: dict[str, Any]) -> list[str]:
        path = str(with_.get("path", "stack"))
        if deployment_problem(path) or Path(path).is_absolute():
            return [f"reads {path} on THIS machine (outside the deployment directory)"]
        return []

    def describe(self, inputs: DoctorInputs) -> str:
        return f"check the stack in {inputs.path} for known pitfalls"

    def _path(self, ctx: StepContext, inputs: DoctorInputs) -> Path:
        p = Path(inputs.path)
        return p if p.is_absolute() else ctx.deployment_dir / p

    def apply(self, ctx: StepContext, inputs: DoctorInputs) -> Result:
        from ..stack.doctor import DoctorInputError, diagnose

        path = self._path(ctx, inputs)
        try:
            findings = diagnose(path)
        except DoctorInputError as e:
            raise ActionFailed(str(e), diagnosis="there is no stack to check there",
                               fix="render the stack first or give the right path") from e
        for f in findings:
            ctx.log(f.format_text(), "stderr" if f.severity == "error" else "stdout")
        errors = [f for f in findings if f.severity == "error"]
        warnings = [f for f in findings if f.severity == "warning"]
        outputs = {"errors": len(errors), "warnings": len(warnings),
                   "findings": [f.to_dict() for f in findings]}
        if errors:
            return Result(status="failed", outputs=outputs,
                          message=f"{len(errors)} error(s), {len(warnings)} warning(s)",
                          diagnosis="; ".join(f"{f.rule} {f.location}: {f.title}"
                                              for f in errors[:5]),
                          fix=f"run `elematrix doctor {path} --fix` to review the HTTP-only "
                              "adaptation, or fix each finding as described")
        return Result(status="ok", outputs=outputs,
                      message=f"no errors, {len(warnings)} warning(s)")
