"""The shutdown gate and the request-timeout cap (no I/O: httpx MockTransport)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from worker import shutdown
from worker.adapters.http import send


@pytest.fixture(autouse=True)
def _open_gate() -> Iterator[None]:
    shutdown.gate.reset()
    yield
    shutdown.gate.reset()


@pytest.mark.parametrize(("timeout", "grace", "expected"), [
    (10.0, 25.0, 10.0), (30.0, 25.0, 10.0), (3.0, 25.0, 3.0), (60.0, 65.0, 30.0), (10.0, 5.0, 1.0),
])
def test_the_request_timeout_is_capped_to_fit_the_grace(timeout: float, grace: float, expected: float) -> None:
    assert shutdown.request_timeout(timeout, grace) == expected


def test_no_request_is_sent_once_the_gate_is_closed() -> None:
    sent: list[httpx.Request] = []
    client = httpx.Client(transport=httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200)),
                          base_url="http://vendor.test")
    assert send(client, client.build_request("GET", "/a"), route="a.get").status_code == 200
    shutdown.gate.close(25.0)
    assert shutdown.gate.closed and shutdown.gate.deadline is not None
    with pytest.raises(shutdown.ShuttingDown, match=r"b\.post not sent"):
        send(client, client.build_request("POST", "/b"), route="b.post")
    assert [r.url.path for r in sent] == ["/a"]
