"""The Celery dispatcher: delivery messages through Celery / kombu to Redis or RabbitMQ, and the broker
queues' depths. With :mod:`worker.celery_app`, :mod:`worker.kombu_redis` and :mod:`worker.tasks` the only
modules that import Celery or kombu.

Sending on Redis: a message to the anonymous exchange is an LPUSH onto the list named like the queue, so
``send_many`` builds each message itself — Celery's task protocol 2 in kombu's Redis envelope, exactly what
``send_task`` would push (a test compares the two) — and LPUSHes the whole batch in one pipelined round
trip. Building the message through Celery and kombu (routing, option merging, serializer registry, body
encoding, per-message publish bookkeeping) cost about two thirds of ``publish_many``'s time; this path
does the same in a few microseconds a message. Elsewhere (RabbitMQ, or when Celery should emit
``task-sent`` events) the batch goes through one kombu producer in its batched mode, the queue declared
as the worker declares it. A broker error becomes :class:`~worker.dispatch.BrokerUnavailable`.

Queues: a small fixed set (:mod:`worker.routing`): ``grades``, shared by every destination, and
``grades.<group>`` per dedicated group. A destination's depth is its queue's depth (shared with the other
destinations of that queue: the backlog a message of it waits behind).

Depth: on Redis the length of each queue's list, summed over kombu's priority lists of it
(``<queue>\\x06\\x16<p>`` for priority p > 0); on RabbitMQ the ready-message count of each quorum queue,
read with a passive ``queue.declare`` (it neither creates nor changes the queue; the number
``rabbitmqctl list_queues messages_ready`` and KEDA's RabbitMQ scaler read). Messages a worker already
took but did not acknowledge are not counted: the depth is the backlog *waiting* for a worker. A queue
never declared has depth 0; when RabbitMQ does not answer the depths are unknown (``{}``: the gauge is
left out of the scrape, alert ``GradesyncQueueDepthMissing``).
"""

from __future__ import annotations

import base64
import functools
import json
import os
from collections.abc import Iterable, Sequence
from json.encoder import encode_basestring_ascii as _quote
from typing import Any

import redis
import structlog
from celery import Celery
from celery.utils.nodenames import anon_nodename
from kombu.exceptions import OperationalError
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as RedisChannel

from worker.celery_app import make_client_app
from worker.connections import is_amqp_url, redis_client
from worker.dispatch import BrokerUnavailable, Delivery
from worker.keys import DELIVER_TASK, SHARED_QUEUE, Keys
from worker.settings import Settings, is_redis_url, without_credentials

log = structlog.get_logger("gradesync.dispatch")

_NOT_FOUND = 404
#: messages per LPUSH command
PUSH_CHUNK = 1000
#: the third element of a protocol-2 body: no callbacks, errbacks, chain or chord
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def _template(value: Any, fields: Iterable[str]) -> str:
    """``value`` as JSON, made a ``str.format`` template: each string ``"@@name@@"`` in it becomes ``{name}``
    (the caller passes it already quoted), every other brace is escaped."""
    template = json.dumps(value).replace("{", "{{").replace("}", "}}")
    for name in fields:
        template = template.replace(f'"@@{name}@@"', f"{{{name}}}")
    return template


