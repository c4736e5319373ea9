"""LTI 1.3 Assignment and Grade Services, straight to the LMS (Canvas, Moodle, Blackboard, D2L, Sakai…).

One event is one AGS score: ``POST {line item URL}/scores`` — ``/scores`` appended to the *path*, before
any query string (Moodle's line item URLs carry ``?type_id=…``) — with ``Content-Type:
application/vnd.ims.lis.v1.score+json`` and a bearer token from :mod:`worker.adapters.lti_auth`. The
score's ``timestamp`` is the event's ``occurred_at`` (ms, UTC), identical on every retry, so a late retry
can never overwrite a newer grade. Line items given as ``{lineitems_url, resource_link_id}`` are resolved
(and created once) by :mod:`worker.adapters.lti_lineitems`.

How platforms answer, and what it becomes (the refusals row by row: :mod:`worker.adapters.lti_refusals`):

=====================================================  ===========================================
200 / 201 / 202 / 204                                  delivered
a throttle (429; 403 rate limit; 503 + Retry-After)    throttled: the destination slows, no attempt spent,
                                                       no token refresh
409 (Moodle: "earlier timestamp")                      :class:`~worker.errors.Superseded`
400 whose text names the timestamp (Canvas, Open edX)  :class:`~worker.errors.Superseded`
401 / 403 a token could fix                           one fresh token, then permanent, naming the scope
404 (or Moodle 403 "Line item does not exist.") on a   the cache entry is dropped and resolved once more
cached line item
422 "…still unpublished"                               :class:`~worker.errors.NotReady`: long backoff
documented refusals (not a student, concluded, …)      permanent, with the operator's action
5xx / timeouts                                         retryable (``Retry-After`` honoured)
other 4xx                                              permanent (dead letter)
=====================================================  ===========================================
"""

from __future__ import annotations

from datetime import UTC
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import structlog

from worker import errors
from worker.adapters.ags import score_body
from worker.adapters.base import AdapterContext, DeliveryResult
from worker.adapters.http import HttpAdapter, compact_json, error_for_status, send
from worker.adapters.lti_auth import AccessToken, TokenSource
from worker.adapters.lti_jwks import publish_public_keys
from worker.adapters.lti_lineitems import LineItems, message_of, origin
from worker.adapters.lti_refusals import ROUTE, classify, is_line_item_gone, not_a_token_problem
from worker.events import GradeEvent
from worker.redact import redact_text
from worker.settings import Destination
from worker.vendors.lti import LtiAgsDestination, LtiAgsTarget

log = structlog.get_logger("gradesync.lti_ags")

SCORE_TYPE = "application/vnd.ims.lis.v1.score+json"
SCORE_SCOPE = "https://purl.imsglobal.org/spec/lti-ags/scope/score"
LINEITEM_SCOPE = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem"
LINEITEM_READONLY_SCOPE = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly"
SUCCESS = (200, 201, 202, 204)
#: the scope a route needs, named in a permanent 401/403
ROUTE_SCOPE = {"score.post": SCORE_SCOPE, "lineitem.post": LINEITEM_SCOPE,
               "lineitems.get": f"{LINEITEM_SCOPE} (or lineitem.readonly)"}


CANVAS_SUBMISSION = "https://canvas.instructure.com/lti/submission"


def canvas_submission(event: GradeEvent, target: LtiAgsTarget) -> dict[str, Any]:
    """Canvas's submission extension: ``submitted_at`` (the target's, else the event's ``occurred_at``), so
    Canvas does not take the time of the post (and mark the work late); ``new_submission: false`` for a
    regrade, so a corrected grade does not open a new attempt."""
    when = target.submitted_at or event.occurred_at
    ext: dict[str, Any] = {"submitted_at": when.astimezone(UTC).isoformat(timespec="milliseconds")}
    if target.regrade:
        ext["new_submission"] = False
    return ext


def scores_url(line_item_url: str) -> str:
    """``{line item}/scores``: inserted into the path, before the query string (kept); fragment dropped."""
    parts = urlsplit(line_item_url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/scores", parts.query, ""))


class LtiAgsAdapter(HttpAdapter[LtiAgsDestination]):
    """Deliver grade events as AGS scores to an LTI 1.3 platform."""

    vendor: ClassVar[str] = "lti_ags"
    destination_type = LtiAgsDestination

    def __init__(self, destination: Destination, ctx: AdapterContext) -> None:
        super().__init__(destination, ctx)
        destination = self.destination
        self.scopes = tuple(destination.scopes)
        self.tokens = TokenSource(destination, ctx)
        publish_public_keys(destination, ctx.cache)  # before any token request: the platform may fetch the JWKS
        self.line_items = LineItems(destination.name, origin(destination.base_url), ctx.cache, self.authorized,
                                    lock_ttl=max(30, int(destination.timeout * 3) + 5))

    def authorized(self, method: str, url: str, *, route: str, headers: dict[str, str],
                   content: bytes | None = None) -> httpx.Response:
        """Send with the bearer token; on 401/403 once more with a fresh token, then refuse for good."""
        token = self.tokens.token(self.scopes)
        response = self._send(method, url, token, route=route, headers=headers, content=content)
        if response.status_code not in (401, 403) or not_a_token_problem(response):
            return response
        log.info("lti_token_refused", destination=self.destination.name, route=route, status=response.status_code)
        token = self.tokens.refresh(self.scopes, token)
        response = self._send(method, url, token, route=route, headers=headers, content=content)
        if response.status_code not in (401, 403) or not_a_token_problem(response):
            return response
        scope = ROUTE_SCOPE.get(route, " ".join(self.scopes))
        cls = errors.AuthenticationFailed if response.status_code == 401 else errors.Forbidden
        exc = error_for_status(response, route=route, vendor_message=message_of(response), cls=cls)
        exc.message = (f"{route}: HTTP {response.status_code} with a fresh token for client "
                       f"{self.destination.client_id!r} (this call needs scope {scope}; granted: "
                       f"{' '.join(token.granted) or 'none'})")
        raise exc

    def _send(self, method: str, url: str, token: AccessToken, *, route: str, headers: dict[str, str],
              content: bytes | None) -> httpx.Response:
        request = self.ctx.http.build_request(
            method, url, content=content, headers={**headers, "Authorization": f"Bearer {token.value}"}
        )
        return send(self.ctx.http, request, route=route, observe=self.ctx.observe)

    def build_score(self, event: GradeEvent) -> bytes:
        body = score_body(event)
        target = event.target
        if isinstance(target, LtiAgsTarget) and target.canvas_submission:
            body[CANVAS_SUBMISSION] = canvas_submission(event, target)
        return compact_json(body)

    def deliver(self, event: GradeEvent) -> DeliveryResult:
        target = event.target
        if not isinstance(target, LtiAgsTarget):
            raise errors.ConfigurationError(f"event {event.event_id} does not target an LTI AGS line item")
        line_item, from_cache = self.line_items.resolve(target, event)
        response = self._post_score(line_item, event)
        if from_cache and is_line_item_gone(response):
            # the cached line item was deleted (and maybe re-created): look it up once more
            self.line_items.forget(target)
            line_item, _ = self.line_items.resolve(target, event)
            response = self._post_score(line_item, event)
        if response.status_code in SUCCESS:
            return DeliveryResult(status=response.status_code, action=ROUTE, detail=redact_text(line_item))
        raise classify(response)

    def _post_score(self, line_item: str, event: GradeEvent) -> httpx.Response:
        return self.authorized("POST", scores_url(line_item), route=ROUTE, content=self.build_score(event),
                               headers={"Content-Type": SCORE_TYPE, "Accept": "application/json"})
