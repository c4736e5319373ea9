"""The vendor HTTP client: the same URLs as a plain httpx.Client, and no cookies carried between requests;
a destination's view of the process's one client (DestinationClient) merges URLs exactly as httpx does."""

from __future__ import annotations

import httpx
import pytest

from worker.adapters import client as vendor_http


def _client(seen: list[httpx.Request], base_url: str = "https://lms.example/api/v1") -> vendor_http.VendorClient:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"Set-Cookie": "session=abc; Path=/"}, json={})

    return vendor_http.VendorClient(base_url=base_url, transport=httpx.MockTransport(answer))


PATHS = [
    "/api/lineitems/https%3A%2F%2Flms.example%2Fline_items%2F7/scores",
    "users/42/grades?expand=item",
    "https://other.example/token",
    "/",
]


@pytest.mark.parametrize("path", PATHS)
def test_the_merged_url_is_httpx_own(path: str) -> None:
    plain = httpx.Client(base_url="https://lms.example/api/v1")
    client = _client([])
    first = client.build_request("POST", path).url
    again = client.build_request("POST", path).url  # from the cache
    assert first == again == plain.build_request("POST", path).url


@pytest.mark.parametrize("base", ["https://lms.example/api/v1", "https://lms.example/api/v1/", "http://h:8080"])
@pytest.mark.parametrize("path", PATHS)
def test_a_destination_view_merges_as_httpx_does(base: str, path: str) -> None:
    plain = httpx.Client(base_url=base)
    view = vendor_http.DestinationClient(base, 7.5, client=_client([]))
    first = view.build_request("POST", path)
    again = view.build_request("POST", path)  # from the process's cache
    assert first.url == again.url == plain.build_request("POST", path).url
    assert first.extensions["timeout"] == httpx.Timeout(7.5).as_dict()  # the destination's own timeout


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


def test_make_client_is_a_view_of_the_one_shared_client(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.vendors.ltiaas import LtiaasDestination

    dest = LtiaasDestination(name="d", vendor="ltiaas", base_url="https://ltiaas.example", api_key_env="X_KEY")
    other = LtiaasDestination(name="e", vendor="ltiaas", base_url="https://other.example/x", api_key_env="X_KEY")
    client, second = vendor_http.make_client(dest), vendor_http.make_client(other, timeout=3.0)
    assert isinstance(client, vendor_http.DestinationClient) and client._client is second._client
    assert client._client is vendor_http.shared_client()
    assert client.build_request("GET", "/api/x").url == httpx.URL("https://ltiaas.example/api/x")
    assert second.build_request("GET", "y").url == httpx.URL("https://other.example/x/y")
    assert second.build_request("GET", "y").extensions["timeout"] == httpx.Timeout(3.0).as_dict()
    monkeypatch.setattr(vendor_http, "URL_CACHE_SIZE", 3)
    for n in range(10):
        assert client.build_request("GET", f"/items/{n}").url.path == f"/items/{n}"
    assert len(vendor_http._MERGED) <= 3  # bounded for the whole process, not per destination
    client.close()  # the shared client stays open for every other destination
    assert not vendor_http.shared_client().is_closed


def test_make_client_with_a_transport_is_a_client_of_its_own() -> None:
    from worker.vendors.ltiaas import LtiaasDestination

    dest = LtiaasDestination(name="d", vendor="ltiaas", base_url="https://ltiaas.example", api_key_env="X_KEY")
    client = vendor_http.make_client(dest, transport=httpx.MockTransport(lambda r: httpx.Response(204)))
    assert isinstance(client, vendor_http.VendorClient)
    assert client.build_request("GET", "/api/x").url == httpx.URL("https://ltiaas.example/api/x")
