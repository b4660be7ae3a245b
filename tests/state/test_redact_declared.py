"""Stack secrets of a deployment whose journal predates the record of secret names, under
a keyring (which cannot list what it holds), are masked too: stack.render declares the
secrets it keeps (issue 20 #5)."""

from __future__ import annotations

from pathlib import Path

from elematrix_tui.actions import default_registry
from elematrix_tui.engine.loader import load_runbook
from elematrix_tui.engine.runner import Runner, RunOptions
from elematrix_tui.engine.secrets import SecretStore
from elematrix_tui.engine.standalone import AutoQuestions
from elematrix_tui.stack.values import SECRET_NAMES

from ..engine.helpers import Collect

RUNBOOK = """
runbook: old
params:
  - {name: render, type: bool, default: false}
phases:
  - id: one
    steps:
      - id: stack
        action: stack.render
        when: params.render
        with: {server_name: chat.example.org, public_address: 203.0.113.9}
      - id: show
        action: local.noop
        with: {log: ["render={{ params.render }}"]}
"""


class KeyringLike(SecretStore):
    """The file store, but as blind as a keyring: it cannot list a deployment's names.
    Upstream: keyring's ``KeyringBackend`` (keyring/backend.py) offers get_password,
    set_password, delete_password and get_credential, and no way to list what it holds;
    SecretStore.names() returns [] for it. So only what the engine knows by name can be
    masked: this stand-in is exactly that blind, never kinder."""

    def names(self, deployment: str) -> list[str]:
        return []


def test_declared_stack_secrets_are_masked_without_a_record(tmp_path: Path,
                                                             state_dir: Path) -> None:
    store = KeyringLike("file")
    password = "an-old-postgres-password-1234"
    for name in SECRET_NAMES:
        store.set("old", name, password if name == "postgres_password" else f"{name}-x" * 3)
    path = tmp_path / "rb.yaml"
    path.write_text(RUNBOOK)
    rb = load_runbook(path, default_registry())
    sink = Collect()
    runner = Runner(rb, deployment="old", state_dir=state_dir, params={},
                    questions=AutoQuestions(), sinks=[sink], registry=default_registry(),
                    options=RunOptions(), runbook_path=path, secrets=store)
    assert runner.run() == 0
    assert runner.redact(f"POSTGRES_PASSWORD={password}") == "POSTGRES_PASSWORD=********"
