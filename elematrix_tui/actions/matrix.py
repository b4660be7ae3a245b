"""Matrix actions: ``matrix.bootstrap`` (admin, registration token, rooms) and
``matrix.validate`` (the six-check end-to-end-encryption gate).

Both talk to Synapse's admin API on ``admin_url``: on a deployment that is the SSH port
forward to the host's loopback (the admin API is never proxied publicly). Client calls of
the gate go through ``base_url`` (nginx, the public address) so the gate tests what users
get. httpx and matrix-nio are imported inside ``check``/``apply`` only.

Secrets: the admin password, the admin's access token and the registration token are
stored with ``ctx.set_secret`` (redacted everywhere from then on) and never appear in
outputs: the outputs name the secret (``registration_token_secret``) instead.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..engine.action import Action, ActionFailed, Check, Inputs, Result, StepContext
from ..engine.params import generate_secret
from .matrix_proxy import httpx_mounts
from .ssh import SshInputs

if TYPE_CHECKING:
    import httpx

T = TypeVar("T")

ADMIN_PASSWORD_SECRET = "matrix_admin_password"
ADMIN_TOKEN_SECRET = "matrix_admin_token"
REGISTRATION_TOKEN_SECRET = "matrix_registration_token"
# The stack's own secret name (elematrix_tui/stack/values.py SECRET_NAMES).
SHARED_SECRET_NAME = "registration_shared_secret"


def _blank_to_none(v: Any) -> Any:
    # Optional runbook parameters render as "" (or "None"): treat them as absent.
    if isinstance(v, str) and v.strip() in ("", "None", "null"):
        return None
    return v


def run_async(ctx: StepContext, coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion in this worker thread, honouring ``ctx.cancel``.

    The engine runs each step in its own thread, so ``asyncio.run`` is safe here. A
    watcher cancels the coroutine when the operator interrupts (or the step times out).
    """

    async def main() -> T:
        task = asyncio.ensure_future(coro)
        async def watch() -> None:
            while not task.done():
                if ctx.cancel.is_set():
                    task.cancel()
                    return
                await asyncio.sleep(0.1)

        watcher = asyncio.ensure_future(watch())
        try:
            return await task
        except asyncio.CancelledError as e:
            raise ActionFailed("interrupted", diagnosis="the step was cancelled") from e
        finally:
            watcher.cancel()

    return asyncio.run(main())


# ==================================================================== matrix.bootstrap


class RoomSpec(BaseModel):
    """A default room: created once, found again by its alias."""

    model_config = ConfigDict(extra="forbid")

    name: str
    # Local part of #alias:server_name (default: the name, slugified).
    alias: str | None = None
    topic: str = ""
    encrypted: bool = False
    # Public: listed in the room directory and joinable by every user of the server.
    public: bool = True

    def localpart(self) -> str:
        if self.alias:
            return self.alias.lstrip("#").split(":", 1)[0]
        slug = re.sub(r"[^a-z0-9._=-]+", "-", self.name.lower()).strip("-")
        return slug or "room"


class BootstrapInputs(Inputs):
    admin_url: str = Field(description="Synapse directly (the SSH port forward), not nginx")
    base_url: str | None = Field(default=None, description="public address (informational)")
    server_name: str
    admin_user: str = "admin"
    # Secret: needed only the first time (to create the admin). Read from the deployment's
    # secret `registration_shared_secret` when not given.
    registration_shared_secret: str | None = None
    admin_password_secret: str = ADMIN_PASSWORD_SECRET
    admin_token_secret: str = ADMIN_TOKEN_SECRET
    registration_token_secret: str = REGISTRATION_TOKEN_SECRET
    # None: unlimited uses / never expires.
    token_uses: int | None = Field(default=10, ge=1)
    token_expiry_days: float | None = Field(default=7, gt=0)
    default_rooms: list[str | RoomSpec] = Field(default_factory=list)
    timeout: float = Field(default=10, gt=0, le=600)

    _blank = field_validator("registration_shared_secret", "base_url", "token_uses",
                             "token_expiry_days", mode="before")(_blank_to_none)

    @field_validator("admin_user")
    @classmethod
    def _user(cls, v: str) -> str:
        v = v.lstrip("@").split(":", 1)[0]
        if not re.fullmatch(r"[a-z0-9._=/-]+", v):
            raise ValueError(f"admin_user {v!r}: Matrix user names are a-z 0-9 . _ = - /")
        return v

    def rooms(self) -> list[RoomSpec]:
        return [RoomSpec(name=r) if isinstance(r, str) else r for r in self.default_rooms]


