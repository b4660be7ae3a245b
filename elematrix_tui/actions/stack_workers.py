"""``stack.render_workers``: ``stack.render`` for Synapse with workers.

The same action (secrets generated into the keyring, the diff against the previous
rendering with secrets masked, the previous rendering kept, an operator's directory never
replaced), rendering ``stack/workers.py: worker_files`` for the ``layout`` parameter:
the bundled stack plus the shared worker config, one config per worker, the compose file
with a service per process and Redis, and nginx's routing map. Two more secrets:
``redis_password`` (ElastiCache's AUTH token in production) and
``worker_replication_secret``. docs/production-workers.md has the layout and the files.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..stack.values import SECRET_NAMES, StackValues
from ..stack.workers import WORKER_SECRET_NAMES
from .stack import Render, RenderInputs


class RenderWorkersInputs(RenderInputs):
    """The stack values, where to render, and the worker layout (``WorkerLayout``)."""

    layout: dict[str, Any] = Field(default_factory=dict)
    # The AUTH token ElastiCache was created with (the runbook's secret parameter): Synapse
    # must present exactly that one. Empty: the generated keyring secret redis_password
    # (the local Redis container is rendered with it).
    redis_auth_token: str = ""
    # The password postgres.create_database gave Synapse's role on an external server
    # (RDS; the runbook's secret parameter): Synapse must present exactly that one. Empty:
    # the generated keyring secret postgres_password (the local container is made with it).
    db_password: str = ""


class RenderWorkers(Render):
    """Render the stack with Synapse workers and show the diff against the last rendering."""

    name = "stack.render_workers"
    Inputs = RenderWorkersInputs
    stored_secrets = frozenset((*SECRET_NAMES, *WORKER_SECRET_NAMES))
    secret_inputs = frozenset({"redis_auth_token", "db_password"})
    secret_names = (*SECRET_NAMES, *WORKER_SECRET_NAMES)

    def secret_overrides(self, inputs: RenderInputs) -> dict[str, str]:
        """ElastiCache's AUTH token and the RDS role's password, when the step gives them,
        as Synapse's Redis and database passwords."""
        if not isinstance(inputs, RenderWorkersInputs):
            return {}
        out = {"redis_password": inputs.redis_auth_token, "postgres_password":
               inputs.db_password}
        return {k: v for k, v in out.items() if v}

    def extra_outputs(self, inputs: RenderInputs) -> dict[str, Any]:
        """``db_connections``: what the layout's processes may hold on the database at once
        (postgres.create_database checks the server allows that many)."""
        from ..stack.workers import WorkerLayout, db_connections

        layout = inputs.layout if isinstance(inputs, RenderWorkersInputs) else {}
        try:
            return {"db_connections": db_connections(WorkerLayout.model_validate(layout))}
        except ValueError:
            return {}  # the rendering itself reports the bad layout

    def describe(self, inputs: RenderInputs) -> str:
        return (f"render the Matrix/Element stack with Synapse workers for "
                f"{inputs.server_name} ({inputs.public_address})")

    def rendered_files(self, values: StackValues, secrets: dict[str, str],
                       inputs: RenderInputs) -> dict[str, str] | None:
        """The worker deployment's tree (``stack.workers.worker_files``)."""
        from ..stack.workers import worker_files

        layout = inputs.layout if isinstance(inputs, RenderWorkersInputs) else {}
        return worker_files(values, secrets, layout)
