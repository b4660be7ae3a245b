"""The gate driver: runs the six checks in order (media beside the encrypted
conversation), skips what depends on a failure, reports each check with its timing."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from .. import matrix_http as mh
from ..matrix_proxy import httpx_mounts
from .cleanup import Cleanup
from .diagnoses import Cause, CheckFailed, classify, diagnosis
from .discovery import Discovery
from .e2ee import E2ee
from .media import Media
from .model import CHECK_NAMES, CHECKS, Outcome, element_e2ee_warning
from .registration import Registration


class Gate(Discovery, Registration, E2ee, Media, Cleanup):
    """Runs the six checks once and reports each to the step context."""

    async def run(self) -> list[Outcome]:
        """All checks in order; later checks are skipped when what they need failed."""
        warn = element_e2ee_warning(self.s.base_url)
        if warn:
            self.warnings.append(warn)
            self.ctx.log("WARNING: " + warn, "stderr")
            self.ctx.note("warning", id="element_e2ee_http", text=warn)
        # nio logs key-sharing chatter as warnings; without a handler Python's last-resort
        # handler would print them on stderr (and through the TUI). Library practice:
        # a NullHandler on the library's logger; our own log lines say what matters.
        nio_log = logging.getLogger("nio")
        if not any(isinstance(h, logging.NullHandler) for h in nio_log.handlers):
            nio_log.addHandler(logging.NullHandler())
        # 429s are waited out (retry_after_ms) as long as the gate's deadline allows; the
        # tasks started below inherit this from the context.
        mh.RETRY_DEADLINE.set(self._deadline)
        limits = httpx.Timeout(self.s.timeout)
        # Proxies: the public address as the environment says (HTTP(S)_PROXY, NO_PROXY),
        # the admin tunnel on loopback never (matrix_proxy).
        self.http = httpx.AsyncClient(timeout=limits, follow_redirects=False,
                                      mounts=httpx_mounts([self.base, self.admin]),
                                      headers={"User-Agent": "elematrix-validate"})
        # The E2EE stores are SQLite files: nio creates a dozen tables, one fsync each
        # (~0.4 s per client on disk). A RAM-backed temporary directory makes that free
        # and the keys still never leave this machine; it is removed at the end.
        shm = Path("/dev/shm")
        tmp_parent = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
        self.st.store_dir = Path(tempfile.mkdtemp(prefix="elematrix-e2ee-", dir=tmp_parent))
        # matrix-nio takes 0.6-1 s to import: load it in a thread while the first two
        # checks wait on the network.
        self._nio_ready = asyncio.ensure_future(asyncio.to_thread(importlib.import_module,
                                                                  "nio"))
        # Unused when an early check fails: consume its outcome so asyncio stays quiet
        # (an import error then surfaces where check 3 awaits it).
        self._nio_ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            await self._check("discovery", self.discovery)
            await self._check("registration", self.registration,
                              needs=self.st.discovery_ok)
            # Checks 3-5 need two users (and check 3 the room started after check 2).
            registration = next(o for o in self.outcomes if o.name == "registration")
            registered = registration.passed and len(self.st.users) == 2

            async def e2ee_then_at_rest() -> None:
                await self._check("e2ee_roundtrip", self.e2ee_roundtrip, needs=registered)
                await self._check("encrypted_at_rest", self.encrypted_at_rest,
                                  needs=bool(self.st.nonces))

            # Media is independent of the encrypted conversation (own uploads, A's token):
            # it runs alongside, and is reported after it so the log reads in order.
            media = self._check("media", self.media, needs=registered, report=False)
            await asyncio.gather(e2ee_then_at_rest(), media)
            self._report(next(o for o in self.outcomes if o.name == "media"))
        finally:
            # Cleanup runs whatever happened before (and even after a cancel).
            await self._check("cleanup", self.cleanup, budget=max(self.remaining(), 15.0))
            await self.http.aclose()
            shutil.rmtree(self.st.store_dir, ignore_errors=True)
        return self.outcomes

    async def _check(self, name: str, fn: Callable[[Outcome], Awaitable[None]],
                     needs: bool | None = True, budget: float | None = None,
                     report: bool = True) -> None:
        title = dict(CHECKS)[name]
        out = Outcome(name, title)
        self.outcomes.append(out)
        # Keep the outcomes in the checks' order whatever ran concurrently.
        self.outcomes.sort(key=lambda o: CHECK_NAMES.index(o.name))
        if needs is False:
            out.details.append("not run: an earlier check it depends on failed")
            if report:
                self._report(out)
            return
        number = CHECK_NAMES.index(name) + 1
        self.ctx.progress(f"check {number}/{len(CHECKS)}: {name}", number - 1, len(CHECKS))
        t0 = time.monotonic()
        limit = budget if budget is not None else max(self.remaining(), 0.1)
        try:
            await asyncio.wait_for(fn(out), timeout=limit)
            out.status = "passed"
        except CheckFailed as e:
            self._fail(out, e.cause, e.detail)
        except TimeoutError:
            self._fail(out, "timeout", f"no result within {limit:.1f} s")
        except asyncio.CancelledError:
            out.details.append("interrupted by the operator")
            raise
        except Exception as e:  # a check must report, never crash the gate
            f = classify(e)
            self._fail(out, f.cause, f.detail)
        finally:
            out.duration = time.monotonic() - t0
            if report:
                self._report(out)

    @staticmethod
    def _fail(out: Outcome, cause: Cause, detail: str) -> None:
        d = diagnosis(cause)
        out.status, out.cause, out.diagnosis, out.fix = "failed", cause, d.diagnosis, d.fix
        out.details.append(detail)

    def _report(self, out: Outcome) -> None:
        mark = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}[out.status]
        self.ctx.log(f"[{mark}] {out.name} ({out.duration:.2f} s): {out.title}",
                     "stdout" if out.status != "failed" else "stderr")
        for d in out.details:
            self.ctx.log(f"    {d}")
        if out.status == "failed":
            self.ctx.log(f"    diagnosis: {out.diagnosis}", "stderr")
            self.ctx.log(f"    fix: {out.fix}", "stderr")
        # "check", not "name": the journal keys a note by its kind under "name".
        self.ctx.note("gate.check", check=out.name, title=out.title, passed=out.passed,
                      status=out.status, skipped=out.status == "skipped",
                      duration=round(out.duration, 3), cause=out.cause,
                      diagnosis=out.diagnosis, fix=out.fix, details=list(out.details))