@dataclass
class _Survey:
    """What exists on the server now (found without changing anything)."""

    user_id: str
    password: str | None = None
    token: str | None = None          # a working admin token
    token_from: str = ""              # "stored" | "login"
    admin_exists: bool | None = None  # None: could not tell
    reg_token: Any = None             # matrix_http.RegistrationToken
    rooms: dict[str, str | None] = field(default_factory=dict)  # alias -> room id

    def changes(self, inputs: BootstrapInputs) -> list[str]:
        out = []
        if self.token is None:
            out.append(f"create admin {self.user_id} with shared-secret registration"
                       if not self.admin_exists else f"log in as {self.user_id}")
        if self.reg_token is None or not self.reg_token.usable:
            out.append(f"create a registration token ({inputs.token_uses or 'unlimited'} "
                       f"uses, {inputs.token_expiry_days or 'no'} days)")
        out += [f"create room {a}" for a, rid in self.rooms.items() if rid is None]
        return out


class Bootstrap(Action[BootstrapInputs]):
    """Create (or find) the server admin, a registration token and the default rooms."""

    name = "matrix.bootstrap"
    Inputs = BootstrapInputs
    secret_inputs = frozenset({"registration_shared_secret"})
    output_names = frozenset({"admin_user_id", "registration_token_secret",
                              "registration_token_expires", "registration_token_uses",
                              "rooms", "created"})

    def describe(self, inputs: BootstrapInputs) -> str:
        return (f"bootstrap @{inputs.admin_user}:{inputs.server_name} via {inputs.admin_url}: "
                f"admin, registration token, {len(inputs.default_rooms)} room(s)")

    # ---------------------------------------------------------------- survey

    async def _survey(self, ctx: StepContext, inputs: BootstrapInputs,
                      http: httpx.AsyncClient) -> _Survey:
        from . import matrix_http as mh

        url = inputs.admin_url.rstrip("/")
        sv = _Survey(user_id=f"@{inputs.admin_user}:{inputs.server_name}")
        sv.password = ctx.get_secret(inputs.admin_password_secret)
        stored = ctx.get_secret(inputs.admin_token_secret)
        if stored:
            try:
                if await mh.whoami(http, url, stored) == sv.user_id:
                    sv.token, sv.token_from, sv.admin_exists = stored, "stored", True
            except mh.MatrixHTTPError as e:
                if e.status != 401:
                    raise
        if sv.token is None and sv.password:
            try:
                sess = await mh.login(http, url, inputs.admin_user, sv.password,
                                      device_name="elematrix admin")
                sv.token, sv.token_from, sv.admin_exists = sess.access_token, "login", True
            except mh.MatrixHTTPError as e:
                if e.status != 403:
                    raise
        if sv.token is not None:
            reg = ctx.get_secret(inputs.registration_token_secret)
            if reg:
                sv.reg_token = await mh.get_registration_token(http, url, sv.token, reg)
            for room in inputs.rooms():
                alias = f"#{room.localpart()}:{inputs.server_name}"
                sv.rooms[alias] = await mh.resolve_alias(http, url, alias)
        else:
            for room in inputs.rooms():
                sv.rooms[f"#{room.localpart()}:{inputs.server_name}"] = None
        return sv

    def _outputs(self, inputs: BootstrapInputs, sv: _Survey,
                 created: list[str]) -> dict[str, Any]:
        reg = sv.reg_token
        expires = None
        if reg is not None and reg.expiry_time is not None:
            expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(reg.expiry_time / 1000))
        return {
            "admin_user_id": sv.user_id,
            # The token is a secret: the output names where it is, never its value.
            "registration_token_secret": inputs.registration_token_secret,
            "registration_token_expires": expires,
            "registration_token_uses": None if reg is None else reg.uses_allowed,
            "rooms": dict(sv.rooms),
            "created": created,
        }

    def check(self, ctx: StepContext, inputs: BootstrapInputs) -> Check:
        import httpx

        async def go() -> Check:
            async with httpx.AsyncClient(timeout=inputs.timeout,
                                         mounts=httpx_mounts([inputs.admin_url])) as http:
                sv = await self._survey(ctx, inputs, http)
            changes = sv.changes(inputs)
            return Check(in_sync=not changes, changes=changes,
                         outputs=self._outputs(inputs, sv, []))

        try:
            return run_async(ctx, go())
        except Exception as e:  # cannot tell (server down): apply will say why
            return Check(in_sync=None, changes=[f"cannot survey the server: {e}"])

    # ---------------------------------------------------------------- apply

    def apply(self, ctx: StepContext, inputs: BootstrapInputs) -> Result:
        return run_async(ctx, self._apply(ctx, inputs))

    async def _apply(self, ctx: StepContext, inputs: BootstrapInputs) -> Result:
        import httpx

        from . import matrix_checks as mc
        from . import matrix_http as mh

        url = inputs.admin_url.rstrip("/")
        created: list[str] = []
        try:
            async with httpx.AsyncClient(timeout=inputs.timeout,
                                         mounts=httpx_mounts([inputs.admin_url])) as http:
                sv = await self._survey(ctx, inputs, http)
                if sv.password is None:
                    # Stored before the admin exists: a crash between the two steps
                    # must never leave an admin whose password nobody has.
                    sv.password = generate_secret(32)
                    ctx.set_secret(inputs.admin_password_secret, sv.password)
                if sv.token is None:
                    sv.token = await self._create_admin(ctx, inputs, http, sv.password)
                    created.append("admin")
                    ctx.log(f"created server admin {sv.user_id}")
                else:
                    ctx.log(f"admin {sv.user_id} exists ({sv.token_from} token)")
                if not await mh.is_admin(http, url, sv.token, sv.user_id):
                    raise ActionFailed(
                        f"{sv.user_id} exists but is not a server admin",
                        diagnosis="the user was created earlier without admin rights",
                        fix="make it admin with the admin API (PUT /_synapse/admin/v2/users/"
                            "...{\"admin\": true}) or choose another admin_user")
                ctx.set_secret(inputs.admin_token_secret, sv.token)
                if sv.reg_token is None or not sv.reg_token.usable:
                    expiry = (None if inputs.token_expiry_days is None else
                              int((time.time() + inputs.token_expiry_days * 86400) * 1000))
                    sv.reg_token = await mh.create_registration_token(
                        http, url, sv.token, inputs.token_uses, expiry)
                    ctx.set_secret(inputs.registration_token_secret, sv.reg_token.token)
                    created.append("registration_token")
                    ctx.log(f"created a registration token ({inputs.token_uses or 'unlimited'}"
                            f" uses), stored as secret {inputs.registration_token_secret}")
                else:
                    ctx.log(f"registration token {inputs.registration_token_secret} still "
                            f"valid ({sv.reg_token.completed} used)")
                for room in inputs.rooms():
                    alias = f"#{room.localpart()}:{inputs.server_name}"
                    if sv.rooms.get(alias):
                        ctx.log(f"room {alias} exists")
                        continue
                    sv.rooms[alias] = await self._create_room(http, url, sv.token, room)
                    created.append(alias)
                    ctx.log(f"created room {alias} ({sv.rooms[alias]})")
        except ActionFailed:
            raise
        except Exception as e:
            f = mc.classify(e, "admin")
            d = mc.diagnosis(f.cause)
            raise ActionFailed(f"bootstrap failed: {f.detail}", diagnosis=d.diagnosis,
                               fix=d.fix) from e
        return Result(status="changed" if created else "ok",
                      outputs=self._outputs(inputs, sv, created),
                      message=f"admin {sv.user_id}; created: {', '.join(created) or 'nothing'}")

    async def _create_admin(self, ctx: StepContext, inputs: BootstrapInputs,
                            http: httpx.AsyncClient, password: str) -> str:
        from . import matrix_http as mh

        secret = inputs.registration_shared_secret or ctx.get_secret(SHARED_SECRET_NAME)
        if not secret:
            raise ActionFailed(
                "no admin token, no stored admin password that works, and no "
                "registration_shared_secret to create the admin with",
                diagnosis="the admin cannot be created or logged into",
                fix="pass registration_shared_secret (homeserver.yaml) the first time")
        try:
            sess = await mh.register_shared_secret(http, inputs.admin_url, secret,
                                                   inputs.admin_user, password, admin=True)
        except mh.MatrixHTTPError as e:
            if e.errcode == "M_USER_IN_USE":
                raise ActionFailed(
                    f"user @{inputs.admin_user}:{inputs.server_name} exists but the stored "
                    "password does not log in",
                    diagnosis="the admin was created outside this deployment's secrets "
                              "(or its password was changed)",
                    fix=f"store its password as secret {inputs.admin_password_secret}, or "
                        "choose another admin_user") from e
            raise
        ctx.add_secret(sess.access_token)
        return sess.access_token

    async def _create_room(self, http: httpx.AsyncClient, url: str, token: str,
                           room: RoomSpec) -> str:
        from . import matrix_http as mh

        body: dict[str, Any] = {
            "name": room.name, "room_alias_name": room.localpart(),
            "preset": "public_chat" if room.public else "private_chat",
            "visibility": "public" if room.public else "private",
        }
        if room.topic:
            body["topic"] = room.topic
        if room.encrypted:
            body["initial_state"] = [{"type": "m.room.encryption", "state_key": "",
                                      "content": {"algorithm": "m.megolm.v1.aes-sha2"}}]
        r = await mh.call(http, "POST", url + "/_matrix/client/v3/createRoom", token=token,
                          json_body=body)
        return str(r.json()["room_id"])


