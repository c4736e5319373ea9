"""The vendor HTTP client: the same URLs as a plain httpx.Client, and no cookies carried between requests."""

from __future__ import annotations

import httpx
import pytest

from worker.adapters import http as vendor_http


def _client(seen: list[httpx.Request], base_url: str = "https://lms.example/api/v1") -> vendor_http.VendorClient:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"Set-Cookie": "session=abc; Path=/"}, json={})

    return vendor_http.VendorClient(base_url=base_url, transport=httpx.MockTransport(answer))


@pytest.mark.parametrize("path", [
    "/api/lineitems/https%3A%2F%2Flms.example%2Fline_items%2F7/scores",
    "users/42/grades?expand=item",
    "https://other.example/token",
    "/",
])
def test_the_merged_url_is_httpx_own(path: str) -> None:
    plain = httpx.Client(base_url="https://lms.example/api/v1")
    client = _client([])
    first = client.build_request("POST", path).url
    again = client.build_request("POST", path).url  # from the cache
    assert first == again == plain.build_request("POST", path).url


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vendor_http, "URL_CACHE_SIZE", 3)
    client = _client([])
    for n in range(10):
        assert client.build_request("GET", f"/items/{n}").url.path == f"/api/v1/items/{n}"
    assert len(client._merged) <= 3


def test_no_cookie_is_kept_or_sent() -> None:
    seen: list[httpx.Request] = []
    client = _client(seen)
    client.get("/a")
    client.get("/b")
    assert len(client.cookies) == 0
    assert "cookie" not in seen[1].headers
    with pytest.raises(AttributeError):
        client.cookies = {"session": "x"}


def test_make_client_builds_a_vendor_client() -> None:
    from worker.vendors.ltiaas import LtiaasDestination

    dest = LtiaasDestination(name="d", vendor="ltiaas", base_url="https://ltiaas.example", api_key_env="X_KEY")
    client = vendor_http.make_client(dest)
    assert isinstance(client, vendor_http.VendorClient)
    assert client.build_request("GET", "/api/x").url == httpx.URL("https://ltiaas.example/api/x")
