"""RabbitMQ as the broker (GRADESYNC_BROKER_URL=amqp://…), Redis as the store: quorum queues, publisher
confirms, retries, dead letters and requeue, kill -9 recovery, and the queue-depth gauge.

RabbitMQ is an optional broker, so this runs where one answers (GRADESYNC_TEST_AMQP_URL, else
guest:guest on localhost) and is skipped, with that reason, where none does. Each test session gets a
private vhost (made with ``rabbitmqctl`` when it is on the machine) so parallel runs never share a queue;
without ``rabbitmqctl`` the queues get a random suffix instead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from sandbox.control import SandboxClient
from tests.integration.conftest import Cluster
from tests.integration.test_pipeline import ti_event
from worker.dispatch.celery import CeleryDispatcher
from worker.ops.metrics import make_registry
from worker.ops.overview import OpsContext, compute_overview
from worker.publish import Publisher
from worker.settings import Settings, reset_settings

pytestmark = pytest.mark.integration

AMQP_URL = os.environ.get("GRADESYNC_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _rabbitmq_answers() -> bool:
    parts = urlsplit(AMQP_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout=1):
            return True
    except OSError:
        return False


needs_rabbitmq = pytest.mark.skipif(not _rabbitmq_answers(), reason=f"no RabbitMQ at {AMQP_URL.split('@')[-1]}")


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="session")
def amqp_vhost() -> Iterator[str | None]:
    """A private vhost for this session (None: no rabbitmqctl here, use the URL's vhost)."""
    if shutil.which("rabbitmqctl") is None or _rabbitmqctl("list_vhosts").returncode != 0:
        yield None
        return
    user = urlsplit(AMQP_URL).username or "guest"
    vhost = f"gradesync-test-{os.getpid()}-{os.urandom(3).hex()}"
    assert _rabbitmqctl("add_vhost", vhost).returncode == 0
    assert _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*").returncode == 0
    yield vhost
    _rabbitmqctl("delete_vhost", vhost)


def _url_with_vhost(vhost: str) -> str:
    parts = urlsplit(AMQP_URL)
    return urlunsplit((parts.scheme, parts.netloc, "/" + vhost, parts.query, ""))


@pytest.fixture
def amqp(cluster: Cluster, amqp_vhost: str | None) -> Iterator[tuple[Cluster, str, str]]:
    """The cluster switched to RabbitMQ; yields (cluster, TI destination name, vhost or '')."""
    url = _url_with_vhost(amqp_vhost) if amqp_vhost else AMQP_URL
    suffix = os.urandom(3).hex()  # even in a private vhost: tests of one session must not share queues
    cluster.destinations.write_text(cluster.destinations.read_text().replace("[destinations.ti]",
                                                                              f"[destinations.ti{suffix}]"))
    reset_settings()  # the destinations file changed
    cluster.env["GRADESYNC_BROKER_URL"] = url
    cluster.publisher.close()
    cluster.settings = Settings(redis_url=cluster.redis_url, broker_url=url,
                                destinations_file=cluster.destinations, visibility_timeout=30)
    cluster.publisher = Publisher(cluster.settings)
    yield cluster, f"ti{suffix}", amqp_vhost or ""


def _queue_types(vhost: str) -> dict[str, str]:
    out = _rabbitmqctl("list_queues", "-p", vhost, "name", "type", "--formatter", "json")
    assert out.returncode == 0, out.stderr
    return {q["name"]: q["type"] for q in json.loads(out.stdout)}


@needs_rabbitmq
def test_rabbitmq_broker_delivers_and_retries_on_quorum_queues(
    amqp: tuple[Cluster, str, str], vendors: dict[str, SandboxClient]
) -> None:
    cluster, dest, vhost = amqp
    vendors["thoughtindustries"].fault(status=503, times=1)
    cluster.start_worker(concurrency=2)
    ids = cluster.publisher.publish_many([ti_event(destination=dest) for _ in range(3)])
    assert cluster.wait_for(ids) == dict.fromkeys(ids, "succeeded")
    assert sorted(cluster.store.ledger.load(i).attempts for i in ids) == [1, 1, 2]  # type: ignore[union-attr]
    assert len(vendors["thoughtindustries"].state()["activities"]) == 3
    if vhost:  # the queue is replicated (quorum), not a classic queue
        assert _queue_types(vhost)["grades"] == "quorum"  # the one shared queue
    dispatcher = cluster.publisher.dispatcher
    assert isinstance(dispatcher, CeleryDispatcher) and dispatcher.kind == "amqp"
    with dispatcher.app.connection_for_write() as conn:  # publisher confirms are on
        assert conn.default_channel.connection.confirm_publish is True


@needs_rabbitmq
def test_rabbitmq_dead_letter_then_requeue_delivers(
    amqp: tuple[Cluster, str, str], vendors: dict[str, SandboxClient]
) -> None:
    cluster, dest, _ = amqp
    vendors["thoughtindustries"].fault(status=503, times=3)  # max_attempts = 3: all fail
    cluster.start_worker(concurrency=2)
    [eid] = cluster.publisher.publish_many([ti_event(destination=dest)])
    assert cluster.wait_for([eid]) == {eid: "dead_lettered"}
    assert [h["outcome"] for h in cluster.store.ledger.history(eid)] == ["retry", "retry", "dead_letter"]
    ctx = OpsContext(cluster.settings, store=cluster.store)
    report = ctx.dlq.requeue([eid], actor="test")  # re-sent through RabbitMQ to the same quorum queue
    assert report.done == 1
    assert cluster.wait_for([eid]) == {eid: "succeeded"}
    assert len(vendors["thoughtindustries"].state()["activities"]) == 1


@needs_rabbitmq
def test_rabbitmq_kill_9_mid_batch_loses_nothing(
    amqp: tuple[Cluster, str, str], vendors: dict[str, SandboxClient]
) -> None:
    cluster, dest, _ = amqp
    vendors["thoughtindustries"].fault(latency=0.4, times=-1)  # the worker is mid-batch when killed
    cluster.start_worker(concurrency=4)
    learners = [str(uuid.uuid4()) for _ in range(16)]
    ids = cluster.publisher.publish_many([ti_event(destination=dest, learner_id=lid) for lid in learners])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = [cluster.state(e) for e in ids]
        if states.count("succeeded") >= 2 and "queued" in states:
            break
        time.sleep(0.05)
    cluster.stop_workers(signal.SIGKILL)
    assert any(cluster.state(e) != "succeeded" for e in ids)
    vendors["thoughtindustries"].clear_faults()
    cluster.start_worker(concurrency=4)  # RabbitMQ re-delivered the dead connection's unacked messages
    assert set(cluster.wait_for(ids, {"succeeded", "superseded"}, timeout=120).values()) <= {"succeeded"}
    # at-least-once: an attempt cut by the kill may have reached the vendor, but none is lost
    assert {a["learnerId"] for a in vendors["thoughtindustries"].state()["activities"]} == set(learners)


@needs_rabbitmq
def test_rabbitmq_queue_depth_gauge(amqp: tuple[Cluster, str, str]) -> None:
    cluster, dest, _ = amqp
    cluster.publisher.publish_many([ti_event(destination=dest) for _ in range(5)])  # no worker runs
    ctx = OpsContext(cluster.settings, store=cluster.store)
    rows = {row.destination: row for row in compute_overview(ctx, windows=False)}
    assert rows[dest].queue_depth == 5
    assert rows["lt"].queue_depth == 5  # the shared queue: what lt's messages would wait behind
    dispatcher = cluster.publisher.dispatcher
    assert isinstance(dispatcher, CeleryDispatcher)
    assert dispatcher.queue_depths(["grades.never"]) == {"grades.never": 0}  # never declared: empty, no error
    text = "\n".join(f"{s.name}{s.labels} {s.value}" for m in make_registry(ctx).collect() for s in m.samples)
    assert f"gradesync_queue_depth{{'destination': '{dest}'}} 5" in text


def test_unreachable_rabbitmq_leaves_the_depth_gauge_out(cluster: Cluster) -> None:
    """Runs everywhere: nothing listens on port 1, so the depth is unknown, not 0 (and the scrape works)."""
    settings = Settings(redis_url=cluster.redis_url, broker_url="amqp://guest:guest@127.0.0.1:1//",
                        destinations_file=cluster.destinations)
    ctx = OpsContext(settings, store=cluster.store)
    rows = compute_overview(ctx, windows=False)
    assert rows and all(row.queue_depth is None for row in rows)
    samples = {m.name: m.samples for m in make_registry(ctx).collect()}
    assert samples["gradesync_queue_depth"] == []  # no sample: absent() fires GradesyncQueueDepthMissing
    assert samples["gradesync_dead_letters"]
