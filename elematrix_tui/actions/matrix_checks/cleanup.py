"""Check 6: the throwaway users, devices, room, media and registration token removed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

from .. import matrix_http as mh
from .core import GateCore
from .diagnoses import CheckFailed, classify
from .model import Outcome


class Cleanup(GateCore):
    """Check 6, ``cleanup``, as a mixin over :class:`GateCore`."""

    async def cleanup(self, out: Outcome) -> None:
        token = self.st.admin_token
        leftovers: list[str] = []
        if token is None:
            out.details.append("nothing was created")
            return
        adm = self.admin

        async def attempt(what: str, coro: Awaitable[Any]) -> bool:
            try:
                await coro
                return True
            except Exception as e:
                leftovers.append(f"{what}: {classify(e, 'admin').detail}")
                return False

        if self._room is not None and not self._room.done():
            # Created in the background after check 2: wait for it, so it is removed too.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._room), 10)
        for mxc in self.st.media:
            if mxc.startswith("mxc://"):
                server, media_id = mxc.removeprefix("mxc://").split("/", 1)
                await attempt(f"media {mxc}", mh.call(
                    self.http, "DELETE", f"{adm}/_synapse/admin/v1/media/{mh.q(server)}/"
                    f"{mh.q(media_id)}", token=token, ok=(200, 404)))
        if self.st.room_id:
            # v2 deletes in the background: the gate does not wait for the purge.
            await attempt(f"room {self.st.room_id}", mh.call(
                self.http, "DELETE", f"{adm}/_synapse/admin/v2/rooms/{mh.q(self.st.room_id)}",
                token=token, json_body={"purge": True, "block": False}, ok=(200, 404)))

        async def remove_user(sess: mh.Session) -> None:
            # Deactivation deletes the user's devices and tokens; listing them afterwards
            # proves it (an explicit delete_devices first only cost time). If deactivation
            # fails, the devices are deleted on their own so no keys stay usable.
            if await attempt(f"deactivate {sess.user_id}", mh.deactivate(
                    self.http, adm, token, sess.user_id)):
                left = await mh.list_devices(self.http, adm, token, sess.user_id)
            else:
                left = await mh.list_devices(self.http, adm, token, sess.user_id)
                if left:
                    await attempt(f"devices of {sess.user_id}", mh.delete_devices(
                        self.http, adm, token, sess.user_id, left))
                    left = await mh.list_devices(self.http, adm, token, sess.user_id)
            if left:
                leftovers.append(f"{sess.user_id} still has devices {left}")

        async def remove_token(reg: str) -> None:
            if await attempt("registration token", mh.delete_registration_token(
                    self.http, adm, token, reg)):
                if await mh.get_registration_token(self.http, adm, token, reg) is not None:
                    leftovers.append("registration token still exists")
                else:
                    out.details.append("registration token deleted")

        # Independent removals run together (deactivation with erase is the slow one).
        jobs = [remove_user(u) for u in self.st.users]
        if self.st.reg_token:
            jobs.append(remove_token(self.st.reg_token))
        await asyncio.gather(*jobs)
        if self.st.users:
            out.details.append(f"deactivated {len(self.st.users)} user(s); their devices "
                               "are gone")
        if self.st.temp_admin:
            # Last: deactivating the temporary admin invalidates the token used above.
            if await attempt(f"deactivate {self.st.temp_admin.user_id}", mh.deactivate(
                    self.http, adm, token, self.st.temp_admin.user_id)):
                out.details.append(f"temporary admin {self.st.temp_admin.user_id} deactivated")
        if leftovers:
            raise CheckFailed("cleanup", "; ".join(leftovers))
