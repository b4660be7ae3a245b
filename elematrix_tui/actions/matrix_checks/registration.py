"""Check 2: an admin session, a fresh registration token, two throwaway users."""

from __future__ import annotations

import asyncio
import secrets
import time

from .. import matrix_http as mh
from .core import GateCore
from .diagnoses import CheckFailed, classify
from .model import MEGOLM, Outcome


class Registration(GateCore):
    """Check 2, ``registration``, as a mixin over :class:`GateCore`."""

    async def _admin_session(self, out: Outcome) -> None:
        """An admin token: the one given, or a temporary admin made with the shared secret."""
        if self.s.admin_token:
            try:
                user = await mh.whoami(self.http, self.admin, self.s.admin_token)
                if not await mh.is_admin(self.http, self.admin, self.s.admin_token, user):
                    raise CheckFailed("admin_auth", f"{user} is not a server admin")
            except CheckFailed:
                raise
            except Exception as e:
                raise classify(e, "admin") from e
            self.st.admin_token, self.st.admin_user = self.s.admin_token, user
            out.details.append(f"admin API at {self.admin}: token of {user}")
            return
        assert self.s.registration_shared_secret
        name = f"elematrix-check-admin-{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(24)
        self.ctx.add_secret(password)
        try:
            sess = await mh.register_shared_secret(
                self.http, self.admin, self.s.registration_shared_secret, name, password,
                admin=True)
        except Exception as e:
            raise classify(e, "admin") from e
        self.ctx.add_secret(sess.access_token)
        self.st.temp_admin = sess
        self.st.admin_token, self.st.admin_user = sess.access_token, sess.user_id
        out.details.append(f"admin API at {self.admin}: temporary admin {sess.user_id} "
                           "(shared-secret registration)")

    async def registration(self, out: Outcome) -> None:
        await self._admin_session(out)
        assert self.st.admin_token
        try:
            tok = await mh.create_registration_token(
                self.http, self.admin, self.st.admin_token, uses_allowed=2,
                expiry_ms=int((time.time() + 3600) * 1000))
        except Exception as e:
            raise classify(e, "admin") from e
        self.ctx.add_secret(tok.token)
        self.st.reg_token = tok.token
        out.details.append("registration token created (2 uses, 1 h)")
        # The flows Synapse offers before any auth: every flow must need the token.
        try:
            r = await mh.call(self.http, "POST", self.base + "/_matrix/client/v3/register",
                              json_body={}, ok=(401,))
            flows = [f.get("stages", []) for f in r.json().get("flows", [])]
        except Exception as e:
            raise classify(e) from e
        if any("m.login.registration_token" not in f for f in flows):
            raise CheckFailed("open_registration", f"registration flows offered: {flows}")
        tag = secrets.token_hex(4)

        async def one(letter: str) -> mh.Session:
            password = secrets.token_urlsafe(24)
            self.ctx.add_secret(password)
            assert self.st.reg_token
            sess = await mh.register_with_token(
                self.http, self.base, f"elematrix-check-{tag}-{letter}", password,
                self.st.reg_token, device_name=f"elematrix check {letter.upper()}")
            self.ctx.add_secret(sess.access_token)
            self.st.passwords[sess.user_id] = password
            return sess

        results = await asyncio.gather(one("a"), one("b"), return_exceptions=True)
        for res in results:
            if isinstance(res, mh.Session):
                self.st.users.append(res)
        for res in results:
            if isinstance(res, BaseException):
                if isinstance(res, mh.MatrixHTTPError) and res.status == 401:
                    raise CheckFailed("token_rejected", res.summary())
                raise classify(res)
        for u in self.st.users:
            if u.user_id.split(":", 1)[1] != self.s.server_name:
                raise CheckFailed("server_name", f"registered {u.user_id}, but server_name "
                                  f"is {self.s.server_name!r}")
        out.details.append("registered " + ", ".join(u.user_id for u in self.st.users)
                           + " (registration_token + dummy stages)")
        # Check 3's room: Synapse takes 0.3-0.6 s to create one, which overlaps the
        # rest of the matrix-nio import. Failures surface where check 3 awaits it.
        self._room = asyncio.ensure_future(self._create_room())
        self._room.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _create_room(self) -> str:
        """A creates the encrypted room (Megolm, not federated) and invites B."""
        a, b = self.st.users
        body = {"name": "elematrix E2EE check", "preset": "private_chat",
                "visibility": "private", "invite": [b.user_id],
                "creation_content": {"m.federate": False},
                "initial_state": [{"type": "m.room.encryption", "state_key": "",
                                   "content": {"algorithm": MEGOLM}}]}
        r = await mh.call(self.http, "POST", self.base + "/_matrix/client/v3/createRoom",
                          token=a.access_token, json_body=body)
        room_id = str(r.json()["room_id"])
        self.st.room_id = room_id
        return room_id
