"""Why a check of the gate failed, as data: one typed record per cause (what it means
for the operator and what to do), and the classifier from a transport or HTTP error to a
cause."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import httpx

from .. import matrix_http as mh

Cause = Literal[
    "https_redirect",
    "proxy_path",
    "body_size",
    "registration_disabled",
    "plaintext",
    "unreachable",
    "synapse_down",
    "not_proxied",
    "well_known",
    "element_config",
    "server_name",
    "admin_unreachable",
    "admin_auth",
    "token_rejected",
    "open_registration",
    "not_decrypted",
    "not_received",
    "media_limit",
    "media_corrupt",
    "rate_limited",
    "slow_uplink",
    "host_unreachable",
    "cleanup",
    "timeout",
    "unexpected",
]
"""Every cause a check can report: a key of :data:`DIAGNOSES` (a typo is a type error)."""


@dataclass(frozen=True)
class Diagnosis:
    """Why a check failed, in the operator's terms, and what to do about it."""

    cause: Cause
    diagnosis: str
    fix: str


DIAGNOSES: dict[Cause, Diagnosis] = {d.cause: d for d in (
    Diagnosis(
        "https_redirect",
        "HTTPS redirect left in nginx: the public address answers with a redirect "
        "(`return 301 https://...`, or a TLS-offload redirect loop) on an HTTP-only host.",
        "Replace nginx's server blocks with the bundled single HTTP :80 server: remove "
        "`return 301 https://`, the TLS directives and any HSTS header (`elematrix doctor "
        "STACK_DIR` finds them), then reload nginx."),
    Diagnosis(
        "proxy_path",
        "proxy_pass with a path: nginx rewrites the Matrix URIs before Synapse sees them "
        "(a URI part such as `/` or `/_matrix/` after `proxy_pass http://synapse:8008`): "
        "it decodes %2F/%3A and merges `//`, which breaks signed federation requests and "
        "aliases containing '/' (a trailing `/` alone strips the prefix: everything 404s).",
        "In the `/_matrix` and `/_synapse/client` locations write `proxy_pass "
        "http://synapse:8008;` with no path at all, not even `/`, then reload nginx."),
    Diagnosis(
        "body_size",
        "nginx refused the upload with its own HTML 413: client_max_body_size is missing "
        "or below Synapse's max_upload_size (nginx's default is 1 MB).",
        "Set `client_max_body_size` in nginx's server block to Synapse's `max_upload_size` "
        "(e.g. `client_max_body_size 50M;`), then reload nginx."),
    Diagnosis(
        "registration_disabled",
        "Synapse answered \"Registration has been disabled\": enable_registration is false, "
        "which overrides registration_requires_token, so registration tokens are refused.",
        "In homeserver.yaml set `enable_registration: true` together with "
        "`registration_requires_token: true`, then restart Synapse."),
    Diagnosis(
        "plaintext",
        "A plaintext event in an encrypted room: client without E2EE store (a client "
        "without encryption support or key store sends plaintext into an encrypted room, "
        "reports success, and the server accepts it).",
        "Use a client with end-to-end encryption enabled and a key store (matrix-nio: the "
        "e2e extra and a `store_path`; Element Web only in a secure context)."),
    Diagnosis(
        "unreachable",
        "Cannot connect to the public address: security group or nginx down (TCP port "
        "closed in the security group, nginx not running, or the wrong address).",
        "Check that the security group allows TCP 80 from your address, then on the host "
        "`docker compose ps` and `docker compose logs nginx`."),
    Diagnosis(
        "synapse_down",
        "nginx answers but Synapse behind it does not (HTTP 502/503/504 from nginx).",
        "On the host: `docker compose ps synapse` and `docker compose logs synapse` "
        "(database collation, a bad homeserver.yaml and a missing signing key are the "
        "usual causes)."),
    Diagnosis(
        "not_proxied",
        "The public address does not pass /_matrix to Synapse (nginx answers itself).",
        "Add the `/_matrix` and `/_synapse/client` locations of the bundled nginx config "
        "(`proxy_pass http://synapse:8008;`), then reload nginx."),
    Diagnosis(
        "well_known",
        "/.well-known/matrix/client is missing, not JSON, or points at another base URL; "
        "or /.well-known/matrix/server is served but broken (it is optional: not serving "
        "it is fine).",
        "Serve /.well-known/matrix/client as JSON with `m.homeserver.base_url` equal to the "
        "public base URL (the bundled nginx config does), and re-render the stack. Serve "
        "/.well-known/matrix/server only for federation delegation, as JSON "
        "`{\"m.server\": \"host:port\"}`, or remove it."),
    Diagnosis(
        "element_config",
        "Element's config.json points at another homeserver or server name, so Element "
        "users would log in somewhere else.",
        "Re-render the stack: `default_server_config.m.homeserver` must have the public "
        "base URL and the server name."),
    Diagnosis(
        "server_name",
        "The homeserver's server_name is not the one given (user ids end in another name).",
        "Pass the server_name from homeserver.yaml; it cannot be changed after the first "
        "start without a new database."),
    Diagnosis(
        "admin_unreachable",
        "Synapse's admin API does not answer at admin_url (it is reachable only on the "
        "host, through an SSH port forward).",
        "Start the SSH port forward (`ssh -L 8008:localhost:8008 ec2-user@HOST`, or the "
        "runbook's ssh.forward step) and use admin_url http://127.0.0.1:8008."),
    Diagnosis(
        "admin_auth",
        "Synapse refused the admin credentials (wrong registration_shared_secret, shared-"
        "secret registration disabled, or an invalid or non-admin token).",
        "Pass the deployment's registration_shared_secret (from homeserver.yaml) or the "
        "access token of a server admin (matrix.bootstrap stores one)."),
    Diagnosis(
        "token_rejected",
        "Synapse rejected a registration token that was created a moment earlier.",
        "Check `registration_requires_token: true` in homeserver.yaml and that the admin "
        "API and the public address reach the same Synapse."),
    Diagnosis(
        "open_registration",
        "Registration is possible without a registration token: anyone can create users.",
        "Set `registration_requires_token: true` in homeserver.yaml and restart Synapse."),
    Diagnosis(
        "not_decrypted",
        "The receiving client got the event but could not decrypt it (the room key never "
        "reached its device).",
        "Check that /_matrix/client/v3/keys/* and /sendToDevice pass through nginx "
        "unchanged (proxy_pass with no path) and that clocks are right; then re-run."),
    Diagnosis(
        "not_received",
        "The message never arrived at the other client within the time limit.",
        "Check Synapse's logs for errors and that nginx does not buffer or time out "
        "long-polling /sync requests (`proxy_read_timeout`)."),
    Diagnosis(
        "media_limit",
        "Synapse's upload limit is not the one the deployment expects.",
        "Set `max_upload_size` in homeserver.yaml and `client_max_body_size` in nginx to "
        "the same value as the max_upload_size_mb parameter."),
    Diagnosis(
        "media_corrupt",
        "The media downloaded differs from what was uploaded.",
        "Check the media store volume and nginx buffering/proxy settings for /_matrix."),
    Diagnosis(
        "rate_limited",
        "Synapse rate-limited the gate (429 M_LIMIT_EXCEEDED) and asked for a longer wait "
        "than the gate's time budget has left (each wait it could afford was taken).",
        "Wait for the time Synapse named and re-run, or raise `total_timeout`. A gate run "
        "registers two users: Synapse's default rc_registration allows 3 at once and one "
        "more every ~6 s per address."),
    Diagnosis(
        "slow_uplink",
        "This machine's uplink is too slow to upload a file at the size limit within the "
        "gate's time budget (no host access was given, so the upload had to go from here).",
        "Give the gate SSH access to the host (`host_ssh`, the deploy runbook does): the "
        "near-limit uploads then run on the host. Or raise `total_timeout`."),
    Diagnosis(
        "host_unreachable",
        "The host-side media check could not run over SSH (connection, host key, or a "
        "missing curl on the host).",
        "Check the SSH target given as host_ssh (`ssh ec2-user@HOST curl --version`); "
        "without SSH (after close_ssh) leave host_ssh out: the upload then streams from "
        "here."),
    Diagnosis(
        "cleanup",
        "Some throwaway data of the check could not be removed.",
        "Remove it with Synapse's admin API (the log names the users, room and token)."),
    Diagnosis(
        "timeout",
        "The check did not finish within its time limit.",
        "Raise the `timeout` input if the link is slow; otherwise see the log for the "
        "call that hung."),
    Diagnosis(
        "unexpected",
        "The server answered something the check did not expect (see the log).",
        "Read the log lines of this check; run `elematrix doctor` on the stack directory."),
)}


