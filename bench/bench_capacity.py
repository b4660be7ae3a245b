"""Capacity: one load profile against the monolith and the worker layout, same machine.

    python bench/run.py capacity

Both stacks are rendered by ``stack.workers`` (the monolith is the layout with no worker:
the main process serves everything; Redis is there but idle) and run on the real engine
behind the TLS edge (tests/support/worker_stack.py), holding ``stack_lock()``. The
profile, the same for both:

1. ``USERS`` registrations through the admin API (shared secret), timed;
2. ``ROOMS`` rooms whose sizes follow a power law (Zipf, exponent ``ZIPF_S``: a few large
   rooms, many small), every member joined;
3. ``MESSAGES`` messages by random members (rooms picked in proportion to their size), at
   most ``CONCURRENCY`` in flight; each room's creator long-polls /sync and notes when each
   message arrives. Figures: messages/s over the send phase, p50/p95 send->receive latency,
   messages lost (not received within ``RECEIVE_GRACE_S``).

Only loopback is contacted. The figures say what this machine did under this profile, no
more: see docs/sizing.md for the machine and the caveats.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import random
import secrets
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
USERS = int(os.environ.get("CAPACITY_USERS", "40"))
ROOMS = int(os.environ.get("CAPACITY_ROOMS", "10"))
MESSAGES = int(os.environ.get("CAPACITY_MESSAGES", "600"))
CONCURRENCY = int(os.environ.get("CAPACITY_CONCURRENCY", "8"))
ZIPF_S = 1.2
RECEIVE_GRACE_S = 30.0
SEED = 16


def room_sizes(users: int, rooms: int, s: float = ZIPF_S) -> list[int]:
    """Room sizes by rank, ~ users / rank**s, at least 2 members, at most ``users``."""
    return [max(2, min(users, round(users / (rank ** s)))) for rank in range(1, rooms + 1)]


def _p(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _register(http: Any, admin: str, secret: str, name: str,
                    is_admin: bool = False) -> tuple[str, str]:
    url = admin + "/_synapse/admin/v1/register"
    nonce = (await http.get(url)).json()["nonce"]
    password = secrets.token_urlsafe(12)
    mac = hmac.new(secret.encode(), b"\0".join([nonce.encode(), name.encode(),
                                                password.encode(),
                                                b"admin" if is_admin else b"notadmin"]),
                   hashlib.sha1).hexdigest()
    r = await http.post(url, json={"nonce": nonce, "username": name, "password": password,
                                   "admin": is_admin, "mac": mac})
    r.raise_for_status()
    body = r.json()
    return str(body["user_id"]), str(body["access_token"])


async def _profile(base: str, admin: str, secret: str, ca: str) -> dict[str, float]:
    import httpx

    rnd = random.Random(SEED)
    tls = ssl.create_default_context(cafile=ca)
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=base, verify=tls, timeout=60, limits=limits) as c, \
            httpx.AsyncClient(timeout=60) as adm:
        t0 = time.perf_counter()
        users: list[tuple[str, str]] = []
        sem = asyncio.Semaphore(4)

        async def reg(i: int) -> None:
            async with sem:
                users.append(await _register(adm, admin, secret, f"cap{i:04d}"))

        await asyncio.gather(*(reg(i) for i in range(USERS)))
        reg_s = time.perf_counter() - t0
        users.sort()
        # Synapse's per-user message rate limit (rc_message: 0.2/s, burst 10) would make
        # this a test of the limiter: lift it for the load users only, through the admin
        # API (the rendered configuration stays as deployed).
        _, admin_tok = await _register(adm, admin, secret, "capadmin", is_admin=True)
        for uid, _ in users:
            (await adm.post(f"{admin}/_synapse/admin/v1/users/{uid}/override_ratelimit",
                            headers={"Authorization": f"Bearer {admin_tok}"},
                            json={"messages_per_second": 0, "burst_count": 0}
                            )).raise_for_status()

        def h(tok: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {tok}"}

        rooms: list[tuple[str, list[tuple[str, str]]]] = []
        t1 = time.perf_counter()
        for size in room_sizes(USERS, ROOMS):
            members = rnd.sample(users, size)
            r = await c.post("/_matrix/client/v3/createRoom", headers=h(members[0][1]),
                             json={"preset": "public_chat"})
            r.raise_for_status()
            room = r.json()["room_id"]

            async def join(tok: str, room: str = room) -> None:
                async with sem:
                    (await c.post(f"/_matrix/client/v3/rooms/{room}/join",
                                  headers=h(tok), json={})).raise_for_status()

            await asyncio.gather(*(join(tok) for _, tok in members[1:]))
            rooms.append((room, members))
        rooms_s = time.perf_counter() - t1

        sent_at: dict[str, float] = {}
        got_at: dict[str, float] = {}
        stop = asyncio.Event()

        async def listen(room: str, tok: str) -> None:
            flt = '{"room":{"rooms":["%s"],"timeline":{"limit":100}},"presence":{"types":[]}}'
            r = await c.get("/_matrix/client/v3/sync", headers=h(tok),
                            params={"filter": flt % room, "timeout": "0"})
            since = r.json()["next_batch"]
            while not stop.is_set():
                r = await c.get("/_matrix/client/v3/sync", headers=h(tok),
                                params={"filter": flt % room, "since": since,
                                        "timeout": "5000"})
                now = time.perf_counter()
                body = r.json()
                since = body["next_batch"]
                tl = body.get("rooms", {}).get("join", {}).get(room, {}).get("timeline", {})
                for ev in tl.get("events", []):
                    text = ev.get("content", {}).get("body", "")
                    if text.startswith("cap-") and text not in got_at:
                        got_at[text] = now

        listeners = [asyncio.create_task(listen(room, m[0][1])) for room, m in rooms]
        await asyncio.sleep(1.0)  # every listener has its since token
        weights = [len(m) for _, m in rooms]
        plan = [(rnd.choices(rooms, weights)[0]) for _ in range(MESSAGES)]
        send_sem = asyncio.Semaphore(CONCURRENCY)

        async def send(n: int, room: str, members: list[tuple[str, str]]) -> None:
            _, tok = rnd.choice(members)
            body = f"cap-{n}"
            async with send_sem:
                sent_at[body] = time.perf_counter()
                r = await c.put(f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{n}",
                                headers=h(tok), json={"msgtype": "m.text", "body": body})
                r.raise_for_status()

        t2 = time.perf_counter()
        await asyncio.gather(*(send(n, room, m) for n, (room, m) in enumerate(plan)))
        send_s = time.perf_counter() - t2
        deadline = time.perf_counter() + RECEIVE_GRACE_S
        while len(got_at) < len(sent_at) and time.perf_counter() < deadline:
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*listeners, return_exceptions=True)
        lat = [got_at[k] - sent_at[k] for k in sent_at if k in got_at]
        return {"registrations_per_s": USERS / reg_s, "rooms_setup_s": rooms_s,
                "messages_per_s": MESSAGES / send_s,
                "p50_ms": statistics.median(lat) * 1000 if lat else float("nan"),
                "p95_ms": _p(lat, 0.95) * 1000, "lost": float(len(sent_at) - len(lat))}


def _layouts() -> dict[str, Any]:
    from elematrix_tui.stack.workers import WorkerLayout

    return {"monolith": WorkerLayout(sync=0, client_reader=0, federation_inbound=0,
                                     federation_sender=0, event_persister=0,
                                     media_repository=0, stream_writer=0),
            "workers": WorkerLayout()}


def run() -> list[tuple[str, float, str]]:
    sys.path.insert(0, str(REPO))
    from tests.support.docker import ensure_images, stack_lock
    from tests.support.worker_stack import worker_stack

    ensure_images()
    import importlib.util

    spec = importlib.util.spec_from_file_location("bwi", REPO / "scripts" /
                                                  "build_worker_images.py")
    assert spec is not None and spec.loader is not None
    bwi = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bwi)
    bwi.ensure_worker_images()
    out: list[tuple[str, float, str]] = [
        ("capacity.profile_users", float(USERS), "users"),
        ("capacity.profile_rooms", float(ROOMS), f"rooms (sizes {room_sizes(USERS, ROOMS)})"),
        ("capacity.profile_messages", float(MESSAGES), f"messages, {CONCURRENCY} in flight"),
        ("capacity.cpus", float(os.cpu_count() or 0), "cores (shared with other work)")]
    for name, layout in _layouts().items():
        with tempfile.TemporaryDirectory(prefix=f"capacity-{name}-") as tmp, stack_lock(), \
                worker_stack(Path(tmp), layout, prefix=f"prod-workers-cap-{name}") as st:
            out.append((f"capacity.{name}.up_s", st.up_seconds, "s"))
            fig = asyncio.run(_profile(st.base_url, st.admin_url,
                                       st.secrets["registration_shared_secret"],
                                       str(st.ca.ca_pem)))
        out += [(f"capacity.{name}.registrations_per_s", fig["registrations_per_s"], "/s"),
                (f"capacity.{name}.rooms_setup_s", fig["rooms_setup_s"], "s"),
                (f"capacity.{name}.messages_per_s", fig["messages_per_s"], "msg/s"),
                (f"capacity.{name}.p50_send_to_receive_ms", fig["p50_ms"], "ms"),
                (f"capacity.{name}.p95_send_to_receive_ms", fig["p95_ms"], "ms"),
                (f"capacity.{name}.lost", fig["lost"], "messages")]
    return out
