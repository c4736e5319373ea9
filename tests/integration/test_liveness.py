"""Liveness that survives a Redis outage: a real worker keeps its heartbeat file fresh while its Redis is
down (so Kubernetes does not restart it), and the web app's /livez answers 200 while /healthz says 503."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sandbox import Running
from sandbox.control import SandboxClient
from sandbox.localredis import EmbeddedRedis
from tests.integration.conftest import Cluster
from tests.integration.test_pipeline import ti_event
from worker import heartbeat
from worker.ops.api import create_app
from worker.settings import Settings

pytestmark = pytest.mark.integration


def _wait(predicate: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_worker_heartbeat_and_livez_stay_up_during_a_redis_outage(
    tmp_path: Path, sandbox: dict[str, Running], vendors: dict[str, SandboxClient]
) -> None:
    server = EmbeddedRedis.start(tmp_path / "redis", persist=False)  # private: this test stops it
    (tmp_path / "c").mkdir()
    cluster = Cluster(server.url, tmp_path / "c", sandbox)
    beat = tmp_path / "hb" / "heartbeat"
    cluster.env["GRADESYNC_HEARTBEAT_FILE"] = str(beat)
    try:
        cluster.start_worker(concurrency=2)
        [eid] = cluster.publisher.publish_many([ti_event()])
        assert cluster.wait_for([eid]) == {eid: "succeeded"}
        _wait(beat.exists, "the first heartbeat")
        assert heartbeat.main(["worker", str(beat)]) == 0

        settings = Settings(redis_url=server.url, destinations_file=cluster.destinations, api_token="t" * 32)
        with TestClient(create_app(settings)) as web:
            assert web.get("/healthz").status_code == 200
            server.stop()  # the outage
            down_at = time.time()
            assert web.get("/healthz").status_code == 503  # readiness: out of the Service
            assert web.get("/livez").status_code == 200  # liveness: not restarted
        # the worker beats on while its Redis is gone (the heartbeat never talks to Redis)
        _wait(lambda: beat.stat().st_mtime > down_at + 1, "a heartbeat after the outage began", timeout=45)
        assert cluster.workers[0].poll() is None
        assert heartbeat.main(["worker", str(beat)]) == 0
    finally:
        cluster.stop_workers()
        cluster.publisher.close()
        server.stop()
