"""A human approval: the operator (or a reviewer at their side) says yes, with a comment.

The journal records who approved and what they said. ``--yes`` approves as the current
user and says so in the record.
"""

from __future__ import annotations

import getpass

from ..engine.action import Action, ActionFailed, Inputs, Result, StepContext


class ApproveInputs(Inputs):
    prompt: str = "Approve?"


class Approve(Action[ApproveInputs]):
    name = "approve"
    Inputs = ApproveInputs
    output_names = frozenset({"approved_by", "comment"})

    def apply(self, ctx: StepContext, inputs: ApproveInputs) -> Result:
        if ctx.assume_yes:
            who, comment, ok = f"{_user()} (--yes)", "approved by --yes", True
        else:
            ok, who, comment = ctx.questions.approve(ctx.step_id, inputs.prompt)
        ctx.note("approval", approved=ok, who=who, comment=comment)
        if not ok:
            raise ActionFailed(f"not approved by {who}: {comment or 'no comment'}",
                               fix="address the reviewer's comment, then re-run the step")
        ctx.log(f"approved by {who}: {comment}")
        return Result("ok", outputs={"approved_by": who, "comment": comment})


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
