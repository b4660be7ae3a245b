"""``browser.secure_context``: can a real browser run Element's end-to-end encryption here?

Element Web needs WebCrypto, which browsers offer only in a secure context: ``https://``,
or a loopback origin (element-web#19464; FACTS.md). The check loads the Element page in
headless Chromium (Debian's ``chromium`` package) and evaluates
``isSecureContext && !!crypto.subtle`` in it, over the Chrome DevTools protocol.

- ``https://``: it must be a secure context with WebCrypto, and the page must really have
  loaded (a certificate error shows Chromium's error page, which fails the check).
- ``http://`` to a name that is not loopback (the HTTP-only POC): the answer is reported as
  **not possible over plain HTTP**, a known limit of the POC, not a failure; with
  ``require_secure: true`` it fails instead.

``resolve`` maps host names to loopback addresses inside Chromium only (a rehearsal's
public name); every other name then resolves to nothing, so the browser reaches no other
host. ``ca_file`` is trusted in a throwaway NSS database (Chromium's store on Linux; needs
``certutil`` from ``libnss3-tools``) and nowhere else. aiohttp is imported inside apply.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator

from ..engine.action import Action, ActionFailed, Check, Inputs, Result, StepContext
from ..engine.poll import PollTimeout, poll

NOT_POSSIBLE = "not possible over plain HTTP"
EXPRESSION = ("JSON.stringify({href: location.href, secure: isSecureContext, "
              "subtle: !!(window.crypto && crypto.subtle), title: document.title})")
# Chromium's own traffic (updates, metrics, safe browsing...) is switched off.
_QUIET_FLAGS = ("--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-domain-reliability", "--metrics-recording-only",
                "--no-pings", "--disable-client-side-phishing-detection",
                "--disable-features=Translate,OptimizationHints,MediaRouter",
                "--no-proxy-server", "--remote-debugging-port=0", "--remote-allow-origins=*")
_DEVTOOLS_RE = re.compile(r"DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)")


class SecureContextInputs(Inputs):
    model_config = ConfigDict(extra="forbid")

    # The Element page as users open it.
    url: str
    # host -> loopback address, inside Chromium only (rehearsals).
    resolve: dict[str, str] = Field(default_factory=dict)
    # A CA certificate (PEM) to trust for this check (a private CA; the rehearsal's).
    ca_file: str = ""
    # Fail over plain HTTP instead of reporting the POC's limit.
    require_secure: bool = False
    timeout: float = Field(default=30.0, gt=0, le=300)
    chromium: str = "chromium"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("http", "https"):
            raise ValueError(f"url {v!r} must start with http:// or https://")
        return v

    @field_validator("resolve")
    @classmethod
    def _resolve(cls, v: dict[str, str]) -> dict[str, str]:
        for host, addr in v.items():
            if not re.fullmatch(r"[A-Za-z0-9.-]+", host):
                raise ValueError(f"resolve: {host!r} is not a host name")
            try:
                loop = ipaddress.ip_address(addr).is_loopback
            except ValueError:
                loop = False
            if not loop:
                raise ValueError(f"resolve: {host} -> {addr!r}: only loopback addresses")
        return v


def _nss_trust(home: Path, ca_file: str) -> None:
    certutil = shutil.which("certutil")
    if certutil is None:
        raise ActionFailed("certutil is missing: cannot trust ca_file in Chromium",
                           fix="apt-get install -y libnss3-tools", retry=False)
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    for args in (["-N", "--empty-password"],
                 ["-A", "-t", "C,,", "-n", "elematrix-check-ca", "-i", ca_file]):
        proc = subprocess.run([certutil, "-d", f"sql:{db}", *args], capture_output=True,
                              text=True, timeout=30, check=False)
        if proc.returncode != 0:
            raise ActionFailed(f"certutil {args[0]} failed: {proc.stderr.strip()[:300]}",
                               retry=False)


async def _cdp_evaluate(ws_url: str, url: str, timeout: float) -> dict[str, Any]:
    """Open a page, navigate to ``url``, wait for its load event, evaluate EXPRESSION."""
    import aiohttp

    port = urlsplit(ws_url).port
    async with aiohttp.ClientSession(trust_env=False) as http:
        async with http.put(f"http://127.0.0.1:{port}/json/new?about:blank") as r:
            target = await r.json(content_type=None)
        async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            seq = 0

            async def call(method: str, **params: Any) -> dict[str, Any]:
                nonlocal seq
                seq += 1
                mine = seq
                await ws.send_json({"id": mine, "method": method, "params": params})
                while True:
                    msg = await ws.receive_json()
                    if msg.get("id") == mine:
                        if "error" in msg:
                            raise ActionFailed(f"Chromium {method}: {msg['error']}")
                        return dict(msg.get("result") or {})
                    if msg.get("method") == "Page.loadEventFired":
                        loaded.set()

            loaded = asyncio.Event()
            await call("Page.enable")
            nav = await call("Page.navigate", url=url)
            deadline = time.monotonic() + timeout
            while not loaded.is_set() and not nav.get("errorText"):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ActionFailed(f"{url} did not finish loading within {timeout:g} s")
                try:
                    msg = await asyncio.wait_for(ws.receive_json(), timeout=left)
                except TimeoutError:
                    continue
                if msg.get("method") == "Page.loadEventFired":
                    loaded.set()
            res = await call("Runtime.evaluate", expression=EXPRESSION, returnByValue=True)
            value = json.loads(str(res.get("result", {}).get("value", "{}")))
            value["navigation_error"] = nav.get("errorText", "")
            return dict(value)


def secure_context(inputs: SecureContextInputs) -> dict[str, Any]:
    """Run Chromium once on ``inputs.url``; what the page reported (href, secure, subtle)."""
    exe = shutil.which(inputs.chromium)
    if exe is None:
        raise ActionFailed(f"{inputs.chromium} is not installed: no browser to check with",
                           fix="apt-get install -y chromium (Debian's package)", retry=False)
    with tempfile.TemporaryDirectory(prefix="elematrix-chromium-") as tmp:
        home = Path(tmp)
        if inputs.ca_file:
            _nss_trust(home, inputs.ca_file)
        flags = [*_QUIET_FLAGS, f"--user-data-dir={home / 'profile'}"]
        if inputs.resolve:
            rules = [f"MAP {h} {a}" for h, a in inputs.resolve.items()]
            flags.append("--host-resolver-rules=" + ", ".join([*rules, "MAP * ~NOTFOUND"]))
        if os.geteuid() == 0:
            # Chromium refuses to run as root with its sandbox (a throwaway profile here).
            flags.append("--no-sandbox")
        env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
               "LANG": "C.UTF-8"}
        # Its own session, so the end below reaches Chromium's helpers too (renderer, GPU,
        # crashpad): they outlive a terminated browser process for a moment and kept writing
        # into the profile while the temporary directory was removed (ENOTEMPTY in CI).
        proc = subprocess.Popen([exe, *flags, "about:blank"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
        try:
            ws_url = ""
            deadline = time.monotonic() + inputs.timeout
            assert proc.stderr is not None
            while time.monotonic() < deadline:
                line = proc.stderr.readline()
                if not line:
                    break
                m = _DEVTOOLS_RE.search(line)
                if m:
                    ws_url = m.group(1)
                    break
            if not ws_url:
                raise ActionFailed(f"{exe} did not start its DevTools endpoint "
                                   f"(exit {proc.poll()})")
            return asyncio.run(asyncio.wait_for(
                _cdp_evaluate(ws_url, inputs.url, inputs.timeout), inputs.timeout + 5))
        finally:
            _end_session(proc)


def _session_gone(pgid: int) -> bool | None:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True  # the group is empty: nobody writes into the profile any more
    return None


def _end_session(proc: subprocess.Popen[str]) -> None:
    """Terminate Chromium's whole session and wait until none of it is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        with contextlib.suppress(PollTimeout):
            poll(lambda _n: _session_gone(proc.pid), what="Chromium's processes to end",
                 timeout=10, interval=0.05)
            return


