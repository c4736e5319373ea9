"""Publishing grade events: validate everything, record each event in Redis, then queue one delivery
message per event on its destination's queue.

The event itself (with its per-event credentials) is kept in Redis, not in the broker message: the
message carries only the event id, its destination and a dispatch token, so Flower and broker tooling
never show a secret. ``publish_many`` does both steps in pipelined round trips (one Redis pipeline for
the records, kombu's batched publishing for the messages), not one round trip per event.

A short Redis or broker blip is retried (tenacity); when it lasts, :class:`PublishError` is raised and
says which events were confirmed published (only those).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from producers.connections import broker_transport_options, broker_url, is_amqp_url, redis_client
from producers.crypto import WireCipher
from producers.events import DEFAULT_MAX_FUTURE_SKEW, GradeEvent, format_errors
from producers.keys import DELIVER_TASK, Keys
from producers.queues import broker_queues
from producers.settings import Settings, get_settings, is_redis_url, without_credentials

_TRANSIENT = (redis.ConnectionError, redis.TimeoutError, OperationalError, ConnectionError, TimeoutError)

# Records the event unless it exists (and indexes it in `queued` for the stranded-event sweeper of
# worker.sweeper, should this process die before its message is queued); returns {created, token, state}.
_REGISTER = """
local existing = redis.call('HMGET', KEYS[1], 'token', 'state')
if existing[2] then return {0, existing[1], existing[2]} end
redis.call('HSET', KEYS[1], 'wire', ARGV[1], 'destination', ARGV[2], 'vendor', ARGV[3], 'token', ARGV[4],
  'state', 'queued', 'attempts', 0, 'created_at', ARGV[5], 'updated_at', ARGV[5], 'learner_id', ARGV[7],
  'occurred_at', ARGV[8])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[9])
return {1, ARGV[4], 'queued'}
"""


class PublishError(RuntimeError):
    """Publishing failed; ``published`` lists the event ids that were confirmed published."""

    def __init__(self, message: str, published: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.published = list(published)


class InvalidEvents(ValueError):
    """Some events are invalid; nothing was published. ``errors`` maps item index -> reasons."""

    def __init__(self, errors: dict[int, list[str]]) -> None:
        self.errors = errors
        lines = [f"item {i}: {reason}" for i, reasons in sorted(errors.items()) for reason in reasons]
        super().__init__("invalid grade events, nothing published:\n" + "\n".join(lines))


@dataclass(frozen=True)
class Delivery:
    """One delivery message: run ``event_id``'s next attempt if its ledger still holds ``token``."""

    event_id: str
    destination: str
    token: str


def new_token() -> str:
    return secrets.token_hex(8)


def make_client_app(settings: Settings) -> Celery:
    """A Celery app that only sends delivery messages (the worker's app consumes them)."""
    app = Celery("gradesync-producer", broker=broker_url(settings.broker), set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"visibility_timeout": settings.visibility_timeout,
                                  **broker_transport_options(settings.broker)},
        broker_connection_retry_on_startup=True,
        # on RabbitMQ declared exactly as the worker declares them (quorum queues: producers.queues); a
        # Redis list needs no declaration
        task_queues=broker_queues(settings.destinations(), settings.broker) if is_amqp_url(settings.broker) else None,
        task_create_missing_queues=True,
    )
    return app


def dispatch(app: Celery, deliveries: Sequence[Delivery]) -> None:
    """Queue the delivery messages, batched into pipelined round trips where the broker allows it."""
    if not deliveries:
        return
    # On Redis a message to the anonymous exchange is an LPUSH onto the list named like the queue: no
    # binding is needed, so skip kombu's per-message declare. AMQP needs the queue declared (kombu caches it).
    on_redis = is_redis_url(str(app.conf.broker_url or ""))
    routing: dict[str, Any] = {"exchange": "", "declare": []} if on_redis else {}
    with app.producer_or_acquire() as producer, producer.batch(max_size=1000):
        for d in deliveries:
            app.send_task(
                DELIVER_TASK,
                args=[d.event_id],
                kwargs={"token": d.token, "destination": d.destination},
                queue=Keys.queue(d.destination),
                routing_key=Keys.queue(d.destination),
                **routing,
                producer=producer,
                ignore_result=True,
                shadow=f"{DELIVER_TASK}:{d.destination}",
                argsrepr=repr([d.event_id]),
                kwargsrepr=repr({"destination": d.destination}),
            )


def _fingerprint(item: GradeEvent | Mapping[str, Any], event: GradeEvent) -> str:
    """What makes two items with one event id "the same event": the input as given (so a defaulted
    ``occurred_at`` does not tell identical items apart), or the event's wire form."""
    if isinstance(item, Mapping):
        try:
            return json.dumps(item, sort_keys=True, default=repr)
        except (TypeError, ValueError):
            pass
    return event.to_wire()


def duplicate_errors(pairs: Iterable[tuple[int, GradeEvent | Mapping[str, Any], GradeEvent]]) -> dict[int, str]:
    """Items reusing an earlier item's ``event_id`` with different content: index -> reason.

    ``pairs`` are (index, the item as given, its validated event). Identical duplicates pass (publishing
    is idempotent per event id); a different one would otherwise be silently dropped.
    """
    first: dict[Any, tuple[int, GradeEvent | Mapping[str, Any], GradeEvent]] = {}
    prints: dict[int, str] = {}  # fingerprints, computed only for ids that repeat
    errors: dict[int, str] = {}
    for index, item, event in pairs:
        seen = first.setdefault(event.event_id, (index, item, event))
        if seen[0] == index:
            continue
        if seen[0] not in prints:
            prints[seen[0]] = _fingerprint(seen[1], seen[2])
        if _fingerprint(item, event) != prints[seen[0]]:
            errors[index] = (f"event_id: {event.event_id} is used by an earlier item ({seen[0]}) with different "
                             "content; the batch is refused")
    return errors


