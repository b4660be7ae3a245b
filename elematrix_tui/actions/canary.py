"""The restore canary: something known, written before a backup, proven after a restore.

- ``matrix.canary`` (poc-ec2's deploy phase, just before the first backup): two throwaway
  users (passwords generated into the keyring), a room, one message, one PNG upload (Synapse
  thumbnails it at upload), and the signing key's id and hash (read on the host, never the
  key). Everything but the passwords is an output, so the journal knows the canary.
- ``matrix.canary_check`` (the restore runbook's gate): both users log in with their stored
  passwords; the event is back with the same id and body; the media and a thumbnail
  download, the media byte-identical; the signing key is the same key.
"""

from __future__ import annotations

import hashlib
import shlex
import struct
import time
import uuid
import zlib
from typing import Any

from pydantic import Field

from ..engine.action import Action, ActionFailed, Inputs, Result, StepContext
from ..engine.params import generate_secret
from .compose import ComposeInputs, exec_command
from .hostfacts import host_run
from .matrix import SHARED_SECRET_NAME, run_async
from .matrix_proxy import httpx_mounts

# The canary's users and the keyring names of their passwords: one home for both actions.
CANARY_USERS: tuple[str, ...] = ("elematrix-canary-a", "elematrix-canary-b")
CANARY_PASSWORD_SECRETS: tuple[str, ...] = ("canary_password_a", "canary_password_b")
_PASSWORD_LENGTH = 32


