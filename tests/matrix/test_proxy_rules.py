"""matrix_proxy.proxy_for: loopback never, NO_PROXY as httpx applies it (plus CIDR)."""

from __future__ import annotations

import pytest

from elematrix_tui.actions.matrix_proxy import proxy_for

P = "http://proxy.test:3128"


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
              "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HTTP_PROXY", P)
    monkeypatch.setenv("NO_PROXY", "example.com,.sub.org,10.0.0.0/8,192.0.2.7,"
                                   "http://198.51.100.1:8080")


@pytest.mark.parametrize(("url", "proxied"), [
    ("http://127.0.0.1:8008", False), ("http://127.5.6.7", False), ("http://[::1]:8008", False),
    ("http://localhost:8008", False), ("http://a.localhost", False),
    ("http://203.0.113.10", True), ("http://example.com", False),
    ("http://chat.example.com", False), ("http://wwwexample.com", True),
    ("http://sub.org", True), ("http://x.sub.org", False), ("http://10.1.2.3", False),
    ("http://192.0.2.7", False), ("http://192.0.2.8", True),
    ("http://198.51.100.1:8080", False), ("http://198.51.100.1", True),
    ("https://203.0.113.10", False),  # no HTTPS_PROXY set
])
def test_proxy_decision(url: str, proxied: bool) -> None:
    assert (proxy_for(url) == P) is proxied


def test_star_and_all_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "*")
    assert proxy_for("http://203.0.113.10") is None
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.setenv("ALL_PROXY", "proxy.test:8080")
    assert proxy_for("https://203.0.113.10") == "http://proxy.test:8080"
    assert proxy_for("http://127.0.0.1") is None
