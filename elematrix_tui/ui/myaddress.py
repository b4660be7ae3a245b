""""Use my current address" for ``operator_cidr``: the operator's public address, looked up.

The look-up is an HTTP GET of a check-ip URL that answers with the caller's address as plain
text (AWS's ``https://checkip.amazonaws.com`` answers ``203.0.113.7\\n``). The URL is a
setting, ``$ELEMATRIX_CHECK_IP_URL``, so tests point it at a stub on 127.0.0.1. It runs only
when the operator presses the button, and the value lands in the field for them to read
before anything uses it: never silently. Standard library only (the UI imports no SDK).
"""

from __future__ import annotations

import ipaddress
import os
import urllib.error
import urllib.request

CHECK_IP_URL_ENV = "ELEMATRIX_CHECK_IP_URL"
DEFAULT_CHECK_IP_URL = "https://checkip.amazonaws.com"
# Parameters that take the operator's own address (one home for the rule).
MY_ADDRESS_PARAMS = frozenset({"operator_cidr"})
TIMEOUT_S = 5.0
# A check-ip answer is one address: more than this is not one.
MAX_REPLY = 256


class AddressLookupError(Exception):
    """The address could not be looked up; the message says why, for the operator."""


def check_ip_url() -> str:
    """The URL the look-up asks (``$ELEMATRIX_CHECK_IP_URL``, else AWS's check-ip)."""
    return os.environ.get(CHECK_IP_URL_ENV) or DEFAULT_CHECK_IP_URL


def my_cidr(url: str | None = None, timeout: float = TIMEOUT_S) -> str:
    """The caller's public address as a one-host CIDR (``/32``, or ``/128`` for IPv6).

    Raises :class:`AddressLookupError` for no answer, an HTTP error, or an answer that is not
    exactly one address (an HTML error page from a captive portal must not become a rule).
    """
    url = url or check_ip_url()
    if not url.startswith(("http://", "https://")):
        raise AddressLookupError(f"{CHECK_IP_URL_ENV} must be an http(s) URL, not {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read(MAX_REPLY + 1)
    except urllib.error.HTTPError as e:
        raise AddressLookupError(f"{url} answered HTTP {e.code}") from e
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise AddressLookupError(f"{url} did not answer: {reason}") from e
    if len(body) > MAX_REPLY:
        raise AddressLookupError(f"{url} did not answer with one address (a long reply)")
    text = body.decode("ascii", errors="replace").strip()
    try:
        addr = ipaddress.ip_address(text)
    except ValueError as e:
        raise AddressLookupError(f"{url} did not answer with an address: {text[:60]!r}") from e
    return f"{addr}/{addr.max_prefixlen}"