def diagnosis(cause: Cause) -> Diagnosis:
    """The diagnosis record of a cause."""
    return DIAGNOSES[cause]


class CheckFailed(Exception):
    """A check found a problem: the cause (a key of DIAGNOSES) and what it saw."""

    def __init__(self, cause: Cause, detail: str) -> None:
        super().__init__(detail)
        self.cause = cause
        self.detail = detail


def classify(exc: BaseException, via: str = "public") -> CheckFailed:
    """Turn a transport or HTTP error into a diagnosed failure.

    ``via`` is "public" (through nginx) or "admin" (Synapse directly, SSH forward).
    """
    if isinstance(exc, CheckFailed):
        return exc
    if isinstance(exc, httpx.TooManyRedirects):
        return CheckFailed("https_redirect", f"redirect loop: {exc}")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        cause: Cause = "admin_unreachable" if via == "admin" else "unreachable"
        return CheckFailed(cause, f"{type(exc).__name__}: {exc or 'connection failed'}")
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return CheckFailed("timeout", f"{type(exc).__name__}: {exc or 'timed out'}")
    if isinstance(exc, mh.RateLimited):
        return CheckFailed("rate_limited", f"{exc.summary()}: Synapse asks to wait "
                           f"{exc.wait:.1f} s (retry_after_ms), more than the "
                           f"{exc.left:.1f} s the gate has left")
    if isinstance(exc, mh.MatrixHTTPError):
        s = exc.summary()
        if 300 <= exc.status < 400:
            return CheckFailed("https_redirect", s)
        if exc.status == 413 and exc.is_html:
            return CheckFailed("body_size", s)
        if exc.status in (502, 503, 504) and via == "public" and exc.is_html:
            return CheckFailed("synapse_down", s)
        if exc.status == 403 and "registration has been disabled" in exc.error.lower():
            return CheckFailed("registration_disabled", s)
        if via == "admin" and exc.status in (400, 401, 403):
            return CheckFailed("admin_auth", s)
        if exc.status == 404 and exc.errcode == "M_UNRECOGNIZED" and via == "public":
            return CheckFailed("proxy_path", s)
        if exc.status == 404 and exc.is_html and via == "public":
            # Twisted's own 404 page: the request reached Synapse, but outside /_matrix
            # (`proxy_pass http://synapse:8008/;` under `location /_matrix` strips it).
            if "no such resource" in exc.body.lower():
                return CheckFailed("proxy_path", s + " (Synapse's 'No Such Resource': the "
                                   "/_matrix prefix was rewritten)")
            return CheckFailed("not_proxied", s)
        return CheckFailed("unexpected", s)
    if isinstance(exc, httpx.HTTPError):
        return CheckFailed("unreachable" if via == "public" else "admin_unreachable",
                           f"{type(exc).__name__}: {exc}")
    return CheckFailed("unexpected", f"{type(exc).__name__}: {exc}")