# ==================================================================== matrix.validate


class ValidateInputs(Inputs):
    base_url: str = Field(description="the public address, through nginx")
    server_name: str
    admin_url: str = Field(description="Synapse's admin API (the SSH port forward)")
    # Either one (secrets). Neither: the deployment's stored admin token, then its
    # registration_shared_secret.
    registration_shared_secret: str | None = None
    admin_token: str | None = None
    # None: whatever Synapse announces in /media/config.
    max_upload_size_mb: float | None = Field(default=None, gt=0)
    # Per network call, and for the whole gate.
    timeout: float = Field(default=10, gt=0, le=600)
    total_timeout: float = Field(default=300, gt=0, le=3600)
    # Self-test of the gate: false makes the sending client run without an E2EE store
    # (it then sends plaintext into the encrypted room) and the gate must fail with the
    # "client without E2EE store" diagnosis. Never false in a real runbook.
    e2ee_store: bool = True
    # The host over SSH (the ssh.* inputs, e.g. the runbook's x-ssh anchor): the media
    # check's near- and over-limit uploads then run there, to nginx at host_url, instead
    # of through the operator's uplink. None: they stream from here under a budget.
    host_ssh: SshInputs | None = None
    host_url: str = Field(default="http://127.0.0.1", pattern=r"^https?://[^/\s]+/?$",
                          description="nginx as seen on the host (its loopback)")

    _blank = field_validator("registration_shared_secret", "admin_token",
                             "max_upload_size_mb", "host_ssh", mode="before")(_blank_to_none)


