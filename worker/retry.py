"""The retry decision: one pure function, table-tested in ``tests/unit/test_retry.py``.

``decide(error, attempt, policy)`` says what happens after attempt number ``attempt`` (1-based) failed
with ``error``:

* :class:`~worker.errors.Superseded` → ``superseded`` (the vendor has a newer score: nothing to do);
* :class:`~worker.errors.PermanentError` → ``dead_letter`` at once;
* :class:`~worker.errors.NotReady` (the platform may take it later: an unpublished assignment) →
  ``retry`` after at least ``not_ready_delay`` (an hour by default), ``dead_letter`` once
  ``max_attempts`` attempts were made — the reason says what the operator must do;
* :class:`~worker.errors.RetryableError` → ``retry`` after an exponential, jittered, capped backoff —
  at least the vendor's ``Retry-After`` — or ``dead_letter`` once ``max_attempts`` attempts were made.

Backoff: ``base * 2**(attempt-1)`` capped at ``max_delay``, then "equal jitter" (a uniform draw in
``[d/2, d]``), so retries of many events spread out but never come back sooner than half the delay.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from worker import errors


class Action(StrEnum):
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"
    SUPERSEDED = "superseded"


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay: float = 2.0
    max_delay: float = 600.0
    #: the least delay after a NotReady refusal (someone must act in the LMS: minutes are too short)
    not_ready_delay: float = 3600.0


@dataclass(frozen=True)
class Decision:
    action: Action
    delay: float = 0.0
    reason: str = ""


def backoff(attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random) -> float:
    """The jittered delay after failed attempt ``attempt`` (1-based)."""
    exponent = min(max(attempt - 1, 0), 62)
    capped = min(policy.max_delay, policy.base_delay * (2.0**exponent))
    return capped / 2 + rand() * capped / 2


def decide(
    error: errors.DeliveryError,
    attempt: int,
    policy: RetryPolicy,
    rand: Callable[[], float] = random.random,
) -> Decision:
    """What to do after attempt ``attempt`` failed with ``error``."""
    if isinstance(error, errors.Superseded):
        return Decision(Action.SUPERSEDED, reason=error.describe())
    if not isinstance(error, errors.RetryableError):
        return Decision(Action.DEAD_LETTER, reason=f"permanent: {error.describe()}")
    if attempt >= policy.max_attempts:
        return Decision(
            Action.DEAD_LETTER,
            reason=f"exhausted after {attempt} attempts: {error.describe()}",
        )
    delay = backoff(attempt, policy, rand)
    if error.retry_after is not None:
        delay = max(delay, error.retry_after)
    if isinstance(error, errors.NotReady):
        delay = max(delay, policy.not_ready_delay * (0.5 + rand() / 2))
    return Decision(Action.RETRY, delay=round(delay, 3), reason=error.describe())
