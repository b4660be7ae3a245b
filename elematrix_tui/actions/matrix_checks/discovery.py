"""Check 1: the client API, an encoded-URI probe, both well-known files and Element's
config.json through the public address."""

from __future__ import annotations

import json

import httpx

from .. import matrix_http as mh
from .core import GateCore
from .diagnoses import CheckFailed, classify
from .model import WELL_KNOWN_SERVER_RE, Outcome, norm_url


class Discovery(GateCore):
    """Check 1, ``discovery``, as a mixin over :class:`GateCore`."""

    async def discovery(self, out: Outcome) -> None:
        try:
            v = await self._get_json(self.base + "/_matrix/client/versions", out, "versions")
        except Exception as e:
            raise classify(e) from e
        if not v.get("versions"):
            raise CheckFailed("not_proxied", "/_matrix/client/versions has no 'versions'")
        out.details.append(f"client API: {len(v['versions'])} spec versions, "
                           f"latest {v['versions'][-1]}")
        self.st.discovery_ok = True
        problems: list[CheckFailed] = []
        # An alias with an encoded '/' and ':': a correct proxy passes it byte for byte
        # (Synapse: M_NOT_FOUND); one with a URI part decodes it (M_UNRECOGNIZED).
        probe = f"#elematrix-probe/x:{self.s.server_name}"
        url = self.base + "/_matrix/client/v3/directory/room/" + mh.q(probe)
        try:
            await mh.call(self.http, "GET", url)
            out.details.append("encoded-URI probe: alias unexpectedly exists (fine)")
        except mh.MatrixHTTPError as e:
            if e.status == 404 and e.errcode == "M_NOT_FOUND":
                out.details.append("encoded-URI probe: passed through unchanged (M_NOT_FOUND)")
            elif e.errcode == "M_UNRECOGNIZED" or "no such resource" in e.body.lower():
                problems.append(CheckFailed("proxy_path", f"encoded-URI probe: {e.summary()}"))
            elif e.json is not None:
                # Synapse answered in JSON, so the URI reached it intact; e.g. a server
                # name that is not this server's makes it ask over federation (502).
                out.details.append(f"encoded-URI probe: inconclusive ({e.summary()})")
            else:
                problems.append(classify(e))
        try:
            wk = await self._get_json(f"{self.base}/.well-known/matrix/client", out,
                                      "well-known client")
            got = str((wk.get("m.homeserver") or {}).get("base_url", ""))
            if norm_url(got) != norm_url(self.s.base_url):
                problems.append(CheckFailed(
                    "well_known", f"well-known client base_url {got!r} is not "
                    f"{self.s.base_url!r}"))
            else:
                out.details.append(f"well-known client: base_url {got}")
        except CheckFailed as e:
            problems.append(CheckFailed("well_known", e.detail))
        except mh.MatrixHTTPError as e:
            problems.append(CheckFailed("well_known", f"well-known client: {e.summary()}"))
        server_problem = await self._well_known_server(out)
        if server_problem:
            problems.append(server_problem)
        try:
            cfg = await self._get_json(self.base + "/config.json", out, "Element config.json")
            hs = (cfg.get("default_server_config") or {}).get("m.homeserver") or {}
            got_url, got_name = str(hs.get("base_url", "")), str(hs.get("server_name", ""))
            if norm_url(got_url) != norm_url(self.s.base_url) or got_name != self.s.server_name:
                problems.append(CheckFailed(
                    "element_config", f"Element config.json: base_url {got_url!r}, "
                    f"server_name {got_name!r}; expected {self.s.base_url!r}, "
                    f"{self.s.server_name!r}"))
            else:
                out.details.append(f"Element config.json: {got_url}, {got_name}")
        except CheckFailed as e:
            problems.append(CheckFailed("element_config", e.detail))
        except mh.MatrixHTTPError as e:
            problems.append(CheckFailed("element_config", f"Element config.json: "
                                        f"{e.summary()}"))
        if problems:
            for p in problems[1:]:
                out.details.append(f"also: {p.detail} [{p.cause}]")
            raise problems[0]

    async def _well_known_server(self, out: Outcome) -> CheckFailed | None:
        """``/.well-known/matrix/server`` is optional: missing is fine, broken is not.

        It only delegates federation, which the HTTP-only POC has off (the bundled stack
        does not serve it). Missing: 404/410, or an HTML page (a catch-all such as a
        single-page app's index.html). Present: it must be a JSON object whose
        ``m.server`` is ``host[:port]`` (Matrix spec, server-server API "/.well-known/
        matrix/server"); anything else a federating server would trip over is a finding.
        """
        url = f"{self.base}/.well-known/matrix/server"
        try:
            r = await self.http.get(url)
        except httpx.HTTPError as e:
            return classify(e)
        ctype = r.headers.get("content-type", "").lower()
        text = r.text
        looks_json = "json" in ctype or text.lstrip().startswith("{")
        if r.status_code in (404, 410) or (r.status_code == 200 and not looks_json
                                           and ("html" in ctype or "<html" in
                                                text[:500].lower())):
            out.details.append(f"well-known server: not served (HTTP {r.status_code}"
                               f"{', an HTML page' if r.status_code == 200 else ''}): fine, "
                               "federation delegation is optional")
            return None
        if r.status_code != 200:
            return CheckFailed("well_known", f"well-known server: HTTP {r.status_code} "
                               "(serve it correctly or not at all)")
        try:
            data = json.loads(text)
        except ValueError:
            return CheckFailed("well_known", "well-known server is served but is not JSON: "
                               f"{text[:80]!r}")
        m_server = data.get("m.server") if isinstance(data, dict) else None
        if not isinstance(m_server, str) or not WELL_KNOWN_SERVER_RE.fullmatch(m_server):
            return CheckFailed("well_known", "well-known server is served but its m.server "
                               f"is not host[:port]: {m_server!r}")
        out.details.append(f"well-known server: m.server {m_server!r}")
        return None
