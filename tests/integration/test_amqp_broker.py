"""RabbitMQ as the broker (GRADESYNC_BROKER_URL=amqp://…), Redis as the store: publish, retry, deliver.

RabbitMQ is an optional broker, so this runs where one answers (GRADESYNC_TEST_AMQP_URL, else
guest:guest on localhost) and is skipped, with that reason, where none does.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest

from producers.publish import Publisher
from producers.settings import Settings, reset_settings
from tests.integration.conftest import Cluster
from tests.integration.test_pipeline import ti_event
from worker.sandbox.control import SandboxClient

pytestmark = pytest.mark.integration

AMQP_URL = os.environ.get("GRADESYNC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _rabbitmq_answers() -> bool:
    parts = urlsplit(AMQP_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _rabbitmq_answers(), reason=f"no RabbitMQ at {AMQP_URL.split('@')[-1]}")
def test_rabbitmq_broker_delivers_and_retries(cluster: Cluster, vendors: dict[str, SandboxClient]) -> None:
    queue_suffix = os.urandom(3).hex()  # RabbitMQ is shared: keep this run's queues apart
    cluster.destinations.write_text(cluster.destinations.read_text().replace("[destinations.ti]",
                                                                              f"[destinations.ti{queue_suffix}]"))
    dest = f"ti{queue_suffix}"
    reset_settings()  # the destinations file changed
    cluster.env["GRADESYNC_BROKER_URL"] = AMQP_URL
    cluster.settings = Settings(redis_url=cluster.redis_url, broker_url=AMQP_URL,
                                destinations_file=cluster.destinations, visibility_timeout=30)
    cluster.publisher = Publisher(cluster.settings)
    vendors["thoughtindustries"].fault(status=503, times=1)
    cluster.start_worker(concurrency=2)
    ids = cluster.publisher.publish_many([ti_event(destination=dest) for _ in range(3)])
    assert cluster.wait_for(ids) == dict.fromkeys(ids, "succeeded")
    assert sorted(cluster.store.ledger.load(i).attempts for i in ids) == [1, 1, 2]  # type: ignore[union-attr]
    assert len(vendors["thoughtindustries"].state()["activities"]) == 3