def _uuid4() -> str:
    """A random (version 4) UUID string, as ``str(uuid.uuid4())`` makes it, in a third of the time."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


@functools.lru_cache(maxsize=1024)
def _envelope(destination: str, origin: str, reply_to: str, queue: str) -> tuple[str, str, str]:
    """(list name, the message's JSON as a ``str.format`` template of what changes per message, the body's
    template) for one destination, origin and reply-to.

    Why: publishing builds one message per event, and building the nested dicts and dumping them was about
    a fifth of ``publish_many``; what differs between two messages to one queue is four strings.
    """
    kwargsrepr = repr({"destination": destination})
    message = {
        "body": "@@body@@",
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": DELIVER_TASK, "id": "@@id@@", "shadow": f"{DELIVER_TASK}:{destination}",
            "eta": None, "expires": None, "group": None, "group_index": None, "retries": 0,
            "timelimit": [None, None], "root_id": "@@id@@", "parent_id": None, "argsrepr": "@@args@@",
            "kwargsrepr": kwargsrepr, "origin": origin, "ignore_result": True, "replaced_task_nesting": 0,
            "stamped_headers": None, "stamps": {},
        },
        "properties": {
            "correlation_id": "@@id@@", "reply_to": reply_to, "argsrepr": "@@args@@",
            "kwargsrepr": kwargsrepr, "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0, "body_encoding": "base64", "delivery_tag": "@@tag@@",
        },
    }
    body = [["@@event@@"], {"token": "@@token@@", "destination": destination}, _EMBED]
    return queue, _template(message, ("body", "id", "args", "tag")), _template(body, ("event", "token"))


def redis_message(delivery: Delivery, *, origin: str, reply_to: str, queue: str = SHARED_QUEUE) -> tuple[str, str]:
    """(list name, payload) of one delivery message on a Redis broker: Celery's task protocol 2 in
    kombu's Redis envelope, as ``send_task(..., exchange="", ignore_result=True, shadow=...)`` pushes it
    (``tests/integration/test_dispatch_celery.py`` compares the two). Strings are quoted by the encoder
    ``json.dumps`` itself uses."""
    queue, template, body = _envelope(delivery.destination, origin, reply_to, queue)
    event = _quote(delivery.event_id)
    encoded = base64.b64encode(body.format(event=event, token=_quote(delivery.token)).encode()).decode()
    task_id = _quote(_uuid4())
    payload = template.format(body=_quote(encoded), id=task_id, args=_quote(repr([delivery.event_id])),
                              tag=_quote(_uuid4()))
    return queue, payload


def priority_lists(queue: str) -> list[str]:
    """The Redis lists kombu keeps one queue's messages in (one per priority step)."""
    return [queue if step == 0 else f"{queue}{RedisChannel.sep}{step}" for step in PRIORITY_STEPS]


def redis_queue_depths(broker: redis.Redis, queues: Iterable[str]) -> dict[str, int]:
    """LLEN of each broker queue (all of kombu's priority lists of it), one round trip."""
    names = list(queues)
    n = len(PRIORITY_STEPS)
    with broker.pipeline(transaction=False) as pipe:
        for name in names:
            for key in priority_lists(name):
                pipe.llen(key)
        lengths = pipe.execute()
    return {name: sum(int(x) for x in lengths[i * n : (i + 1) * n]) for i, name in enumerate(names)}


def amqp_queue_depths(app: Celery, queues: Iterable[str]) -> dict[str, int]:
    """Ready messages per queue; ``{}`` when the broker cannot be read."""
    names = list(queues)
    depths: dict[str, int] = {}
    try:
        conn: Any = app.connection_for_read()  # kombu is untyped
        with conn:
            conn.ensure_connection(max_retries=1, timeout=3)
            channel = conn.channel()
            try:
                for name in names:
                    try:
                        ok = channel.queue_declare(queue=name, passive=True)
                        depths[name] = int(ok.message_count)
                    except Exception as exc:
                        if getattr(exc, "code", None) != _NOT_FOUND:
                            raise
                        depths[name] = 0  # never declared: nothing waits in it
                        channel = conn.channel()  # the broker closed the channel with the 404
            finally:
                channel.close()
    except Exception as exc:  # any kombu / amqp / socket error: the depths are unknown this scrape
        log.warning("amqp_queue_depth_failed", broker=without_credentials(str(app.conf.broker_url)),
                    error=type(exc).__name__)
        return {}
    return depths


