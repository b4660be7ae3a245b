"""Check 5: an upload just under the limit round-trips identical, one just over it is
refused (from the host over SSH when given, else from here)."""

from __future__ import annotations

import asyncio
import contextlib
import json

from .. import matrix_http as mh
from .. import matrix_transfer as mt
from ..matrix_proxy import proxy_for
from .core import GateCore
from .diagnoses import CheckFailed, classify
from .model import MIB, PROBE_BYTES, UPLOAD_PATH, Outcome


class Media(GateCore):
    """Check 5, ``media``, as a mixin over :class:`GateCore`."""

    async def media(self, out: Outcome) -> None:
        """The upload limit, proven without pushing it through the operator's uplink.

        1. The limit (``/media/config`` against ``max_upload_size_mb``).
        2. From this machine: a small upload and download, byte-identical (the operator's
           own path works) - which also measures the uplink.
        3. Limit - 1 KiB must go through and come back identical, limit + 1 KiB must be
           refused: on the host over SSH (``host_ssh``) to nginx on its loopback, or,
           without host access, streamed from here under a budget sized from the
           payload and the measured uplink.
        """
        sess = self.st.users[0]
        try:
            cfg = await self._get_json(self.base + "/_matrix/client/v1/media/config", out,
                                       "media config", token=sess.access_token)
        except Exception as e:
            raise classify(e) from e
        server_limit = int(cfg.get("m.upload.size") or 0)
        limit = server_limit
        if self.s.max_upload_size_mb is not None:
            limit = int(self.s.max_upload_size_mb * MIB)
            if server_limit and server_limit != limit:
                raise CheckFailed("media_limit", f"Synapse's limit is {server_limit} bytes "
                                  f"({server_limit / MIB:g} MiB), expected {limit} bytes")
        if limit <= 4096:
            raise CheckFailed("media_limit", f"upload limit {limit} bytes is too small")
        out.details.append(f"upload limit {limit} bytes ({limit / MIB:g} MiB)")
        token = sess.access_token
        # 2. The operator's own round trip, small.
        probe = min(PROBE_BYTES, limit // 2)
        mxc, up = await self._upload_here(probe, token, self.s.timeout * 3 + 5)
        await self._download_here(mxc, up, token, max(self.remaining() - 1, 1))
        rate = up.size * 8 / max(up.seconds, 1e-3) / 1e6
        out.details.append(f"from this machine: {probe} bytes uploaded in {up.seconds:.2f} s "
                           f"(~{rate:.1f} Mbit/s uplink) and downloaded identical ({mxc})")
        # 3. At the limit.
        if self.s.host_ssh is not None:
            await self._limit_on_host(out, limit, token)
        else:
            await self._limit_from_here(out, limit, token, rate)

    def _judge_under(self, t: mt.Transfer, url: str) -> str:
        """The mxc URI of an upload that must have been accepted (or the finding)."""
        if t.status == 200:
            try:
                mxc = str(json.loads(t.body)["content_uri"])
            except (ValueError, KeyError, TypeError) as e:
                raise CheckFailed("unexpected", f"upload answered 200 without a "
                                  f"content_uri: {t.body[:200]!r}") from e
            self.st.media.append(mxc)
            return mxc
        if t.status == 0:
            raise CheckFailed("unexpected", f"{t.size} bytes: the connection closed before "
                              f"an answer ({t.error})")
        err = t.http_error("POST", url)
        if err.status == 413 and not err.is_html:
            raise CheckFailed("media_limit", f"{t.size} bytes refused by Synapse: "
                              f"{err.summary()}")
        raise classify(err)

    def _judge_over(self, out: Outcome, t: mt.Transfer, url: str, where: str) -> None:
        """An upload over the limit must be refused (by Synapse, or nginx at the same limit)."""
        where = f"{where} (answered in {t.seconds:.1f} s)"
        if t.status == 413:
            e = t.http_error("POST", url)
            if e.errcode == "M_TOO_LARGE":
                self.st.refused_by = "synapse"
                out.details.append(f"{t.size} bytes {where} refused by Synapse (M_TOO_LARGE)")
                return
            if e.is_html:
                # nginx at the same limit as Synapse (the bundled stack sets them equal):
                # the limit is right, only the error is nginx's HTML instead of JSON.
                self.st.refused_by = "nginx"
                out.details.append(f"{t.size} bytes {where} refused by nginx's 413 at the "
                                   "same limit (client_max_body_size = max_upload_size): "
                                   "clients get an HTML error rather than M_TOO_LARGE")
                return
        if t.status == 0:
            # nginx may answer 413 and close before the body is sent.
            self.st.refused_by = "connection closed"
            out.details.append(f"{t.size} bytes {where}: connection closed by the server "
                               f"({t.error}), treated as refused")
            return
        if t.status == 200:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                self.st.media.append(str(json.loads(t.body)["content_uri"]))
            raise CheckFailed("media_limit", f"{t.size} bytes (over the limit) were accepted")
        raise classify(t.http_error("POST", url))

    def _download_path(self, mxc: str) -> str:
        server, media_id = mxc.removeprefix("mxc://").split("/", 1)
        return f"/_matrix/client/v1/media/download/{mh.q(server)}/{mh.q(media_id)}"

    @staticmethod
    def _judge_download(t: mt.Transfer, up: mt.Transfer, url: str) -> None:
        if t.status != 200:
            raise classify(t.http_error("GET", url))
        if t.sha256 != up.sha256 or t.size != up.size:
            raise CheckFailed("media_corrupt", f"uploaded {up.size} bytes, downloaded "
                              f"{t.size} different bytes")

    async def _upload_here(self, size: int, token: str, budget: float
                           ) -> tuple[str, mt.Transfer]:
        url = self.base + UPLOAD_PATH
        while True:
            try:
                t = await asyncio.wait_for(mt.upload_stream(self.http, url, token, size),
                                           budget)
            except TimeoutError as e:
                raise CheckFailed("slow_uplink", f"{size} bytes from this machine did not "
                                  f"upload within {budget:.0f} s") from e
            except Exception as e:
                raise classify(e) from e
            if t.status != 429:
                return self._judge_under(t, url), t
            # rc_media_create: wait as Synapse asks, if the gate's budget allows.
            err = t.http_error("POST", url)
            wait = mh.rate_limit_wait(err)
            left = self.remaining() - mh.RETRY_MARGIN
            if wait > left:
                raise classify(mh.RateLimited(err, wait, max(left, 0.0)))
            await asyncio.sleep(wait)

    async def _download_here(self, mxc: str, up: mt.Transfer, token: str,
                             budget: float) -> mt.Transfer:
        url = self.base + self._download_path(mxc)
        try:
            t = await asyncio.wait_for(mt.download_stream(self.http, url, token), budget)
        except TimeoutError as e:
            raise CheckFailed("timeout", f"download of {up.size} bytes did not finish "
                              f"within {budget:.0f} s") from e
        except Exception as e:
            raise classify(e) from e
        self._judge_download(t, up, url)
        return t

    async def _limit_on_host(self, out: Outcome, limit: int, token: str) -> None:
        from ..matrix_media import CURL_COULDNT_CONNECT, HostError, HostSide

        try:
            host = HostSide(self.ctx, self.s.host_ssh, self.s.host_url)
        except Exception as e:  # an ssh config the target cannot be resolved from
            raise CheckFailed("host_unreachable", f"host_ssh: {e}") from e
        url = host.url + UPLOAD_PATH
        try:
            up = await host.upload(UPLOAD_PATH, token, limit - 1024,
                                   max(self.remaining() - 1, 1))
            refused = up.error.startswith(f"curl exit {CURL_COULDNT_CONNECT}:")
            if up.status == 0 and refused and host.url != self.base:
                # Nothing listens at host_url on the host (nginx published on one address
                # only): the public address, from the host, still goes through nginx.
                out.details.append(f"nothing listens at {host.url} on the host: using the "
                                   f"public address {self.base} from the host")
                host.url = self.base
                url = host.url + UPLOAD_PATH
                up = await host.upload(UPLOAD_PATH, token, limit - 1024,
                                       max(self.remaining() - 1, 1))
            if up.status == 0:
                raise HostError(f"nothing answered at {host.url} on the host ({up.error})")
            mxc = self._judge_under(up, url)
            down = await host.download(self._download_path(mxc), token,
                                       max(self.remaining() - 1, 1))
            self._judge_download(down, up, host.url + self._download_path(mxc))
            out.details.append(f"on the host ({host}): {up.size} bytes uploaded in "
                               f"{up.seconds:.2f} s and downloaded identical ({mxc})")
            over = await host.upload(UPLOAD_PATH, token, limit + 1024,
                                     max(self.remaining() - 1, 1))
        except HostError as e:
            raise CheckFailed("host_unreachable", str(e)) from e
        self._judge_over(out, over, url, "on the host")

    async def _limit_from_here(self, out: Outcome, limit: int, token: str,
                               rate_mbit: float) -> None:
        """No host access: stream the limit from here, with a budget from the uplink."""
        size = limit - 1024
        estimate = size * 8 / (max(rate_mbit, 0.01) * 1e6)
        budget = estimate * 1.5 + 2 * self.s.timeout
        left = self.remaining() - 2
        out.details.append(f"no host access (host_ssh not given): streaming {size} bytes "
                           f"from this machine, ~{estimate:.0f} s at the measured "
                           f"{rate_mbit:.1f} Mbit/s (budget {min(budget, left):.0f} s)")
        if estimate > left:
            raise CheckFailed("slow_uplink", f"{size} bytes at ~{rate_mbit:.1f} Mbit/s need "
                              f"~{estimate:.0f} s; the gate has {max(left, 0):.0f} s left")
        mxc, up = await self._upload_here(size, token, min(budget, left))
        await self._download_here(mxc, up, token, max(self.remaining() - 1, 1))
        out.details.append(f"{up.size} bytes uploaded in {up.seconds:.1f} s and downloaded "
                           f"identical ({mxc})")
        url = self.base + UPLOAD_PATH
        try:
            # nginx refuses an over-limit Content-Length before reading the body: with
            # Expect: 100-continue nothing is sent (through a proxy: streamed, httpx).
            send = (mt.upload_stream(self.http, url, token, limit + 1024)
                    if proxy_for(url) else
                    mt.upload_expect_continue(url, token, limit + 1024, self.s.timeout))
            over = await asyncio.wait_for(send, max(min(budget, self.remaining() - 1), 1))
        except TimeoutError as e:
            raise CheckFailed("media_limit", f"{limit + 1024} bytes (over the limit) were "
                              "still being accepted when the budget ran out") from e
        except Exception as e:
            raise classify(e) from e
        self._judge_over(out, over, url, "from this machine")
