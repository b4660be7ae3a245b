"""``postgres.locale``: the database's encoding and collation, read before Synapse starts.

Synapse refuses a database whose collation or ctype is not exactly ``C`` (even ``C.UTF-8``)
or whose encoding is not UTF8 (``synapse/storage/engines/postgres.py``, FACTS.md), and the
locale can only be chosen at ``initdb``: once Synapse has written to the database the only
fix is a new one. So the runbook reads it with the database still empty. Read-only: the
check is the whole action; ``apply`` fails with the diagnosis when the locale is wrong.
"""

from __future__ import annotations

import shlex
from typing import Any

from pydantic import Field

from ..engine.action import Action, ActionFailed, Check, Result, StepContext
from .compose import ComposeInputs, exec_command
from .hostfacts import facts_check, host_run
from .ssh import _on_this_machine, _tail_lines

QUERY = ("SELECT pg_encoding_to_char(encoding) || '|' || datcollate || '|' || datctype "
         "FROM pg_database WHERE datname = current_database()")


class LocaleInputs(ComposeInputs):
    service: str = "postgres"
    # The database role psql connects as (``user`` is the SSH login user).
    db_user: str = "synapse"
    database: str = "synapse"
    # What Synapse accepts (FACTS.md): exactly these.
    encoding: str = "UTF8"
    collate: str = "C"
    ctype: str = "C"
    timeout: float = Field(default=120.0, gt=0)


class Locale(Action[LocaleInputs]):
    """Read the database's encoding, collation and ctype; in place when they are Synapse's."""

    name = "postgres.locale"
    Inputs = LocaleInputs
    read_only = True
    output_names = frozenset({"encoding", "collate", "ctype"})

    def local_effects(self, with_: dict[str, Any]) -> list[str]:
        return _on_this_machine(with_, "reads the database's locale with psql")

    def describe(self, inputs: LocaleInputs) -> str:
        return (f"database {inputs.database} in {inputs.service} on {inputs.host} is "
                f"{inputs.encoding}/{inputs.collate}/{inputs.ctype}")

    def _read(self, ctx: StepContext, inputs: LocaleInputs,
              interactive: bool) -> dict[str, str]:
        argv = ["psql", "-U", inputs.db_user, "-d", inputs.database, "-tAc", QUERY]
        res = host_run(ctx, inputs, exec_command(inputs, inputs.service, argv),
                       sudo=inputs.sudo, timeout=inputs.timeout, interactive=interactive,
                       what=f"read the locale of database {inputs.database}", check_exit=False)
        parts = res.stdout.strip().split("|")
        if res.exit_code != 0 or len(parts) != 3:
            raise ActionFailed(
                f"cannot read the locale of database {inputs.database} in {inputs.service}",
                diagnosis=f"psql exited {res.exit_code}:\n"
                          f"{_tail_lines(res.stderr) or _tail_lines(res.stdout) or '(none)'}",
                fix=f"Is {inputs.service} running and healthy? cd {inputs.project_dir} && "
                    f"docker compose ps; the query was: {shlex.quote(QUERY)}")
        return {"encoding": parts[0], "collate": parts[1], "ctype": parts[2]}

    def _wrong(self, inputs: LocaleInputs, got: dict[str, str]) -> list[str]:
        want = {"encoding": inputs.encoding, "collate": inputs.collate, "ctype": inputs.ctype}
        return [f"{k} is {got[k]!r}, Synapse needs {v!r}" for k, v in want.items()
                if got[k] != v]

    def check(self, ctx: StepContext, inputs: LocaleInputs) -> Check:
        return facts_check(self.describe(inputs), lambda: self._check(ctx, inputs))

    def _check(self, ctx: StepContext, inputs: LocaleInputs) -> Check:
        got = self._read(ctx, inputs, interactive=False)
        wrong = self._wrong(inputs, got)
        return Check(in_sync=not wrong, changes=wrong, outputs=got)

    def apply(self, ctx: StepContext, inputs: LocaleInputs) -> Result:
        got = self._read(ctx, inputs, interactive=True)
        wrong = self._wrong(inputs, got)
        if wrong:
            raise ActionFailed(
                "the database's locale is wrong: " + "; ".join(wrong),
                diagnosis="Synapse refuses this database at its first start (IncorrectDatabase"
                          "Setup), and the locale is fixed at initdb: the database must be "
                          "created again while it is still empty.",
                fix=f"On the host: cd {inputs.project_dir} && docker compose down -v (removes "
                    "the empty database's volume), check POSTGRES_INITDB_ARGS in the compose "
                    "file, then resume.", retry=False)
        ctx.log(f"database {inputs.database}: {got['encoding']} / {got['collate']} / "
                f"{got['ctype']}", "info")
        return Result("ok", outputs=got, data=got,
                      message=f"{got['encoding']}|{got['collate']}|{got['ctype']}")
