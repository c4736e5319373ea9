"""The vendor client's connections over real HTTP: one keep-alive connection per delivery thread, reused
by that thread's requests, all closed with the client."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from worker.adapters.client import PerThreadTransport, VendorClient


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    peers: list[tuple[str, int]]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        server: _Server = self.server  # type: ignore[assignment]
        server.peers.append(self.client_address)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return None


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.peers = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_each_thread_reuses_its_own_connection(server: _Server) -> None:
    transport = PerThreadTransport()
    client = VendorClient(base_url=f"http://127.0.0.1:{server.server_address[1]}", transport=transport)
    answers: list[int] = []

    def work() -> None:
        for _ in range(20):
            answers.append(client.post("/api/scores", content=b"{}").status_code)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert answers == [204] * 80 and len(server.peers) == 80
    assert len({port for _, port in server.peers}) == 4  # one connection per thread, 20 requests each
    assert len(transport._all) == 4
    client.close()
    assert transport._all == []