def validation_context(settings: Settings) -> dict[str, Any]:
    """The context every producer validates events with: the destinations and the allowed clock skew."""
    return {"vendors": settings.vendors(), "max_future_skew": settings.max_future_skew_seconds}


def validate_all(
    items: Iterable[GradeEvent | Mapping[str, Any]], *, vendors: Mapping[str, str] | None = None,
    max_future_skew: float | None = DEFAULT_MAX_FUTURE_SKEW,
) -> list[GradeEvent]:
    """Validate every item first; raise :class:`InvalidEvents` listing each bad one (and every item that
    reuses an earlier item's event id with different content)."""
    ctx: dict[str, Any] = {"max_future_skew": max_future_skew}
    if vendors is not None:
        ctx["vendors"] = dict(vendors)
    events: list[GradeEvent] = []
    pairs: list[tuple[int, GradeEvent | Mapping[str, Any], GradeEvent]] = []
    errors: dict[int, list[str]] = {}
    for i, item in enumerate(items):
        if isinstance(item, GradeEvent):
            events.append(item)
            pairs.append((i, item, item))
            continue
        if not isinstance(item, Mapping):
            errors[i] = ["(event): must be a JSON object"]
            continue
        try:
            event = GradeEvent.model_validate(item, context=ctx)
        except ValidationError as exc:
            errors[i] = format_errors(exc)
            continue
        events.append(event)
        pairs.append((i, item, event))
    for i, reason in duplicate_errors(pairs).items():
        errors.setdefault(i, []).append(reason)
    if errors:
        raise InvalidEvents(errors)
    return events


class Publisher:
    """Publishes events with one Redis client and one broker client (both pooled, thread-safe)."""

    def __init__(self, settings: Settings, *, app: Celery | None = None) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.redis = redis_client(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
        self.app = app or make_client_app(settings)
        self.cipher = WireCipher.from_settings(settings)  # the event is encrypted before it leaves us
        self._register = self.redis.register_script(_REGISTER)

    def publish(self, event: GradeEvent | Mapping[str, Any]) -> str:
        return self.publish_many([event])[0]

    def publish_many(self, items: Iterable[GradeEvent | Mapping[str, Any]]) -> list[str]:
        """Validate all, then publish all; returns the event ids in input order."""
        events = validate_all(items, vendors=self._vendors(),
                              max_future_skew=self.settings.max_future_skew_seconds)
        if not events:
            return []
        try:
            deliveries = self._record(events)
        except _TRANSIENT as exc:
            raise PublishError(f"Redis at {without_credentials(self.settings.redis_url)} is unavailable: {exc}; "
                               "nothing was published") from exc
        try:
            self._send(deliveries)
        except _TRANSIENT as exc:
            raise PublishError(
                f"broker at {without_credentials(self.settings.broker)} is unavailable: {exc}; the events are "
                "recorded but none is confirmed queued — publish them again (same event ids) to queue them"
            ) from exc
        return [str(e.event_id) for e in events]

    def _vendors(self) -> dict[str, str]:
        return self.settings.vendors()

    @retry(
        retry=retry_if_exception_type(_TRANSIENT),
        stop=stop_after_attempt(4),
        wait=wait_exponential(multiplier=0.1, max=1.0),
        reraise=True,
    )
    def _record(self, events: Sequence[GradeEvent]) -> list[Delivery]:
        now = f"{time.time():.6f}"
        ttl = str(self.settings.ledger_ttl_seconds)
        published_key = self.keys.stats("published")
        with self.redis.pipeline(transaction=True) as pipe:
            for e in events:
                eid = str(e.event_id)
                self._register(
                    keys=[self.keys.event(eid), published_key, self.keys.queued],
                    args=[self.cipher.encrypt(e.to_wire()), e.destination, e.vendor, new_token(), now, ttl,
                          e.learner_id, e.occurred_at_iso, eid],
                    client=pipe,
                )
            results = pipe.execute()
        deliveries = []
        for e, (_created, token, state) in zip(events, results, strict=True):
            # a duplicate of an event still queued is sent again (harmless: one attempt runs);
            # one already in progress, retrying or finished is not
            if _text(state) == "queued":
                deliveries.append(Delivery(str(e.event_id), e.destination, _text(token)))
        return deliveries

    @retry(
        retry=retry_if_exception_type(_TRANSIENT),
        stop=stop_after_attempt(4),
        wait=wait_exponential(multiplier=0.1, max=1.0),
        reraise=True,
    )
    def _send(self, deliveries: Sequence[Delivery]) -> None:
        dispatch(self.app, deliveries)

    def close(self) -> None:
        self.redis.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@lru_cache(maxsize=1)
def default_publisher() -> Publisher:
    return Publisher(get_settings())


def publish(event: GradeEvent | Mapping[str, Any]) -> str:
    """Validate and publish one grade event; returns its event id."""
    return default_publisher().publish(event)


def publish_many(events: Iterable[GradeEvent | Mapping[str, Any]]) -> list[str]:
    """Validate all events, then publish all of them in pipelined round trips; returns their ids.

    Raises :class:`InvalidEvents` (nothing published) or :class:`PublishError`.
    """
    return default_publisher().publish_many(events)
