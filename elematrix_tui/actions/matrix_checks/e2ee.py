"""Checks 3 and 4: encrypted messages both ways, then what Synapse stores is
m.room.encrypted and a client without keys cannot read it."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
from typing import Any

from .. import matrix_http as mh
from ..matrix_proxy import proxy_for
from .core import GateCore
from .diagnoses import CheckFailed, classify
from .model import MEGOLM, Outcome


class E2ee(GateCore):
    """Checks 3 and 4, ``e2ee_roundtrip`` and ``encrypted_at_rest``, over :class:`GateCore`."""

    def _nio(self, sess: mh.Session, store: bool, token: str | None = None) -> Any:
        from nio import AsyncClient, AsyncClientConfig

        cfg = AsyncClientConfig(encryption_enabled=store, store_sync_tokens=False,
                                request_timeout=self.s.timeout, max_timeouts=0,
                                max_limit_exceeded=3)
        path = ""
        if store:
            assert self.st.store_dir is not None
            path = str(self.st.store_dir / sess.user_id.lstrip("@").replace(":", "_"))
            os.makedirs(path, exist_ok=True)
        # nio ignores the proxy environment: give it the same decision as httpx.
        client = AsyncClient(self.base, sess.user_id, device_id=sess.device_id or None,
                             store_path=path, config=cfg, proxy=proxy_for(self.base))
        if store:
            client.restore_login(sess.user_id, sess.device_id, token or sess.access_token)
        else:
            # restore_login insists on a device id even without encryption (a keyless
            # "login as" token has none): set the session by hand.
            client.user_id, client.access_token = sess.user_id, token or sess.access_token
        return client

    def _give_up(self) -> float:
        """When a wait on the server (on its workers' replication, with workers) ends:
        3 x ``timeout`` from now, within what is left of the gate's total."""
        return time.monotonic() + min(self.remaining() - 1, 3 * self.s.timeout)

    async def _receive(self, client: Any, room_id: str, nonce: str) -> Any:
        """Sync until an event whose body is ``nonce`` arrives; returns that event.

        On loopback the message arrives within milliseconds, over the internet within a
        second: the wait is capped at 3 x ``timeout``. An encrypted event that does not
        decrypt yet is kept and tried again after each later sync: its room key comes as a
        to-device message, which with workers may reach the receiver's sync after the event
        itself (another stream, another writer). After ``timeout`` without the key it ends
        in ``not_decrypted``.
        """
        from nio import EncryptionError, MegolmEvent, RoomMessageText, SyncResponse

        give_up = self._give_up()
        undecryptable_since: float | None = None
        held: list[Any] = []
        while True:
            left = give_up - time.monotonic()
            if undecryptable_since is not None:
                left = min(left, undecryptable_since + self.s.timeout - time.monotonic())
            if left <= 0:
                if held:
                    raise CheckFailed("not_decrypted",
                                      f"{len(held)} event(s) arrived but did not decrypt")
                raise CheckFailed("not_received", "no event with the nonce arrived within "
                                  f"{min(3 * self.s.timeout, self.s.total_timeout):g} s")
            resp = await client.sync(timeout=int(max(min(left, 5), 0.1) * 1000))
            if not isinstance(resp, SyncResponse):
                raise CheckFailed("unexpected", f"sync failed: {resp}")
            room = resp.rooms.join.get(room_id)
            for ev in list(held):
                try:
                    ev = client.decrypt_event(ev)
                except EncryptionError:
                    continue
                held = [h for h in held if h.event_id != ev.event_id]
                if isinstance(ev, RoomMessageText) and ev.body == nonce:
                    return ev
            for ev in room.timeline.events if room else []:
                if isinstance(ev, RoomMessageText) and ev.body == nonce:
                    return ev
                if isinstance(ev, MegolmEvent):
                    held.append(ev)
                    if undecryptable_since is None:
                        undecryptable_since = time.monotonic()

    async def _sync_until_member(self, client: Any, room_id: str, user_id: str) -> None:
        """Sync until ``client`` sees ``user_id`` joined to ``room_id`` (at most 3 x
        ``timeout``): on a single process the first sync already does."""
        from nio import SyncResponse

        give_up = self._give_up()
        while True:
            resp = await client.sync(timeout=0 if client.next_batch is None else 1000)
            if not isinstance(resp, SyncResponse):
                raise CheckFailed("unexpected", f"sync failed: {resp}")
            room = client.rooms.get(room_id)
            if room is not None and user_id in room.users:
                return
            if time.monotonic() >= give_up:
                raise CheckFailed("unexpected", f"{client.user_id} did not see {user_id} "
                                  f"in {room_id} within {3 * self.s.timeout:g} s of syncing")

    async def _join(self, client: Any, room_id: str) -> None:
        """Join the room B was invited to, asking again for at most 3 x ``timeout``.

        With workers the join may reach a process that has not yet had the invite over
        replication, and it refuses (403/404); a client asks again, and so does this."""
        from nio import JoinResponse

        give_up = self._give_up()
        while True:
            j = await client.join(room_id)
            if isinstance(j, JoinResponse):
                return
            if time.monotonic() >= give_up:
                raise CheckFailed("unexpected", f"B join: {j} (asked again for "
                                  f"{3 * self.s.timeout:g} s)")
            await asyncio.sleep(0.5)

    async def _knows_recipient(self, client: Any, room_id: str, other: mh.Session,
                               other_has_keys: bool = True) -> None:
        """Until ``client`` would share its room key with ``other``'s device (at most
        3 x ``timeout``).

        nio's first encrypted send asks ``/joined_members`` once, drops every member the
        answer lacks, and then shares its room key only with the devices it knows. With
        workers that answer comes from a client reader, which may not have the join over
        replication yet: the key went to the sender alone, and the receiver could never
        decrypt (CI's ``not_decrypted`` after A had seen B joined in its own sync). So the
        members are asked here until the other is among them, and the other's device keys
        until its device is known, as a client retries; nio then asks neither again."""
        from nio import JoinedMembersResponse, KeysQueryResponse

        give_up = self._give_up()

        def late(what: str) -> None:
            if time.monotonic() >= give_up:
                raise CheckFailed("unexpected", f"{client.user_id} {what} within "
                                  f"{3 * self.s.timeout:g} s")

        while True:
            jm = await client.joined_members(room_id)
            if not isinstance(jm, JoinedMembersResponse):
                raise CheckFailed("unexpected", f"joined_members: {jm}")
            if other.user_id in {m.user_id for m in jm.members}:
                break
            late(f"was not told {other.user_id} is a member of {room_id}")
            await asyncio.sleep(0.5)
        # The self-test: a sender without encryption shares no key, nor has one to find.
        if client.olm is None or not other_has_keys:
            return
        while other.device_id not in client.device_store[other.user_id]:
            client.olm.users_for_key_query.add(other.user_id)
            kq = await client.keys_query()
            if not isinstance(kq, KeysQueryResponse):
                raise CheckFailed("unexpected", f"keys_query: {kq}")
            if other.device_id in client.device_store[other.user_id]:
                break
            late(f"found no keys for {other.user_id}'s device {other.device_id}")
            await asyncio.sleep(0.5)

    async def e2ee_roundtrip(self, out: Outcome) -> None:
        from nio import RoomSendResponse

        await self._nio_ready
        a_sess, b_sess = self.st.users
        # The self-test of this gate (e2ee_store: false): A has no E2EE store, like a
        # client without encryption support; the check must catch the plaintext.
        a = self._nio(a_sess, store=self.s.e2ee_store)
        b = self._nio(b_sess, store=True)
        if not self.s.e2ee_store:
            out.details.append("self-test: sender A runs WITHOUT an E2EE store")
        try:
            # Device keys upload while Synapse finishes the room (started after check 2).
            assert self._room is not None
            uploads = [c.keys_upload() for c in (a, b) if c.should_upload_keys]
            room_id, *_ = await asyncio.gather(self._room, *uploads)
            out.details.append(f"room {room_id} with m.room.encryption {MEGOLM}")
            await self._join(b, room_id)
            # Each must know the other is in the room before A shares its room key: with
            # workers, a sync may be served by a process the join has not yet reached over
            # replication, and A would then encrypt for itself alone (B: not_decrypted).
            await asyncio.gather(self._sync_until_member(b, room_id, a_sess.user_id),
                                 self._sync_until_member(a, room_id, b_sess.user_id))
            await asyncio.gather(self._knows_recipient(a, room_id, b_sess),
                                 self._knows_recipient(b, room_id, a_sess,
                                                       other_has_keys=self.s.e2ee_store))
            for sender, receiver, label in ((a, b, "A -> B"), (b, a, "B -> A")):
                nonce = "elematrix-nonce-" + secrets.token_hex(16)
                sent = await sender.room_send(room_id, "m.room.message",
                                              {"msgtype": "m.text", "body": nonce},
                                              ignore_unverified_devices=True)
                if not isinstance(sent, RoomSendResponse):
                    raise CheckFailed("unexpected", f"{label} send: {sent}")
                self.st.nonces[sent.event_id] = nonce
                ev = await self._receive(receiver, room_id, nonce)
                if not getattr(ev, "decrypted", False):
                    raise CheckFailed("plaintext", f"{label}: the receiver got the nonce as "
                                      "a plaintext m.room.message, not a decrypted event")
                out.details.append(f"{label}: decrypted RoomMessageText with the nonce "
                                   f"({ev.event_id})")
        finally:
            await asyncio.gather(a.close(), b.close(), return_exceptions=True)

    async def encrypted_at_rest(self, out: Outcome) -> None:
        from nio import RoomGetEventResponse, RoomMessageText

        assert self.st.admin_token and self.st.room_id
        url = (f"{self.admin}/_synapse/admin/v1/rooms/{mh.q(self.st.room_id)}/messages"
               "?dir=b&limit=50")
        try:
            chunk = (await mh.call(self.http, "GET", url, token=self.st.admin_token)
                     ).json().get("chunk", [])
        except Exception as e:
            raise classify(e, "admin") from e
        stored = {ev.get("event_id"): ev for ev in chunk}
        problems: list[str] = []
        for event_id, nonce in self.st.nonces.items():
            ev = stored.get(event_id)
            if ev is None:
                problems.append(f"{event_id}: not among the room's stored events")
                continue
            kind, alg = ev.get("type"), (ev.get("content") or {}).get("algorithm")
            if kind != "m.room.encrypted" or alg != MEGOLM or nonce in json.dumps(ev):
                raise CheckFailed("plaintext", f"stored event {event_id} is {kind!r} "
                                  f"(algorithm {alg!r}), nonce readable on the server: "
                                  f"{nonce in json.dumps(ev)}")
            out.details.append(f"stored {event_id}: m.room.encrypted, {alg}, ciphertext only")
        if problems:
            raise CheckFailed("unexpected", "; ".join(problems))
        # A third client: B's account, no device, no keys ("login as" by the admin).
        b_sess = self.st.users[1]
        try:
            token = await mh.login_as(self.http, self.admin, self.st.admin_token,
                                      b_sess.user_id)
        except Exception as e:
            raise classify(e, "admin") from e
        self.ctx.add_secret(token)
        third = self._nio(mh.Session(b_sess.user_id, token, ""), store=False, token=token)
        try:
            for event_id, nonce in self.st.nonces.items():
                r = await third.room_get_event(self.st.room_id, event_id)
                if not isinstance(r, RoomGetEventResponse):
                    raise CheckFailed("unexpected", f"keyless client get {event_id}: {r}")
                readable = isinstance(r.event, RoomMessageText) or nonce in json.dumps(
                    r.event.source)
                if readable:
                    raise CheckFailed("plaintext", f"a client with no keys read {event_id}")
                out.details.append(f"keyless client sees {type(r.event).__name__}, "
                                   "not the nonce")
        finally:
            await third.close()
