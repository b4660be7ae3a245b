"""``postgres.create_database``: Synapse's role and database on a PostgreSQL server reached
over the network (RDS in production), created ``UTF8`` / ``C`` / ``C`` from ``template0``,
then read back before Synapse ever starts.

RDS creates the database named in ``DBName`` with the engine's default collation
(``en_US.UTF-8``), which Synapse refuses at its first start (FACTS.md); the locale can only
be chosen at ``CREATE DATABASE``. RDS is never public, so ``psql`` runs on a host inside the
VPC (the Synapse instance, over the same transport as every host step). The instance has
Docker but no psql: with ``psql_image`` it runs in a throwaway container of the stack's own
pinned PostgreSQL image on the host's network (``docker run --rm -i --network host``).
The passwords go to that host on standard input, never on a command line: ``sh -s`` reads
a script that exports ``PGPASSWORD`` and feeds psql its SQL through a quoted here-document.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from pydantic import Field, field_validator

from ..engine.action import Action, ActionFailed, Check, Result, StepContext
from .hostfacts import facts_check, host_connection
from .postgres_host import QUERY
from .ssh import SshInputs, _on_this_machine, _remaining, _tail_lines, build_command

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")
# The connections left to an ordinary role: max_connections less the slots reserved for
# superusers and, on RDS, for rds_superuser (rds.rds_superuser_reserved_connections, 2 by
# default; RDS User Guide, "Maximum number of database connections"). NULL elsewhere.
_OPEN_TO_OWNER = ("current_setting('max_connections')::int - current_setting("
                  "'superuser_reserved_connections')::int - coalesce(nullif(current_setting("
                  "'rds.rds_superuser_reserved_connections', true), '')::int, 0)")
# What Synapse accepts (FACTS.md): exactly these.
WANT = {"encoding": "UTF8", "collate": "C", "ctype": "C"}


class CreateDbInputs(SshInputs):
    # The PostgreSQL server as the host sees it (the RDS endpoint).
    db_host: str
    db_port: int = Field(default=5432, ge=1, le=65535)
    # RDS PostgreSQL 15+ refuses connections without TLS (rds.force_ssl=1).
    sslmode: str = "require"
    admin_user: str
    admin_password: str
    database: str = "synapse"
    owner: str = "synapse"
    owner_password: str
    # Run psql in this image on the host (its network, no volume); empty: the host's psql.
    psql_image: str = ""
    # The container needs Docker on the host: root, as every compose step there.
    sudo: bool = False
    # Connections Synapse's processes may hold at once (stack.render_workers'
    # db_connections); the server must allow the owner that many. 0: not checked.
    need_connections: int = Field(default=0, ge=0)
    timeout: float = Field(default=120.0, gt=0)

    @field_validator("psql_image")
    @classmethod
    def _image(cls, v: str) -> str:
        if v and not _IMAGE.match(v):
            raise ValueError(f"psql_image {v!r} is not an image reference")
        return v

    @field_validator("database", "owner", "admin_user")
    @classmethod
    def _ident(cls, v: str) -> str:
        if "{{" in v:
            return v
        if not _IDENT.match(v):
            raise ValueError(f"{v!r} is not a plain PostgreSQL name (a-z, 0-9, _)")
        return v

    @field_validator("sslmode")
    @classmethod
    def _ssl(cls, v: str) -> str:
        if v not in ("disable", "require", "verify-ca", "verify-full"):
            raise ValueError("sslmode is one of disable, require, verify-ca, verify-full")
        return v


def _lit(v: str) -> str:
    return "'" + v.replace("'", "''") + "'"


def _script(inputs: CreateDbInputs, sql: str, dbname: str) -> str:
    conn = (f"host={inputs.db_host} port={inputs.db_port} dbname={dbname} "
            f"user={inputs.admin_user} sslmode={inputs.sslmode} connect_timeout=10")
    return (f"export PGPASSWORD={shlex.quote(inputs.admin_password)}\n"
            f"psql -X -v ON_ERROR_STOP=1 -tA {shlex.quote(conn)} <<'ELEMATRIX_SQL'\n"
            f"{sql}\nELEMATRIX_SQL\n")


class CreateDatabase(Action[CreateDbInputs]):
    """Create Synapse's role and its database (UTF8/C/C from template0) when missing, and
    check the locale of what is there; a wrong locale fails before Synapse starts."""

    name = "postgres.create_database"
    Inputs = CreateDbInputs
    secret_inputs = frozenset({"admin_password", "owner_password"})
    output_names = frozenset({"encoding", "collate", "ctype", "created"})

    def local_effects(self, with_: dict[str, Any]) -> list[str]:
        return _on_this_machine(with_, "runs psql against the database server")

    def describe(self, inputs: CreateDbInputs) -> str:
        return (f"database {inputs.database} (owner {inputs.owner}) on {inputs.db_host} is "
                "UTF8/C/C")

    def _psql(self, ctx: StepContext, inputs: CreateDbInputs, sql: str, dbname: str,
              what: str) -> str:
        conn = host_connection(ctx, inputs, interactive=False)
        limit = _remaining(ctx, inputs.timeout)
        shell = "sh -s"
        if inputs.psql_image:
            # -i: the script arrives on stdin; nothing of the host is mounted.
            shell = (f"docker run --rm -i --network host {shlex.quote(inputs.psql_image)} "
                     "sh -s")
        res = conn.exec(build_command(shell, {}, inputs.sudo, conn.target.local, limit),
                        timeout=limit, cancel=ctx.cancel, sink=lambda line, s: None,
                        stdin=_script(inputs, sql, dbname).encode())
        if res.cancelled:
            raise ActionFailed(f"interrupted while trying to {what}")
        if res.timed_out or res.exit_code != 0:
            raise ActionFailed(
                f"cannot {what} on {inputs.db_host}:{inputs.db_port}",
                diagnosis=f"psql on {conn.target} exited {res.exit_code}:\n"
                          f"{_tail_lines(res.stderr) or '(no output)'}",
                fix="Is the endpoint right, does the database's security group admit this "
                    "host, are the credentials the ones in the keyring?")
        return res.stdout

    def _read(self, ctx: StepContext, inputs: CreateDbInputs) -> dict[str, Any]:
        sql = (f"SELECT (SELECT count(*) FROM pg_roles WHERE rolname = {_lit(inputs.owner)})"
               " || '|' || coalesce((SELECT pg_encoding_to_char(encoding) || '|' || "
               "datcollate || '|' || datctype FROM pg_database WHERE datname = "
               f"{_lit(inputs.database)}), '||') || '|' || ({_OPEN_TO_OWNER})")
        out = self._psql(ctx, inputs, sql + ";", "postgres", "read the databases").strip()
        parts = out.split("|")
        if len(parts) != 5 or not parts[4].lstrip("-").isdigit():
            raise ActionFailed(f"unexpected answer from psql: {out[:200]!r}")
        return {"role": parts[0] == "1", "exists": bool(parts[1]), "encoding": parts[1],
                "collate": parts[2], "ctype": parts[3], "connections": int(parts[4])}

    @staticmethod
    def _too_few(inputs: CreateDbInputs, got: dict[str, Any]) -> str:
        if inputs.need_connections <= got["connections"]:
            return ""
        return (f"the server allows {got['connections']} connections to a role that is no "
                f"superuser; Synapse's processes may hold {inputs.need_connections}")

    @staticmethod
    def _wrong(got: dict[str, Any]) -> list[str]:
        return [f"{k} is {got[k]!r}, Synapse needs {v!r}" for k, v in WANT.items()
                if got[k] != v]

    def check(self, ctx: StepContext, inputs: CreateDbInputs) -> Check:
        def run() -> Check:
            got = self._read(ctx, inputs)
            changes = [] if got["role"] else [f"create role {inputs.owner}"]
            if not got["exists"]:
                changes.append(f"create database {inputs.database} UTF8/C/C from template0")
            else:
                changes += self._wrong(got)
            if self._too_few(inputs, got):
                changes.append(self._too_few(inputs, got))
            out = {k: got[k] for k in WANT} | {"created": False}
            return Check(in_sync=not changes, changes=changes, outputs=out if not changes
                         else {})

        return facts_check(self.describe(inputs), run)

    def apply(self, ctx: StepContext, inputs: CreateDbInputs) -> Result:
        got = self._read(ctx, inputs)
        short = self._too_few(inputs, got)
        if short:
            # Before anything is created: Synapse would start, then fail under load with
            # "too many clients" (or "remaining connection slots are reserved").
            raise ActionFailed(
                f"{inputs.db_host}: {short}",
                diagnosis="RDS sizes max_connections from the class's memory "
                          "(LEAST(DBInstanceClassMemory/9531392, 5000) by default)",
                fix="a larger db_class, fewer workers, or a DB parameter group with a higher "
                    "max_connections; then resume", retry=False)
        created = False
        owner, db = inputs.owner, inputs.database
        # The password is set every run: the keyring is its one home.
        sql = (f"DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {_lit(owner)})"
               f" THEN CREATE ROLE {owner} LOGIN; END IF; END$$;\n"
               f"ALTER ROLE {owner} WITH LOGIN PASSWORD {_lit(inputs.owner_password)};\n"
               # RDS's master user is no superuser: it may create a database owned by
               # another role only as a member of it.
               f"GRANT {owner} TO CURRENT_USER;")
        self._psql(ctx, inputs, sql, "postgres", f"create role {owner}")
        if not got["exists"]:
            self._psql(ctx, inputs, f"CREATE DATABASE {db} WITH OWNER {owner} TEMPLATE "
                       "template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C';", "postgres",
                       f"create database {db}")
            created = True
            ctx.log(f"created database {db} (owner {owner}) UTF8 / C / C from template0")
        # Read back from inside the database itself: what Synapse will see.
        line = self._psql(ctx, inputs, QUERY + ";", db, f"read the locale of {db}").strip()
        parts = line.split("|")
        if len(parts) != 3:
            raise ActionFailed(f"unexpected answer from psql: {line[:200]!r}")
        got = dict(zip(("encoding", "collate", "ctype"), parts, strict=True))
        wrong = self._wrong(got)
        if wrong:
            raise ActionFailed(
                f"database {db} has the wrong locale: " + "; ".join(wrong),
                diagnosis="Synapse refuses it at its first start (IncorrectDatabaseSetup), and "
                          "the locale is fixed when a database is created.",
                fix=f"If it is still empty: DROP DATABASE {db}; then resume (this step "
                    "creates it UTF8/C/C from template0).", retry=False)
        ctx.log(f"database {db}: {got['encoding']} / {got['collate']} / {got['ctype']}")
        out = {**got, "created": created}
        return Result("changed" if created else "ok", out, data=out,
                      message=f"{db}: {got['encoding']}|{got['collate']}|{got['ctype']}")
