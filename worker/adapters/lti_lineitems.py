"""AGS line item resolution: which line item URL a ``{lineitems_url, resource_link_id}`` target means.

1. The shared cache (Redis) remembers the answer for a week, so one lookup serves every worker.
2. Otherwise ``GET {lineitems_url}?resource_link_id=…`` (plus ``resource_id`` / ``tag`` when given) with
   ``Accept: application/vnd.ims.lis.v2.lineitemcontainer+json``, following ``Link: <…>; rel="next"``.
   The filters are re-applied here: platforms may ignore query parameters they do not support.
3. When no line item matches, create it — once, even with many workers racing: the creator takes a lock
   in the shared cache (``SET NX`` with a TTL), looks again under the lock (another worker may have
   created it between our GET and our lock), creates and caches the URL. Workers that lose the race wait
   for the URL to appear in the cache; if it does not appear in time the attempt is retried later.

Query strings of the container URL are kept (Moodle's carries ``?type_id=…``). URLs the platform returns
(``next`` pages, created ids) must stay on the destination's origin: the platform's bearer token is
never sent to another host.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import httpx
import structlog

from worker import errors
from worker.adapters.base import Cache
from worker.adapters.http import compact_json, error_for_status, json_number, json_or_none
from worker.events import GradeEvent
from worker.redact import redact_text
from worker.vendors.lti import LtiAgsTarget

log = structlog.get_logger("gradesync.lti_lineitems")

CONTAINER_TYPE = "application/vnd.ims.lis.v2.lineitemcontainer+json"
LINEITEM_TYPE = "application/vnd.ims.lis.v2.lineitem+json"
NAMESPACE = "lti_lineitem"
LOCK_NAMESPACE = "lti_lineitem_lock"
CACHE_TTL = 7 * 86_400
#: default TTL of the creation lock (seconds)
LOCK_TTL = 30
#: how long a worker that lost the creation race waits for the winner's URL
WAIT_FOR_CREATOR = 10.0
MAX_PAGES = 50


class Sender(Protocol):
    """Sends one authorized request (token attached, one refresh on 401/403) and returns the answer."""

    def __call__(self, method: str, url: str, *, route: str, headers: dict[str, str],
                 content: bytes | None = None) -> httpx.Response: ...


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def with_query(url: str, extra: dict[str, str]) -> str:
    """``url`` with ``extra`` query parameters appended after the ones it has (kept as they are)."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(extra)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def matches(item: Any, target: LtiAgsTarget) -> bool:
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        return False
    if item.get("resourceLinkId") != target.resource_link_id:
        return False
    if target.resource_id is not None and item.get("resourceId") != target.resource_id:
        return False
    return target.tag is None or item.get("tag") == target.tag


