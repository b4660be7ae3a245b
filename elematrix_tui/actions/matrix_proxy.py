"""Which HTTP proxy, if any, the Matrix clients use for a URL: one rule for httpx and nio.

httpx honours ``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` and ``NO_PROXY`` from the
environment by itself, but it also proxies loopback unless ``NO_PROXY`` says otherwise,
and matrix-nio (aiohttp, ``trust_env`` off) ignores the environment entirely. The gate
talks to two places: the public address (through the operator's proxy when one is set,
as a browser would) and Synapse's admin API at the local end of an SSH port forward on
127.0.0.1, which a proxy elsewhere can never reach. So:

- loopback (127.0.0.0/8, ::1, ``localhost``, ``*.localhost``) is NEVER proxied;
- otherwise ``NO_PROXY`` is applied as httpx applies it (httpx/_utils.py
  ``get_environment_proxies`` and ``URLPattern``, httpx 0.28.1): ``*`` disables proxies,
  ``.example.com`` matches subdomains only, ``example.com`` the name and its subdomains,
  IP literals match exactly, entries with ``://`` match scheme, host and port; in
  addition a CIDR (``10.0.0.0/8``) matches the addresses in it, as curl does (httpx
  silently never matches one);
- then the scheme's proxy (``https_proxy`` for https URLs), else ``all_proxy``, read with
  ``urllib.request.getproxies()`` like httpx (lower and upper case).

:func:`httpx_mounts` turns the rule into httpx mounts for the URLs a client will use, and
:func:`proxy_for` gives nio its ``proxy=`` argument. httpx is imported lazily.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1, localhost and *.localhost (RFC 6761)."""
    h = host.strip("[]").lower()
    if h == "localhost" or h.endswith(".localhost"):
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(h).is_loopback
    return False


def _no_proxy_matches(entry: str, scheme: str, host: str, port: int | None) -> bool:
    if "://" in entry:
        u = urllib.parse.urlsplit(entry)
        if u.scheme not in ("all", scheme):
            return False
        if u.hostname and not _host_matches(u.hostname, host):
            return False
        return u.port is None or u.port == port
    return _host_matches(entry, host)


def _host_matches(entry: str, host: str) -> bool:
    e, h = entry.strip("[]").lower(), host.strip("[]").lower()
    if "/" in e:
        with contextlib.suppress(ValueError):
            return ipaddress.ip_address(h) in ipaddress.ip_network(e, strict=False)
        return False
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(e) == ipaddress.ip_address(h)
    if e.startswith("*"):
        e = e[1:]
    if e.startswith("."):
        return h.endswith(e)  # subdomains only
    return re.fullmatch(rf"(.+\.)?{re.escape(e)}", h) is not None


def proxy_for(url: str) -> str | None:
    """The proxy URL to use for ``url``, or None for a direct connection."""
    u = urllib.parse.urlsplit(url)
    host = u.hostname or ""
    if not host or is_loopback_host(host):
        return None
    env = urllib.request.getproxies()
    scheme = u.scheme.lower()
    port = u.port or {"http": 80, "https": 443}.get(scheme)
    for entry in (x.strip() for x in env.get("no", "").split(",")):
        if entry == "*":
            return None
        if entry and _no_proxy_matches(entry, scheme, host, port):
            return None
    proxy = env.get(scheme) or env.get("all")
    if not proxy:
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def httpx_mounts(urls: Iterable[str], *, sync: bool = False) -> dict[str, Any]:
    """httpx ``mounts`` that apply :func:`proxy_for` to each URL's scheme, host and port.

    A mount with a port outranks httpx's own environment mounts (``http://`` etc.), so
    these decide for the URLs given; None means the client's direct transport.
    """
    import httpx

    mounts: dict[str, Any] = {}
    for url in urls:
        u = urllib.parse.urlsplit(url)
        if not u.hostname:
            continue
        host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
        port = u.port or {"http": 80, "https": 443}.get(u.scheme)
        proxy = proxy_for(url)
        transport: Any = None
        if proxy:
            transport = (httpx.HTTPTransport(proxy=proxy) if sync
                         else httpx.AsyncHTTPTransport(proxy=proxy))
        # Both the explicit and the default-port form of the URL (httpx keeps no port
        # for a default one, and a pattern with a port would not match it then).
        mounts[f"{u.scheme}://{host}:{port}"] = transport
        if u.port is None:
            mounts[f"{u.scheme}://{host}"] = transport
    return mounts
