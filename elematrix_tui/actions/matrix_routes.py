"""``matrix.routes``: the route-map gate of a Synapse worker deployment.

For every route class of ``stack/workers.py: ROUTES`` (the table nginx's map is generated
from) one probe goes through the public HTTPS address; nginx names the process that
really answered in ``X-Elematrix-Worker`` (from the port it connected to), and the gate
checks that it is one the table names for that class under the deployed layout. Sync is
also checked to be sticky per user (the same user twice, the same worker), and
``/_synapse/admin`` to be answered by nginx's 404, by no Synapse process.

The probes carry no valid credentials (a well-formed fake token where the class needs one):
the worker answers 401, which is enough to know who answered, and nothing is created.
httpx is imported inside the functions.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from pydantic import ConfigDict, Field

from ..engine.action import Action, ActionFailed, Check, Inputs, Result, StepContext
from ..stack.workers import (
    MAIN_PROBE,
    ROUTES,
    WORKER_HEADER,
    RouteClass,
    WorkerLayout,
    serving,
)

ADMIN_PROBE = "/_synapse/admin/v1/server_version"


@dataclass
class RouteResult:
    """What one route class's probe found."""

    route: str
    path: str
    expected: list[str]
    answered_by: str = ""
    status: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def _fake_token(user: str) -> str:
    # The shape of Synapse's tokens (syt_<localpart>_<random>_<check>): nginx's sticky
    # sync map reads the localpart; Synapse answers M_UNKNOWN_TOKEN.
    return f"syt_{user}_{secrets.token_hex(8)}_0probe"


def _send(client: Any, base: str, route: RouteClass, server: str,
          user: str = "cHJvYmU") -> tuple[str, int | None, str]:
    import httpx

    path = route.probe.path.format(server=server)
    headers = {"Authorization": f"Bearer {_fake_token(user)}"} if route.probe.auth else {}
    body = b"{}" if route.probe.method in ("PUT", "POST") else None
    try:
        r = client.request(route.probe.method, base + path, headers=headers, content=body)
    except httpx.HTTPError as e:
        return path, None, f"{type(e).__name__}: {e}"
    return path, r.status_code, r.headers.get(WORKER_HEADER, "")


def probe_routes(base_url: str, server_name: str, layout: WorkerLayout, *,
                 verify: str | bool = True, timeout: float = 10.0) -> list[RouteResult]:
    """One probe per route class (and main's, and the admin API); a result for each."""
    import ssl

    import httpx

    base = base_url.rstrip("/")
    results: list[RouteResult] = []
    tls: ssl.SSLContext | bool = (ssl.create_default_context(cafile=verify)
                                  if isinstance(verify, str) else verify)
    with httpx.Client(verify=tls, timeout=timeout, follow_redirects=False,
                      trust_env=False) as client:
        for route in (*ROUTES, MAIN_PROBE):
            expected = serving(route, layout)
            path, status, who = _send(client, base, route, server_name)
            res = RouteResult(route.name, path, expected, who if status else "", status)
            if status is None:
                res.problems.append(f"no answer: {who}")
            elif not who:
                res.problems.append(f"HTTP {status} from nginx itself: no Synapse process "
                                    f"answered (is {', '.join(expected)} up?)")
            elif who not in expected:
                res.problems.append(f"answered by {who}, the map names {', '.join(expected)}")
            if route.balance == "user" and res.passed:
                # Sticky per user: the same user lands on the same worker every time.
                for user in ("YWxpY2U", "Ym9i", "Y2Fyb2w"):
                    seen = {_send(client, base, route, server_name, user)[2] for _ in range(3)}
                    if len(seen) != 1:
                        res.problems.append(f"user {user}: sync went to {sorted(seen)}, "
                                            "not one worker (sticky routing is broken)")
            results.append(res)
        r = client.get(base + ADMIN_PROBE)
        admin = RouteResult("admin", ADMIN_PROBE, ["nginx 404"], r.headers.get(WORKER_HEADER, ""),
                            r.status_code)
        if r.status_code != 404 or admin.answered_by:
            admin.problems.append(f"HTTP {r.status_code}"
                                  + (f" from {admin.answered_by}" if admin.answered_by else "")
                                  + ": /_synapse/admin must never be routed publicly")
        results.append(admin)
    return results


class RoutesInputs(Inputs):
    model_config = ConfigDict(extra="forbid")

    # The public HTTPS address (the ALB's name), as clients use it.
    base_url: str
    server_name: str
    # The layout the stack was rendered with (stack/workers.py: WorkerLayout).
    layout: dict[str, Any] = Field(default_factory=dict)
    # A CA file to trust instead of the system's (a private CA; the rehearsal's test CA).
    ca_file: str = ""
    timeout: float = Field(default=10.0, gt=0, le=120)


class Routes(Action[RoutesInputs]):
    """Every route class of the worker map is answered by the worker the map names."""

    name = "matrix.routes"
    Inputs = RoutesInputs
    read_only = True

    def describe(self, inputs: RoutesInputs) -> str:
        return f"probe one path per route class at {inputs.base_url}"

    def check(self, ctx: StepContext, inputs: RoutesInputs) -> Check:
        return Check(in_sync=None, changes=[])

    def apply(self, ctx: StepContext, inputs: RoutesInputs) -> Result:
        try:
            layout = WorkerLayout.model_validate(inputs.layout)
        except ValueError as e:
            raise ActionFailed(f"layout: {e}", retry=False) from e
        results = probe_routes(inputs.base_url, inputs.server_name, layout,
                               verify=inputs.ca_file or True, timeout=inputs.timeout)
        for res in results:
            mark = "PASS" if res.passed else "FAIL"
            ctx.log(f"[{mark}] {res.route}: {res.path} -> {res.answered_by or '-'} "
                    f"(HTTP {res.status}; map: {', '.join(res.expected)})",
                    "stdout" if res.passed else "stderr")
        failed = [r for r in results if not r.passed]
        outputs = {"passed": not failed,
                   "routes": {r.route: r.answered_by for r in results},
                   "failed": [r.route for r in failed]}
        if failed:
            raise ActionFailed(
                f"{len(failed)} of {len(results)} route classes misrouted: "
                + "; ".join(f"{r.route}: {r.problems[0]}" for r in failed),
                diagnosis="nginx's map and the processes disagree with the route table "
                          "(stack/workers.py: ROUTES)",
                fix="re-render the stack (stack.render with the same layout), upload it and "
                    "reload nginx; check the named worker is up (docker compose ps)")
        return Result(status="ok", outputs=outputs,
                      message=f"{len(results)} route classes answered by the mapped workers")