class SecureContext(Action[SecureContextInputs]):
    """A real browser (headless Chromium) opens Element: secure context with WebCrypto?"""

    name = "browser.secure_context"
    Inputs = SecureContextInputs
    read_only = True

    def local_effects(self, with_: dict[str, Any]) -> list[str]:
        url = str(with_.get("url", ""))
        return [f"runs headless Chromium on THIS machine (a throwaway profile) to open {url}"]

    def describe(self, inputs: SecureContextInputs) -> str:
        return f"open {inputs.url} in headless Chromium: isSecureContext && crypto.subtle"

    def check(self, ctx: StepContext, inputs: SecureContextInputs) -> Check:
        return Check(in_sync=None, changes=[])

    def apply(self, ctx: StepContext, inputs: SecureContextInputs) -> Result:
        got = secure_context(inputs)
        href = str(got.get("href", ""))
        ok = bool(got.get("secure")) and bool(got.get("subtle"))
        outputs = {"secure_context": bool(got.get("secure")), "webcrypto": bool(got.get("subtle")),
                   "href": href, "verdict": "passed" if ok else ""}
        if got.get("navigation_error") or href.startswith("chrome-error://"):
            raise ActionFailed(
                f"Chromium could not load {inputs.url}: "
                f"{got.get('navigation_error') or 'error page'}",
                diagnosis="a TLS certificate the browser does not trust, or no answer",
                fix="check the certificate chain (ACM) and the address; a private CA needs "
                    "ca_file")
        if ok:
            return Result(status="ok", outputs=outputs,
                          message="Element's page is a secure context with WebCrypto")
        plain = urlsplit(inputs.url).scheme == "http"
        if plain and not inputs.require_secure:
            outputs["verdict"] = NOT_POSSIBLE
            text = (f"Element E2EE in a browser: {NOT_POSSIBLE} ({inputs.url} is not a secure "
                    "context: no WebCrypto). The POC's own E2EE gate (matrix.validate) is "
                    "the proof there; browsers need the production path (HTTPS).")
            ctx.log("NOTE: " + text)
            ctx.note("warning", id="browser_plain_http", text=text)
            return Result(status="ok", outputs=outputs, message=NOT_POSSIBLE)
        raise ActionFailed(f"{inputs.url} is not a secure context with WebCrypto "
                           f"(isSecureContext={got.get('secure')}, "
                           f"crypto.subtle={got.get('subtle')})",
                           diagnosis=NOT_POSSIBLE if plain else "served over https, yet the "
                           "browser does not treat it as secure",
                           fix="serve Element over HTTPS (the production runbook)")