def canary_png(width: int = 64, height: int = 48) -> bytes:
    """A real RGB PNG (Synapse's Pillow thumbnails it), made without Pillow."""
    raw = b"".join(b"\x00" + b"".join(bytes((x * 4 % 256, y * 5 % 256, (x ^ y) % 256))
                                      for x in range(width)) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def _signing_key(ctx: StepContext, compose: ComposeInputs, server_name: str) -> tuple[str, str]:
    """The signing key's id and the SHA-256 of its file, read in the Synapse container."""
    path = f"/data/{server_name}.signing.key"
    script = f"awk '{{print $2}}' {shlex.quote(path)}; sha256sum {shlex.quote(path)}"
    res = host_run(ctx, compose, exec_command(compose, "synapse", ["sh", "-c", script]),
                   sudo=compose.sudo, timeout=60, what="read the signing key's id and hash")
    lines = res.stdout.split()
    if len(lines) < 2:
        raise ActionFailed("could not read the signing key's id and hash",
                           diagnosis=f"{path}: {res.stdout.strip()[:200]!r}")
    return lines[0], lines[1]


class CanaryInputs(Inputs):
    admin_url: str = Field(description="Synapse directly (the SSH port forward), not nginx")
    server_name: str
    # Where the signing key is read (the compose project on the host).
    compose: ComposeInputs
    timeout: float = Field(default=20, gt=0, le=600)


class Canary(Action[CanaryInputs]):
    """Two users, a room, a message and an image before the backup; all known to the journal."""

    name = "matrix.canary"
    Inputs = CanaryInputs
    stored_secrets = frozenset(CANARY_PASSWORD_SECRETS)
    output_names = frozenset({"users", "room_id", "event_id", "body", "media_uri",
                              "media_sha256", "media_bytes", "signing_key_id",
                              "signing_key_sha256", "created"})

    def describe(self, inputs: CanaryInputs) -> str:
        return f"leave a canary (users, room, message, image) on {inputs.server_name}"

    def apply(self, ctx: StepContext, inputs: CanaryInputs) -> Result:
        shared = ctx.get_secret(SHARED_SECRET_NAME)
        if not shared:
            raise ActionFailed(f"no stored secret {SHARED_SECRET_NAME}",
                               fix="run the configure phase (stack.render) first")
        passwords = []
        for name in CANARY_PASSWORD_SECRETS:
            pw = ctx.get_secret(name) or generate_secret(_PASSWORD_LENGTH)
            ctx.set_secret(name, pw)
            ctx.add_secret(pw)
            passwords.append(pw)
        png = canary_png()
        body = f"elematrix canary {uuid.uuid4().hex}"

        async def go() -> dict[str, Any]:
            import httpx

            from . import matrix_http as mh

            url = inputs.admin_url.rstrip("/")
            async with httpx.AsyncClient(timeout=inputs.timeout,
                                         mounts=httpx_mounts([url])) as http:
                sessions = []
                for user, pw in zip(CANARY_USERS, passwords, strict=True):
                    try:
                        sess = await mh.login(http, url, user, pw, device_name="canary")
                    except mh.MatrixHTTPError:
                        sess = await mh.register_shared_secret(http, url, shared, user, pw,
                                                               admin=False)
                    ctx.add_secret(sess.access_token)
                    sessions.append(sess)
                a, b = sessions
                room = (await mh.call(http, "POST", url + "/_matrix/client/v3/createRoom",
                                      token=a.access_token,
                                      json_body={"name": "elematrix restore canary",
                                                 "invite": [b.user_id]})).json()["room_id"]
                await mh.call(http, "POST", url + f"/_matrix/client/v3/join/{mh.q(room)}",
                              token=b.access_token, json_body={})
                media = (await mh.call(http, "POST", url + "/_matrix/media/v3/upload"
                                       "?filename=canary.png", token=a.access_token,
                                       content=png, headers={"Content-Type": "image/png"})
                         ).json()["content_uri"]
                txn = uuid.uuid4().hex
                event = (await mh.call(
                    http, "PUT", url + f"/_matrix/client/v3/rooms/{mh.q(room)}/send/"
                    f"m.room.message/{txn}", token=a.access_token,
                    json_body={"msgtype": "m.text", "body": body, "elematrix.canary": media})
                ).json()["event_id"]
                for sess in sessions:
                    await mh.call(http, "POST", url + "/_matrix/client/v3/logout",
                                  token=sess.access_token, json_body={})
                return {"users": [s.user_id for s in sessions], "room_id": room,
                        "event_id": event, "media_uri": media}

        try:
            out = run_async(ctx, go())
        except ActionFailed:
            raise
        except Exception as e:
            raise ActionFailed(f"could not leave the canary: {e}",
                               fix="check Synapse through the admin tunnel") from e
        key_id, key_sha = _signing_key(ctx, inputs.compose, inputs.server_name)
        out.update(body=body, media_sha256=hashlib.sha256(png).hexdigest(),
                   media_bytes=len(png), signing_key_id=key_id, signing_key_sha256=key_sha,
                   created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        ctx.log(f"canary: room {out['room_id']}, event {out['event_id']}, media "
                f"{out['media_uri']}, signing key {key_id}")
        return Result("changed", outputs=out, message=f"canary in {out['room_id']}")


class CanaryCheckInputs(Inputs):
    admin_url: str
    server_name: str
    compose: ComposeInputs
    # What matrix.canary recorded (its outputs, from the journal).
    room_id: str
    event_id: str
    body: str
    media_uri: str
    media_sha256: str
    signing_key_sha256: str
    timeout: float = Field(default=20, gt=0, le=600)


class CanaryCheck(Action[CanaryCheckInputs]):
    """After a restore: the canary's users, event, media (and thumbnail) and signing key."""

    name = "matrix.canary_check"
    Inputs = CanaryCheckInputs
    read_only = True
    output_names = frozenset({"proven"})

    def describe(self, inputs: CanaryCheckInputs) -> str:
        return f"prove the canary {inputs.event_id} came back"

    def apply(self, ctx: StepContext, inputs: CanaryCheckInputs) -> Result:
        passwords = [ctx.get_secret(n) for n in CANARY_PASSWORD_SECRETS]
        if not all(passwords):
            raise ActionFailed("the canary users' passwords are not in the keyring",
                               fix="run poc-ec2's deploy phase (its canary step) first")
        server, _, media_id = inputs.media_uri.removeprefix("mxc://").partition("/")
        problems: list[str] = []

        async def go() -> list[str]:
            import httpx

            from . import matrix_http as mh

            url = inputs.admin_url.rstrip("/")
            proven: list[str] = []
            async with httpx.AsyncClient(timeout=inputs.timeout,
                                         mounts=httpx_mounts([url])) as http:
                tokens = []
                for user, pw in zip(CANARY_USERS, passwords, strict=True):
                    try:
                        sess = await mh.login(http, url, user, pw or "", device_name="canary")
                    except mh.MatrixHTTPError as e:
                        problems.append(f"{user} cannot log in: {e}")
                        continue
                    ctx.add_secret(sess.access_token)
                    tokens.append(sess.access_token)
                if len(tokens) == len(CANARY_USERS):
                    proven.append("both users log in")
                if not tokens:
                    return proven
                token = tokens[0]
                r = await mh.call(http, "GET", url + f"/_matrix/client/v3/rooms/"
                                  f"{mh.q(inputs.room_id)}/event/{mh.q(inputs.event_id)}",
                                  token=token, ok=(200, 404))
                ev = r.json() if r.status_code == 200 else {}
                if ev.get("event_id") == inputs.event_id and \
                        (ev.get("content") or {}).get("body") == inputs.body:
                    proven.append("event")
                else:
                    problems.append(f"event {inputs.event_id}: {r.status_code} "
                                    f"{str(ev.get('content'))[:100]}")
                base = url + f"/_matrix/client/v1/media/download/{mh.q(server)}/{mh.q(media_id)}"
                r = await mh.call(http, "GET", base, token=token, ok=(200, 404))
                got = hashlib.sha256(r.content).hexdigest() if r.status_code == 200 else ""
                if got == inputs.media_sha256:
                    proven.append("media byte-identical")
                else:
                    problems.append(f"media {inputs.media_uri}: {r.status_code}, sha256 "
                                    f"{got or '-'} (recorded {inputs.media_sha256})")
                thumb = (url + f"/_matrix/client/v1/media/thumbnail/{mh.q(server)}/"
                         f"{mh.q(media_id)}?width=32&height=32&method=scale")
                r = await mh.call(http, "GET", thumb, token=token, ok=(200, 404))
                if r.status_code == 200 and r.headers.get("content-type", "").startswith(
                        "image/"):
                    proven.append("thumbnail")
                else:
                    problems.append(f"thumbnail of {inputs.media_uri}: {r.status_code}")
                for t in tokens:
                    await mh.call(http, "POST", url + "/_matrix/client/v3/logout", token=t,
                                  json_body={})
            return proven

        try:
            proven = run_async(ctx, go())
        except ActionFailed:
            raise
        except Exception as e:
            raise ActionFailed(f"could not check the canary: {e}",
                               fix="check Synapse through the admin tunnel") from e
        _, key_sha = _signing_key(ctx, inputs.compose, inputs.server_name)
        if key_sha == inputs.signing_key_sha256:
            proven.append("same signing key")
        else:
            problems.append("the signing key is another key than the one backed up")
        for p in proven:
            ctx.log(f"canary: {p}")
        if problems:
            return Result("failed", outputs={"proven": proven},
                          message="; ".join(problems),
                          diagnosis="the restored deployment lacks what the backup held",
                          fix="read restore.sh's output; restore the backup again")
        return Result("ok", outputs={"proven": proven}, message=", ".join(proven))