class Validate(Action[ValidateInputs]):
    """The acceptance gate: discovery, token registration, two-user E2EE, media, cleanup."""

    name = "matrix.validate"
    Inputs = ValidateInputs
    read_only = True
    secret_inputs = frozenset({"registration_shared_secret", "admin_token"})
    output_names = frozenset({"passed", "checks", "durations", "failed", "media_refused_by",
                              "warnings", "duration_s"})
    CHECKS: ClassVar[tuple[str, ...]] = ("discovery", "registration", "e2ee_roundtrip",
                                         "encrypted_at_rest", "media", "cleanup")

    def describe(self, inputs: ValidateInputs) -> str:
        return (f"validate {inputs.base_url} ({inputs.server_name}): "
                + ", ".join(self.CHECKS))

    def check(self, ctx: StepContext, inputs: ValidateInputs) -> Check:
        # A gate always runs: nothing to compare with.
        return Check(in_sync=None, changes=["run the six Matrix checks (throwaway users, "
                                            "removed afterwards)"])

    def apply(self, ctx: StepContext, inputs: ValidateInputs) -> Result:
        from . import matrix_checks as mc

        admin_token = inputs.admin_token
        shared = inputs.registration_shared_secret
        if not admin_token and not shared:
            admin_token = ctx.get_secret(ADMIN_TOKEN_SECRET)
            if not admin_token:
                shared = ctx.get_secret(SHARED_SECRET_NAME)
        if not admin_token and not shared:
            raise ActionFailed(
                "matrix.validate needs registration_shared_secret or admin_token",
                diagnosis="no admin credentials were given and none are stored for this "
                          "deployment",
                fix="pass registration_shared_secret (homeserver.yaml) or admin_token")
        settings = mc.Settings(
            base_url=inputs.base_url, server_name=inputs.server_name,
            admin_url=inputs.admin_url, registration_shared_secret=shared,
            admin_token=admin_token, max_upload_size_mb=inputs.max_upload_size_mb,
            timeout=inputs.timeout, total_timeout=inputs.total_timeout,
            e2ee_store=inputs.e2ee_store, host_ssh=inputs.host_ssh,
            host_url=inputs.host_url)
        t0 = time.monotonic()
        gate = mc.Gate(ctx, settings)
        outcomes = run_async(ctx, gate.run())
        outputs = mc.summary(outcomes)
        outputs["media_refused_by"] = gate.st.refused_by
        outputs["warnings"] = gate.warnings
        outputs["duration_s"] = round(time.monotonic() - t0, 3)
        failed = [o for o in outcomes if o.status == "failed"]
        if failed:
            raise ActionFailed(
                f"{len(failed)} of {len(outcomes)} Matrix checks failed: "
                + ", ".join(o.name for o in failed),
                # With each check's own last word (what the server said, or which wait ran
                # out): the class's diagnosis alone ("something the check did not
                # expect") was all CI kept of a failure.
                diagnosis=" | ".join(f"{o.name}: {o.diagnosis}"
                                     + (f" ({o.details[-1]})" if o.details else "")
                                     for o in failed),
                fix=" | ".join(f"{o.name}: {o.fix}" for o in failed))
        ctx.log(f"all {len(outcomes)} Matrix checks passed in {outputs['duration_s']} s")
        return Result(status="ok", outputs=outputs,
                      message=f"{len(outcomes)} checks passed in {outputs['duration_s']} s")
