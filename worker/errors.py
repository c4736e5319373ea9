"""The one exception tree of gradesync. Adapters translate HTTP and vendor errors into it, at the HTTP
boundary; nothing above an adapter sees httpx or a vendor's error format.

::

    GradeSyncError
    ├── DeliveryError                 an attempt to deliver an event failed (status, vendor_message, …)
    │   ├── RetryableError            worth another attempt later
    │   │   ├── NetworkError          connection refused / reset / dropped
    │   │   ├── VendorTimeout         no answer within the destination's timeout
    │   │   ├── RateLimited           a throttle: 429, 403 "Rate Limit Exceeded", 503 + Retry-After
    │   │   ├── VendorUnavailable     5xx
    │   │   └── NotReady              the platform cannot take it *yet* (unpublished assignment): long backoff
    │   ├── PermanentError            another attempt would fail the same way: dead-letter it
    │   │   ├── InvalidRequest        400 / 406 / 422: the vendor refused the grade as sent
    │   │   ├── AuthenticationFailed  401 (after one freshly signed / refreshed retry)
    │   │   ├── Forbidden             403
    │   │   ├── NotFound              404: course, item, learner or line item unknown
    │   │   ├── Conflict              409 that is not a stale-score refusal
    │   │   └── UnexpectedResponse    a status or body the vendor's documentation does not allow
    │   └── Superseded                the vendor holds a newer score: not a failure, nothing to do
    └── ConfigurationError            missing credentials or an unknown destination/vendor

Each class's docstring is its default message. ``action``, when an adapter knows it, is what an operator
must do before replaying the event (publish the assignment, enrol the learner, re-link the item); it ends
:meth:`DeliveryError.describe`, so it ends the dead letter's reason.
"""

from __future__ import annotations

from typing import Any


class GradeSyncError(Exception):
    """gradesync error."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip().splitlines()[0]
        super().__init__(self.message)


class ConfigurationError(GradeSyncError):
    """The destination is not configured correctly."""


class DeliveryError(GradeSyncError):
    """The vendor did not accept the grade."""

    #: short machine-readable name of the error class, as recorded in the ledger
    kind = "delivery_error"

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        vendor_message: str | None = None,
        retry_after: float | None = None,
        excerpt: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.vendor_message = vendor_message
        self.retry_after = retry_after
        self.excerpt = excerpt
        #: what an operator must do about it (None: nothing known beyond the message)
        self.action: str | None = None

    def describe(self) -> str:
        """One line for operators: status, class, the vendor's own words and what to do."""
        parts = [f"HTTP {self.status}" if self.status else None, self.message]
        if self.vendor_message and self.vendor_message not in self.message:
            parts.append(f"vendor said: {self.vendor_message}")
        if self.action:
            parts.append(f"to do: {self.action}")
        return " — ".join(p for p in parts if p)

    def as_record(self) -> dict[str, Any]:
        return {
            "error_class": type(self).__name__,
            "kind": self.kind,
            "status": self.status,
            "message": self.message,
            "vendor_message": self.vendor_message,
            "retry_after": self.retry_after,
            "excerpt": self.excerpt,
            **({"action": self.action} if self.action else {}),
        }


class RetryableError(DeliveryError):
    """The vendor could not take the grade now; try again later."""

    kind = "retryable"


class NetworkError(RetryableError):
    """The connection to the vendor failed."""


class VendorTimeout(RetryableError):
    """The vendor did not answer in time."""


class RateLimited(RetryableError):
    """The vendor is rate-limiting us."""


class VendorUnavailable(RetryableError):
    """The vendor answered with a server error."""


class NotReady(RetryableError):
    """The platform cannot take the grade yet; it may later (e.g. the assignment is unpublished)."""


class PermanentError(DeliveryError):
    """The vendor refused the grade; retrying will not help."""

    kind = "permanent"


class InvalidRequest(PermanentError):
    """The vendor rejected the request as invalid."""


class AuthenticationFailed(PermanentError):
    """The vendor rejected our credentials."""


class Forbidden(PermanentError):
    """The vendor refused access to this resource."""


class NotFound(PermanentError):
    """The vendor does not know this course, item, learner or line item."""


class Conflict(PermanentError):
    """The vendor reported a conflict."""


class UnexpectedResponse(PermanentError):
    """The vendor answered in a way its documentation does not allow."""


class Superseded(DeliveryError):
    """The vendor already holds a newer score for this learner and item."""

    kind = "superseded"
