"""``http.check``: an outside-in HTTP check from the operator's machine, retried to a deadline.

It never follows redirects (a redirect is a finding, reported with its Location) and
explains failures in nginx/Synapse terms: an HTTPS redirect left in an HTTP-only config,
HSTS over HTTP, a refused connection, nginx's HTML 413, and ``M_UNRECOGNIZED`` from a
``proxy_pass`` with a path (see FACTS.md). httpx is imported inside ``apply``.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, field_validator

from ..engine.action import Action, ActionFailed, Check, Inputs, Result, StepContext
from ..engine.poll import Attempt, PollCancelled, PollTimeout, poll_step

BODY_CAP = 64 * 1024


class HttpCheckInputs(Inputs):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    url: str
    method: str = "GET"
    # Request headers (may hold a token: masked in plan and journal).
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    # Send this many bytes as the body (probes nginx's client_max_body_size).
    body_bytes: int | None = Field(default=None, ge=0, le=1 << 30)
    # Expected status (one or several); None accepts any status.
    status: int | list[int] | None = 200
    # Fail on any 3xx, naming its Location.
    no_redirect: bool = False
    header_present: list[str] = Field(default_factory=list)
    header_absent: list[str] = Field(default_factory=list)
    # True: the body must be JSON. A dict: dotted path -> expected value (implies JSON).
    json_: dict[str, Any] | bool | None = Field(default=None, alias="json")
    body_contains: str | list[str] | None = None
    # Keep retrying for this many seconds until the check passes (0: one attempt).
    deadline: float = Field(default=0.0, ge=0, le=86400)
    interval: float = Field(default=2.0, gt=0, le=600)
    # Per request.
    timeout: float = Field(default=10.0, gt=0, le=600)

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        return v.upper()

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if urlsplit(v).scheme not in ("http", "https"):
            raise ValueError(f"url {v!r} must start with http:// or https://")
        return v


_MISSING = object()


def json_path(doc: Any, path: str) -> Any:
    """The value at a dotted ``path`` (list indices as numbers), or ``_MISSING``.

    Keys may contain dots themselves (``m.homeserver.base_url`` in a well-known file):
    at each level the longest key that matches the remaining segments wins.
    """
    parts = path.split(".") if path else []
    cur = doc
    i = 0
    while i < len(parts):
        if isinstance(cur, dict):
            for j in range(len(parts), i, -1):
                key = ".".join(parts[i:j])
                if key in cur:
                    cur = cur[key]
                    i = j
                    break
            else:
                return _MISSING
        elif isinstance(cur, list) and re.fullmatch(r"-?\d+", parts[i]):
            idx = int(parts[i])
            if not -len(cur) <= idx < len(cur):
                return _MISSING
            cur = cur[idx]
            i += 1
        else:
            return _MISSING
    return cur


def _matches(expected: Any, actual: Any) -> bool:
    if isinstance(expected, str) and expected.startswith("re:"):
        return actual is not _MISSING and re.search(expected[3:], str(actual)) is not None
    return bool(expected == actual)


@dataclass
class Outcome:
    """One attempt: what was seen, what failed and why."""

    failures: list[str] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    location: str | None = None
    json: Any = None
    text: str = ""
    elapsed_ms: float = 0.0
    # Transport errors are worth retrying; a wrong answer usually is too (services start).
    error: str | None = None

    def fail(self, failure: str, diagnosis: str | None = None, fix: str | None = None) -> None:
        self.failures.append(failure)
        if diagnosis and diagnosis not in self.diagnoses:
            self.diagnoses.append(diagnosis)
        if fix and fix not in self.fixes:
            self.fixes.append(fix)


def _port_of(url: str) -> int:
    u = urlsplit(url)
    return u.port or (443 if u.scheme == "https" else 80)


def _looks_html(text: str, content_type: str) -> bool:
    return "html" in content_type or text.lstrip().lower().startswith(("<html", "<!doctype"))


def _transport_failure(out: Outcome, inputs: HttpCheckInputs, e: Exception) -> None:
    import httpx

    port = _port_of(inputs.url)
    host = urlsplit(inputs.url).hostname
    out.error = f"{e.__class__.__name__}: {e}"
    if isinstance(e, httpx.ConnectError) and "refused" in str(e).lower():
        out.fail(f"connection refused by {host}:{port}",
                 f"The host answered but nothing accepts connections on port {port}: nginx (or "
                 "the container publishing that port) is down or not started yet. If the "
                 "address is right and nginx runs, a firewall or security group rejects it.",
                 "Check 'docker compose ps' and 'docker compose logs nginx' on the host, and that "
                 f"the security group allows port {port} from your address.")
    elif isinstance(e, httpx.ConnectTimeout):
        out.fail(f"no answer from {host}:{port} within {inputs.timeout}s",
                 f"Packets to port {port} get no answer: the security group does not allow "
                 "your current IP (operator_cidr), or the instance is stopped, or the address "
                 "is wrong.",
                 "Check the security group rules and your public IP, and that the instance runs.")
    elif isinstance(e, httpx.ConnectError):
        out.fail(f"cannot connect to {host}:{port}: {e}",
                 "The connection could not be set up (DNS name, network, or TLS on an "
                 "HTTP-only host).", "Check the URL (the POC is http:// only).")
    elif isinstance(e, httpx.TimeoutException):
        out.fail(f"{inputs.method} {inputs.url} timed out after {inputs.timeout}s",
                 "The server accepted the connection but did not answer in time: the upstream "
                 "(Synapse) may be starting or overloaded.",
                 "Wait and retry (raise 'deadline'), and check the Synapse logs.")
    else:
        out.fail(f"{inputs.method} {inputs.url} failed: {out.error}")


def _evaluate(resp: Any, inputs: HttpCheckInputs, out: Outcome) -> None:
    """Compare one response with every expectation, with operator diagnoses."""
    out.status = resp.status_code
    out.headers = {k.lower(): v for k, v in resp.headers.items()}
    out.location = resp.headers.get("location")
    raw = resp.content[:BODY_CAP]
    out.text = raw.decode(resp.encoding or "utf-8", errors="replace")
    ctype = out.headers.get("content-type", "")
    parsed: Any = _MISSING
    try:
        parsed = jsonlib.loads(resp.content)
    except ValueError:
        pass
    out.json = None if parsed is _MISSING else parsed
    plain_http = urlsplit(inputs.url).scheme == "http"
    is_redirect = 300 <= resp.status_code < 400

    # Redirects first: they explain every other mismatch.
    if is_redirect and (inputs.no_redirect or inputs.status is not None):
        loc = out.location or "(no Location header)"
        rdiag: str
        rfix: str | None
        if plain_http and loc.startswith("https://"):
            rdiag = ("An HTTPS redirect is left in the nginx config (e.g. 'return 301 "
                     "https://$host$request_uri'): the POC is HTTP only and nothing serves 443.")
            rfix = "Remove the redirect (and any TLS server block) from the nginx config."
        else:
            rdiag, rfix = f"The server redirects to {loc}.", None
        if inputs.no_redirect:
            out.fail(f"{resp.status_code} redirect to {loc}", rdiag, rfix)
        elif not _status_ok(resp.status_code, inputs.status):
            out.fail(f"status {resp.status_code} (redirect to {loc}), expected "
                     f"{_fmt_status(inputs.status)}", rdiag, rfix)
    elif inputs.status is not None and not _status_ok(resp.status_code, inputs.status):
        sdiag, sfix = _status_diagnosis(resp.status_code, out, ctype, inputs)
        out.fail(f"status {resp.status_code}, expected {_fmt_status(inputs.status)}", sdiag, sfix)
    errcode = parsed.get("errcode") if isinstance(parsed, dict) else None
    if errcode == "M_UNRECOGNIZED":
        out.fail("Synapse answered M_UNRECOGNIZED",
                 "Synapse does not recognise the path it received: nginx's proxy_pass has a path "
                 "(e.g. 'proxy_pass http://synapse:8008/_matrix/;' or a trailing '/'), which "
                 "decodes %2F/%3A and merges '//' and breaks signed federation requests.",
                 "Use 'proxy_pass http://synapse:8008;' with no path at all under "
                 "'location /_matrix' and 'location /_synapse/client'.")

    for name in inputs.header_present:
        if name.lower() not in out.headers:
            out.fail(f"header {name} missing")
    for name in inputs.header_absent:
        if name.lower() in out.headers:
            diag: str | None = None
            fix: str | None = None
            if name.lower() == "strict-transport-security" and plain_http:
                diag = ("nginx sends HSTS over plain HTTP: browsers that ever see it over HTTPS "
                        "pin the name to HTTPS, and the HTTP-only POC becomes unreachable.")
                fix = ("Remove 'add_header Strict-Transport-Security' (often in an included TLS "
                       "snippet) from the nginx config.")
            out.fail(f"header {name} present: {out.headers[name.lower()]!r}", diag, fix)

    if inputs.json_ is not None and inputs.json_ is not False:
        if parsed is _MISSING:
            html = _looks_html(out.text, ctype)
            out.fail(f"body is not JSON (Content-Type {ctype or 'missing'})",
                     "An HTML page came back: nginx served this path itself (Element or an "
                     "error page) instead of proxying it to Synapse." if html else None,
                     "Check the nginx 'location' blocks for this path." if html else None)
        elif isinstance(inputs.json_, dict):
            for path, expected in inputs.json_.items():
                actual = json_path(parsed, path)
                if not _matches(expected, actual):
                    shown = "missing" if actual is _MISSING else repr(actual)
                    out.fail(f"JSON {path} is {shown}, expected {expected!r}")
    wanted = ([inputs.body_contains] if isinstance(inputs.body_contains, str)
              else inputs.body_contains or [])
    for needle in wanted:
        if needle not in out.text:
            out.fail(f"body does not contain {needle!r}")


def _status_ok(code: int, expected: int | list[int] | None) -> bool:
    if expected is None:
        return True
    return code in ([expected] if isinstance(expected, int) else expected)


def _fmt_status(expected: int | list[int] | None) -> str:
    if isinstance(expected, list):
        return " or ".join(map(str, expected))
    return str(expected)


def _status_diagnosis(code: int, out: Outcome, ctype: str,
                      inputs: HttpCheckInputs) -> tuple[str | None, str | None]:
    html = _looks_html(out.text, ctype)
    if code == 413:
        return ("nginx refused the request body as too large (its HTML 413): "
                "client_max_body_size is below the upload size (nginx's default is 1 MB)."
                if html else "The server refused the request body as too large.",
                "Set client_max_body_size in the nginx server block to Synapse's "
                "max_upload_size (e.g. 50M).")
    if code in (502, 503, 504):
        return ("nginx is up but cannot reach its upstream: the Synapse (or Element) container "
                "is down, still starting, or the upstream name/port in proxy_pass is wrong.",
                "Check 'docker compose ps' and 'docker compose logs synapse' on the host.")
    if code == 404 and html and "/_matrix" in inputs.url:
        return ("nginx answered 404 itself for a Matrix path: it is not proxied to Synapse, or "
                "proxy_pass has a trailing '/' that strips the /_matrix prefix.",
                "Proxy 'location /_matrix' and '/_synapse/client' with "
                "'proxy_pass http://synapse:8008;' (no path).")
    return None, None


class HttpCheck(Action[HttpCheckInputs]):
    """Check an HTTP endpoint from the operator's side; retry until it passes or the deadline."""

    name = "http.check"
    Inputs = HttpCheckInputs
    read_only = True
    secret_inputs = frozenset({"headers", "body"})

    def local_effects(self, with_: dict[str, Any]) -> list[str]:
        from ..engine.trust import is_loopback_url

        url = str(with_.get("url", ""))
        return [f"requests {url}: a service on THIS machine"] if is_loopback_url(url) else []

    def describe(self, inputs: HttpCheckInputs) -> str:
        return f"check {inputs.method} {inputs.url}"

    def check(self, ctx: StepContext, inputs: HttpCheckInputs) -> Check:
        # A gate: always run it again.
        return Check(in_sync=None, changes=[])

    def _attempt(self, client: Any, inputs: HttpCheckInputs) -> Outcome:
        import httpx

        out = Outcome()
        content: bytes | str | None = inputs.body
        if inputs.body_bytes is not None:
            content = b"\0" * inputs.body_bytes
        start = time.monotonic()
        try:
            resp = client.request(inputs.method, inputs.url, headers=inputs.headers,
                                  content=content)
        except httpx.HTTPError as e:
            _transport_failure(out, inputs, e)
        else:
            _evaluate(resp, inputs, out)
        out.elapsed_ms = (time.monotonic() - start) * 1000
        return out

    def apply(self, ctx: StepContext, inputs: HttpCheckInputs) -> Result:
        import httpx

        start = time.monotonic()
        attempts = 0
        last: list[Outcome] = []

        def probe(attempt: int) -> Outcome | None:
            nonlocal attempts
            attempts = attempt
            last[:] = [self._attempt(client, inputs)]
            return None if last[0].failures else last[0]

        def on_wait(a: Attempt) -> None:
            ctx.progress(f"{inputs.method} {inputs.url}: attempt {a.number} failed after "
                         f"{a.elapsed:.0f}s of {inputs.deadline:.0f}s ({last[0].failures[0]})",
                         done=a.elapsed, total=inputs.deadline)

        # Never follow redirects (they are findings); no proxy from the environment: the
        # check is about what the instance itself answers.
        with httpx.Client(follow_redirects=False, timeout=inputs.timeout,
                          trust_env=False) as client:
            # A timeout or a cancel ends the retries: the last answer's findings are the
            # step's failure below.
            with contextlib.suppress(PollTimeout, PollCancelled):
                poll_step(ctx, probe, what=f"{inputs.method} {inputs.url}",
                          timeout=inputs.deadline, interval=inputs.interval, on_wait=on_wait)
            if not last:  # cancelled before the first attempt: still one look, as always
                attempts = 1
                last.append(self._attempt(client, inputs))
        out = last[0]
        outputs: dict[str, Any] = {
            "status_code": out.status, "location": out.location, "headers": out.headers,
            "json": out.json if len(out.text) < 16 * 1024 else None,
            "attempts": attempts, "elapsed_s": round(time.monotonic() - start, 3),
            "elapsed_ms": round(out.elapsed_ms, 1)}
        if out.failures:
            seen = (f"Last answer: HTTP {out.status}" if out.status is not None
                    else f"Last error: {out.error}")
            if out.location:
                seen += f", Location {out.location}"
            tried = f" ({attempts} attempts over {outputs['elapsed_s']:.0f}s)" if attempts > 1 \
                else ""
            diagnosis = "\n".join([*out.diagnoses, seen + tried])
            raise ActionFailed(f"{inputs.method} {inputs.url}: " + "; ".join(out.failures),
                               diagnosis=diagnosis, fix="\n".join(out.fixes) or None)
        data = {**outputs, "text": out.text}
        return Result(status="ok", outputs=outputs, data=data,
                      message=f"HTTP {out.status} in {out.elapsed_ms:.0f} ms"
                              + (f" after {attempts} attempts" if attempts > 1 else ""))