class LineItems:
    """Resolves and creates line items of one destination."""

    def __init__(self, destination_name: str, base_origin: str, cache: Cache, send: Sender,
                 sleep: Callable[[float], None] = time.sleep, lock_ttl: int = LOCK_TTL) -> None:
        self.destination_name = destination_name
        self.base_origin = base_origin
        self.cache = cache
        self.send = send
        self.sleep = sleep
        #: outlives the creator's two requests (re-check, create) even when both take the full timeout
        self.lock_ttl = lock_ttl

    def check_origin(self, url: str, what: str) -> str:
        if origin(url) != self.base_origin:
            raise errors.InvalidRequest(
                f"{what} {url!r} is not on the destination's origin {self.base_origin}: refusing to send the "
                f"platform's token there"
            )
        return url

    def cache_key(self, target: LtiAgsTarget) -> str:
        digest = hashlib.sha256(target.item_key().encode()).hexdigest()[:32]
        return f"{self.destination_name}:{digest}"

    def cached(self, target: LtiAgsTarget) -> str | None:
        value = self.cache.get_json(NAMESPACE, self.cache_key(target))
        return value if isinstance(value, str) else None

    def forget(self, target: LtiAgsTarget) -> None:
        self.cache.delete(NAMESPACE, self.cache_key(target))

    def resolve(self, target: LtiAgsTarget, event: GradeEvent) -> tuple[str, bool]:
        """(line item URL, whether it came from the cache)."""
        if target.line_item_url is not None:
            return self.check_origin(target.line_item_url, "line item URL"), False
        hit = self.cached(target)
        if hit is not None:
            return hit, True
        found = self.find(target)
        if found is None:
            found = self._create_once(target, event)
        self.cache.set_json(NAMESPACE, self.cache_key(target), found, CACHE_TTL)
        return found, False

    def find(self, target: LtiAgsTarget) -> str | None:
        """The URL of the first line item of the container matching the target, following paging."""
        assert target.lineitems_url is not None and target.resource_link_id is not None
        query = {"resource_link_id": target.resource_link_id}
        if target.resource_id is not None:
            query["resource_id"] = target.resource_id
        if target.tag is not None:
            query["tag"] = target.tag
        url: str | None = with_query(self.check_origin(target.lineitems_url, "line items URL"), query)
        pages = 0
        while url is not None and pages < MAX_PAGES:
            pages += 1
            response = self.send("GET", url, route="lineitems.get", headers={"Accept": CONTAINER_TYPE})
            if response.status_code != 200:
                raise error_for_status(response, route="lineitems.get", vendor_message=message_of(response))
            body = json_or_none(response)
            if not isinstance(body, list):
                raise error_for_status(response, route="lineitems.get", cls=errors.UnexpectedResponse,
                                       vendor_message="the line item container is not a JSON array")
            for item in body:
                if matches(item, target):
                    return self.check_origin(str(item["id"]), "line item id")
            nxt = response.links.get("next", {}).get("url")  # may be relative (RFC 8288)
            url = self.check_origin(urljoin(str(response.url), str(nxt)), "next page") if nxt else None
        return None

    def _create_once(self, target: LtiAgsTarget, event: GradeEvent) -> str:
        key = self.cache_key(target)
        mine = secrets.token_hex(8)
        if self.cache.add_json(LOCK_NAMESPACE, key, mine, self.lock_ttl):
            try:  # created between our GET and our lock? (cached by its creator, or in the container)
                found = self.cached(target) or self.find(target)
                return found if found is not None else self.create(target, event)
            finally:
                if self.cache.get_json(LOCK_NAMESPACE, key) == mine:
                    self.cache.delete(LOCK_NAMESPACE, key)
        waited = 0.0
        while waited < WAIT_FOR_CREATOR:
            self.sleep(0.1)
            waited += 0.1
            hit = self.cached(target)
            if hit is not None:
                return hit
        raise errors.RetryableError(
            f"lineitem.post: another worker is creating the line item of {target.resource_link_id!r}; retrying later"
        )

    def create(self, target: LtiAgsTarget, event: GradeEvent) -> str:
        assert target.lineitems_url is not None
        maximum = target.score_maximum or event.score_maximum
        if maximum is None:
            raise errors.InvalidRequest(
                f"lineitem.post: no line item for resource link {target.resource_link_id!r} and no score maximum "
                f"to create one with (set target.score_maximum)"
            )
        body: dict[str, Any] = {"scoreMaximum": json_number(maximum),
                                "label": target.label or f"Grade for {target.resource_link_id}",
                                "resourceLinkId": target.resource_link_id}
        if target.resource_id is not None:
            body["resourceId"] = target.resource_id
        if target.tag is not None:
            body["tag"] = target.tag
        content = compact_json(body)
        response = self.send("POST", target.lineitems_url, route="lineitem.post", content=content,
                             headers={"Content-Type": LINEITEM_TYPE, "Accept": LINEITEM_TYPE})
        if response.status_code not in (200, 201):
            raise error_for_status(response, route="lineitem.post", vendor_message=message_of(response))
        created = json_or_none(response)
        if not isinstance(created, dict) or not isinstance(created.get("id"), str):
            raise error_for_status(response, route="lineitem.post", cls=errors.UnexpectedResponse,
                                   vendor_message="the created line item has no id")
        log.info("lti_lineitem_created", destination=self.destination_name, resource_link_id=target.resource_link_id)
        return self.check_origin(created["id"], "created line item id")


def message_of(response: httpx.Response) -> str | None:
    """The platform's own words from an error body (Canvas ``errors[].message``, OAuth-style ``error``,
    ``message`` / ``detail`` / ``reason``, or plain text)."""
    body = json_or_none(response)
    text = ""
    if isinstance(body, dict):
        errs = body.get("errors")
        if isinstance(errs, list) and errs:
            first = errs[0]
            text = str(first.get("message") if isinstance(first, dict) else first)
        elif isinstance(errs, dict) and isinstance(errs.get("message"), str):  # Canvas {type, message}
            text = errs["message"]
        elif isinstance(errs, dict) and errs:
            text = "; ".join(f"{k}: {v}" for k, v in errs.items())
        else:
            for key in ("error_description", "message", "detail", "reason", "error"):
                if body.get(key):
                    text = str(body[key])
                    break
    elif isinstance(body, str):
        text = body
    elif response.text and "html" not in response.headers.get("content-type", ""):
        text = response.text[:300]
    return redact_text(" ".join(text.split())) or None
