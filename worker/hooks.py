"""Hooks other code can subscribe to. Today: dead-lettering (page someone, open a ticket, ...).

    from worker import hooks

    @hooks.on_dead_letter
    def alert(notice: hooks.DeadLetterNotice) -> None: ...

A subscriber that raises is logged and ignored: it never changes what happened to the event.
Subscribers run in the worker process that dead-lettered the event.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DeadLetterNotice:
    event_id: str
    destination: str
    vendor: str
    reason: str
    attempts: int
    error: dict[str, Any] = field(default_factory=dict)


DeadLetterHook = Callable[[DeadLetterNotice], None]
_lock = threading.Lock()
_dead_letter: list[DeadLetterHook] = []


def on_dead_letter(fn: DeadLetterHook) -> DeadLetterHook:
    """Subscribe ``fn`` to dead-lettering (usable as a decorator)."""
    with _lock:
        _dead_letter.append(fn)
    return fn


def unsubscribe(fn: DeadLetterHook) -> None:
    with _lock:
        if fn in _dead_letter:
            _dead_letter.remove(fn)


def fire_dead_letter(notice: DeadLetterNotice) -> None:
    with _lock:
        subscribers = list(_dead_letter)
    for fn in subscribers:
        try:
            fn(notice)
        except Exception:
            log.exception("dead_letter_hook_failed", hook=getattr(fn, "__qualname__", repr(fn)),
                          event_id=notice.event_id)