class CeleryDispatcher:
    """Sends through a send-only Celery app (pooled, thread-safe); reads depths from the broker.

    ``client``: a Redis client to reuse for depths when the broker is the ledger's Redis."""

    def __init__(self, settings: Settings, *, app: Celery | None = None, client: redis.Redis | None = None) -> None:
        self.settings = settings
        self.app = app or make_client_app(settings)
        url = settings.broker
        self.kind = "redis" if is_redis_url(url) else "amqp" if is_amqp_url(url) else "other"
        self._own_broker = False
        self._state = client  # the state store's Redis: the registry's groups route (queue_of)
        self._own_state: redis.Redis | None = None
        self._routes: Any = None
        self.broker_redis: redis.Redis | None = None
        if self.kind == "redis":
            if client is not None and url == settings.redis_url:
                self.broker_redis = client
            else:
                self.broker_redis = redis_client(url, socket_timeout=5, socket_connect_timeout=3)
                self._own_broker = True

    def send(self, delivery: Delivery) -> None:
        self.send_many([delivery])

    def send_many(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        if self.broker_redis is not None and not self.app.conf.task_send_sent_event:
            self._push(self.broker_redis, deliveries)
            return
        self._publish(deliveries)

    def _push(self, broker: redis.Redis, deliveries: Sequence[Delivery]) -> None:
        """The batch in one pipelined round trip (no transaction: each message stands alone): one LPUSH of
        many values per queue — pushed in order, so the workers' BRPOP takes them in order."""
        origin, reply_to = anon_nodename(), str(self.app.thread_oid)
        by_queue: dict[str, list[str]] = {}
        for d in deliveries:
            queue, payload = redis_message(d, origin=origin, reply_to=reply_to, queue=self.queue_of(d.destination))
            by_queue.setdefault(queue, []).append(payload)
        try:
            with broker.pipeline(transaction=False) as pipe:
                for queue, payloads in by_queue.items():
                    for start in range(0, len(payloads), PUSH_CHUNK):
                        pipe.lpush(queue, *payloads[start : start + PUSH_CHUNK])
                pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BrokerUnavailable(str(exc)) from exc

    def _publish(self, deliveries: Sequence[Delivery]) -> None:
        """Through kombu: one producer, batched publishing."""
        routing: dict[str, Any] = {"exchange": "", "declare": []} if self.kind == "redis" else {}
        try:
            with self.app.producer_or_acquire() as producer, producer.batch(max_size=1000):
                for d in deliveries:
                    queue = self.queue_of(d.destination)
                    self.app.send_task(
                        DELIVER_TASK,
                        args=[d.event_id],
                        kwargs={"token": d.token, "destination": d.destination},
                        queue=queue,
                        routing_key=queue,
                        **routing,
                        producer=producer,
                        ignore_result=True,
                        shadow=f"{DELIVER_TASK}:{d.destination}",
                        argsrepr=repr([d.event_id]),
                        kwargsrepr=repr({"destination": d.destination}),
                    )
        except OperationalError as exc:
            raise BrokerUnavailable(str(exc)) from exc

    def queue_of(self, destination: str) -> str:
        """The broker queue of a destination (:mod:`worker.routing`): by its group, read from the live view
        of a worker or `gradesync serve`, else from the registry (or the file: :mod:`worker.registry.vendors`)."""
        if self._routes is None:
            from worker.registry.store import Registry
            from worker.registry.vendors import VendorIndex

            client = self._state
            if client is None:
                client = self._state = self._own_state = redis_client(self.settings.redis_url, socket_timeout=5,
                                                                      socket_connect_timeout=3)
            self._routes = VendorIndex(self.settings, Registry(client, Keys(self.settings.key_prefix)))
        return Keys.queue(self._routes.group(destination))

    def queue_depths(self, queues: Iterable[str]) -> dict[str, int]:
        """Messages waiting in each broker queue (``{}`` when unknown)."""
        if self.broker_redis is not None:
            return redis_queue_depths(self.broker_redis, queues)
        if self.kind == "amqp":
            return amqp_queue_depths(self.app, queues)
        return {}

    def depths(self, destinations: Iterable[str]) -> dict[str, int]:
        """Each destination's queue depth (each queue read once; a shared queue's depth for each of its
        destinations); a destination whose depth is unknown is left out."""
        names = list(destinations)
        queues = {name: self.queue_of(name) for name in names}
        depths = self.queue_depths(sorted(set(queues.values())))
        return {name: depths[q] for name, q in queues.items() if q in depths}

    def ping(self) -> None:
        if self.broker_redis is not None:
            self.broker_redis.ping()
            return
        conn: Any = self.app.connection_for_write()  # kombu is untyped
        with conn:
            conn.ensure_connection(max_retries=1, timeout=3)

    def close(self) -> None:
        if self._own_state is not None:
            self._own_state.close()
            self._own_state = None
        if self._own_broker and self.broker_redis is not None:
            self.broker_redis.close()
            self._own_broker = False
