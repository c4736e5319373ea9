"""Publishing grade events: validate everything, record each event in Redis, then queue one delivery
message per event on its destination's queue.

The event itself (with its per-event credentials) is kept in Redis, not in the broker message: the
message carries only the event id, its destination and a dispatch token, so Flower and broker tooling
never show a secret. ``publish_many`` does both steps in pipelined round trips (one Redis transaction for
the records, which the ledger creates — :meth:`worker.store.ledger.Ledger.register_many` — and one batched
send through the broker seam, :mod:`worker.dispatch`), not one round trip per event.

A short Redis or broker blip is retried (tenacity); when it lasts, :class:`PublishError` is raised and
says which events were confirmed published (only those).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import redis
from pydantic import ValidationError
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from worker.connections import redis_client
from worker.crypto import WireCipher
from worker.dispatch import Delivery, Dispatcher, new_token
from worker.dispatch.celery import CeleryDispatcher
from worker.events import DEFAULT_MAX_FUTURE_SKEW, GradeEvent, format_errors
from worker.keys import Keys
from worker.registry.store import Registry
from worker.registry.vendors import VendorIndex
from worker.settings import Settings, get_settings, without_credentials
from worker.store.ledger import EventState, Ledger, NewEvent

# BrokerUnavailable (what a dispatcher raises) is a ConnectionError
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError, ConnectionError, TimeoutError)
__all__ = ["Delivery", "InvalidEvents", "PublishError", "Publisher", "new_token", "publish", "publish_many",
           "validate_all"]

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
    """Publishes events with one Redis client and one dispatcher (both pooled, thread-safe); the default
    dispatcher is Celery's (:class:`~worker.dispatch.celery.CeleryDispatcher`)."""

    def __init__(self, settings: Settings, *, dispatcher: Dispatcher | None = None) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.redis = redis_client(settings.redis_url, socket_timeout=10, socket_connect_timeout=5)
        self._own_dispatcher = dispatcher is None
        self.dispatcher: Dispatcher = dispatcher or CeleryDispatcher(settings, client=self.redis)
        self.cipher = WireCipher.from_settings(settings)  # the event is encrypted before it leaves us
        self.ledger = Ledger(self.redis, self.keys, settings.ledger_ttl_seconds)
        # destinations registered at run time are known here too (worker.registry)
        self._vendor_index = VendorIndex(settings, Registry(self.redis, self.keys))

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
        return self._vendor_index()

    @retry(
        retry=retry_if_exception_type(_TRANSIENT),
        stop=stop_after_attempt(4),
        wait=wait_exponential(multiplier=0.1, max=1.0),
        reraise=True,
    )
    def _record(self, events: Sequence[GradeEvent]) -> list[Delivery]:
        found = self.ledger.register_many([
            NewEvent(str(e.event_id), e.destination, e.vendor, self.cipher.encrypt(e.to_wire()), e.learner_id,
                     e.occurred_at_iso, new_token())
            for e in events])
        # a duplicate of an event still queued is sent again (harmless: one attempt runs);
        # one already in progress, retrying or finished is not
        return [Delivery(str(e.event_id), e.destination, token)
                for e, (token, state) in zip(events, found, strict=True) if state == EventState.QUEUED]

    @retry(
        retry=retry_if_exception_type(_TRANSIENT),
        stop=stop_after_attempt(4),
        wait=wait_exponential(multiplier=0.1, max=1.0),
        reraise=True,
    )
    def _send(self, deliveries: Sequence[Delivery]) -> None:
        self.dispatcher.send_many(deliveries)

    def close(self) -> None:
        if self._own_dispatcher:
            self.dispatcher.close()
        self.redis.close()


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
