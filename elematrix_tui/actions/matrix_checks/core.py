"""The state every check of the gate shares (``GateCore``); each check is a mixin over it
and ``gate.Gate`` drives them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from ...engine.action import StepContext
from .. import matrix_http as mh
from .diagnoses import CheckFailed
from .model import GateState, Outcome, Settings


class GateCore:
    """What every check of the gate shares: the step context, the settings, what the
    checks created so far, the HTTP client and the gate's deadline."""

    # Set by Gate.run before any check runs.
    http: httpx.AsyncClient
    _nio_ready: asyncio.Future[Any]

    def __init__(self, ctx: StepContext, settings: Settings) -> None:
        self.ctx = ctx
        self.s = settings
        self.st = GateState()
        self.outcomes: list[Outcome] = []
        self.warnings: list[str] = []
        self.base = settings.base_url.rstrip("/")
        self.admin = settings.admin_url.rstrip("/")
        self._room: asyncio.Future[str] | None = None
        self._deadline = time.monotonic() + settings.total_timeout
        if ctx.deadline is not None:
            self._deadline = min(self._deadline, ctx.deadline)

    def remaining(self) -> float:
        return self._deadline - time.monotonic()

    async def _get_json(self, url: str, out: Outcome, what: str,
                        token: str | None = None) -> dict[str, Any]:
        r = await mh.call(self.http, "GET", url, token=token)
        try:
            data = r.json()
        except ValueError as e:
            raise CheckFailed("unexpected", f"{what}: not JSON") from e
        if not isinstance(data, dict):
            raise CheckFailed("unexpected", f"{what}: not a JSON object")
        return data
