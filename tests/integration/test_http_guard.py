"""The ops app's guard over real HTTP (uvicorn on a free port, real Redis): authentication before the body
is read, the body limit on every route, revocable sessions, the failed-authentication limit and its metric,
and X-Forwarded-* believed only from trusted proxies."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from tests.integration.conftest import Cluster
from worker.ops.api import create_app
from worker.ops.serve import ServerThread
from worker.settings import ConfigError

pytestmark = pytest.mark.integration

TOKEN = "it-guard-token-5e8b1d3f7a9c2e4b6d8f0a1c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HUGE = 78 * 1024 * 1024


@pytest.fixture
def server(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    over: dict[str, Any] = getattr(request, "param", {})
    settings = cluster.settings.model_copy(update={"api_token": SecretStr(TOKEN), "max_body_bytes": 4096, **over})
    s = ServerThread(create_app(settings)).start()
    yield s
    s.stop()


def _raw_request(server: ServerThread, head: str, body_part: bytes) -> tuple[int, bytes]:
    """Send ``head`` and only ``body_part`` of the announced body, then read the answer; the server must
    answer without waiting for the rest (the socket timeout is generous, not a timed assertion)."""
    with socket.create_connection((server.host, server.port), timeout=60) as sock:
        sock.sendall(head.encode() + b"\r\n" + body_part)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data else 0
    return status, data


def test_an_unauthenticated_78_mb_body_is_refused_after_its_headers(server: ServerThread) -> None:
    for path in ("/v1/dead-letters/requeue", "/v1/events", "/ui/api/dead-letters/purge"):
        head = (f"POST {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {HUGE}\r\n")
        status, answer = _raw_request(server, head, b'{"event_ids": [' + b" " * 65536)
        assert status == 401, (path, answer[:300])
        # and chunked (no Content-Length): still refused before any body byte is read
        head = (f"POST {path} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n")
        status, answer = _raw_request(server, head, b"10000\r\n" + b" " * 65536 + b"\r\n")
        assert status == 401, (path, answer[:300])


def test_every_route_has_a_body_limit(server: ServerThread) -> None:
    head = (f"POST /v1/dead-letters/requeue HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {HUGE}\r\n")
    status, _ = _raw_request(server, head, b" " * 1024)
    assert status == 413  # refused on the declared length, authenticated or not

    def chunks() -> Iterator[bytes]:  # chunked: counted while it streams
        yield b'{"event_ids": ['
        for _ in range(20):
            yield b" " * 1000
        yield b"]}"

    with httpx.Client(base_url=server.url, timeout=60) as http:
        json_headers = {**AUTH, "Content-Type": "application/json"}
        r = http.post("/v1/dead-letters/requeue", content=chunks(), headers=json_headers)
        assert r.status_code == 413 and "exceeds 4096 bytes" in r.json()["detail"]
        r = http.post("/v1/events", content=chunks(), headers=json_headers)
        assert r.status_code == 413 and r.json()["errors"][0]["field"] == "(body)"
        r = http.post("/login", content=b"token=" + b"x" * 9000,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 413
        assert http.request("GET", "/healthz", content=b"x" * 9000).status_code == 413
        ok = http.post("/v1/dead-letters/requeue", json={"event_ids": [], "dry_run": True}, headers=AUTH)
        assert ok.status_code != 413


def _login(http: httpx.Client) -> str:
    assert http.post("/login", data={"token": TOKEN}).status_code == 303
    page = http.get("/")
    match = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert match
    return match.group(1)


def test_logout_revokes_the_session_server_side(server: ServerThread) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        csrf = _login(browser)
        stolen = browser.cookies["gradesync_session"]
        assert httpx.get(f"{server.url}/ui/api/overview", cookies={"gradesync_session": stolen}).status_code == 200
        assert browser.post("/logout", data={"csrf_token": csrf}).status_code == 303
    # a copy of the cookie taken before logout is dead too (the id left Redis)
    assert httpx.get(f"{server.url}/ui/api/overview", cookies={"gradesync_session": stolen}).status_code == 401
    assert httpx.get(f"{server.url}/", cookies={"gradesync_session": stolen}).status_code == 303


@pytest.mark.parametrize("server", [{"auth_fail_limit": 3, "trusted_proxies": "127.0.0.1/32"}], indirect=True)
def test_failed_authentication_is_rate_limited_per_client_with_a_metric(server: ServerThread) -> None:
    guesser = {"X-Forwarded-For": "203.0.113.7"}  # through the (trusted) local proxy
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for n in range(3):
            r = http.get("/v1/overview", headers={"Authorization": f"Bearer guess-{n}", **guesser})
            assert r.status_code == 401
        blocked = http.get("/v1/overview", headers={**AUTH, **guesser})  # even the right token, now
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
        login = http.post("/login", data={"token": TOKEN}, headers=guesser)
        assert login.status_code == 429
        # another client is not affected; its wrong logins count too
        other = {"X-Forwarded-For": "198.51.100.9"}
        assert http.get("/v1/overview", headers={**AUTH, **other}).status_code == 200
        for _ in range(3):
            assert http.post("/login", data={"token": "nope"}, headers=other).status_code == 401
        assert http.post("/login", data={"token": TOKEN}, headers=other).status_code == 429
        assert http.get("/v1/overview", headers={**AUTH, "X-Forwarded-For": "192.0.2.1"}).status_code == 200
        metrics = http.get("/metrics").text
    assert 'gradesync_auth_failures_total{kind="bearer"} 3.0' in metrics
    assert 'gradesync_auth_failures_total{kind="login"} 3.0' in metrics
    assert re.search(r'gradesync_auth_failures_total\{kind="rate_limited"\} [2-9]', metrics)


@pytest.mark.parametrize("server", [{"auth_fail_limit": 2}], indirect=True)
def test_forwarded_headers_of_an_untrusted_peer_are_ignored(server: ServerThread) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for n in range(2):
            spoof = {"Authorization": f"Bearer guess-{n}", "X-Forwarded-For": f"192.0.2.{n + 10}"}
            assert http.get("/v1/overview", headers=spoof).status_code == 401
        # a new X-Forwarded-For does not give the guesser a fresh budget: the peer (127.0.0.1) is blocked
        assert http.get("/v1/overview", headers={**AUTH, "X-Forwarded-For": "192.0.2.99"}).status_code == 429


def test_the_origin_check_believes_x_forwarded_host_only_from_a_trusted_proxy(cluster: Cluster) -> None:
    def run(trusted: str) -> int:
        settings = cluster.settings.model_copy(update={"api_token": SecretStr(TOKEN), "trusted_proxies": trusted})
        s = ServerThread(create_app(settings)).start()
        try:
            with httpx.Client(base_url=s.url, timeout=30) as browser:
                csrf = _login(browser)
                r = browser.post("/ui/api/dead-letters/requeue", json={"all": True, "dry_run": True},
                                 headers={"X-CSRF-Token": csrf, "Origin": "https://grades.example.org",
                                          "X-Forwarded-Host": "grades.example.org"})
                return r.status_code
        finally:
            s.stop()

    assert run("") == 403  # a client's own X-Forwarded-Host does not make a foreign Origin "same origin"
    assert run("127.0.0.0/8") == 200  # behind a trusted proxy it is the public host


@pytest.mark.parametrize("token", ["   ", "\t\n", "short-token-123", "x" * 31, f" {'y' * 40} "])
def test_a_short_or_blank_token_is_refused_at_start_up(cluster: Cluster, token: str) -> None:
    with pytest.raises(ConfigError, match="GRADESYNC_API_TOKEN"):
        create_app(cluster.settings.model_copy(update={"api_token": SecretStr(token)}))


def test_a_bad_trusted_proxies_value_is_refused(cluster: Cluster) -> None:
    settings = cluster.settings.model_copy(update={"api_token": SecretStr(TOKEN),
                                                   "trusted_proxies": "10.0.0.0/8, nope"})
    with pytest.raises(ConfigError, match="GRADESYNC_TRUSTED_PROXIES"):
        create_app(settings)
