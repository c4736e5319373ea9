"""LTI 1.3 AGS result service: ``GET {line item}/results?user_id=…`` (``/results`` appended to the path,
before any query) with ``Accept: application/vnd.ims.lis.v2.resultcontainer+json`` and a token granted
``…/scope/result.readonly`` (asked for with the destination's own scopes: a token of its own, cached
under that scope set). ``Link: rel="next"`` pages are followed on the destination's origin only.

A result is ``{id, scoreOf, userId, resultScore, resultMaximum (1 if absent), comment}``. Canvas answers
``[]`` when no result exists; Moodle keeps a ``null`` ``resultScore`` for a cleared grade; Blackboard
returns no comment (so the comment is compared only when the key is there). A line item given as
``{lineitems_url, resource_link_id}`` is looked up (cache, then the container) but never created by a
read: no line item is no grade.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urljoin, urlsplit, urlunsplit

from worker import errors
from worker.adapters.base import AdapterContext
from worker.adapters.http import error_class_for, error_for_status, json_or_none
from worker.adapters.lti_ags import ROUTE_SCOPE, LtiAgsAdapter
from worker.adapters.lti_lineitems import message_of, with_query
from worker.events import GradeEvent
from worker.readback.base import Found, number
from worker.settings import Destination
from worker.vendors.lti import LtiAgsTarget

RESULT_TYPE = "application/vnd.ims.lis.v2.resultcontainer+json"
RESULT_SCOPE = "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly"
ROUTE = "results.get"
MAX_PAGES = 50
ROUTE_SCOPE.setdefault(ROUTE, RESULT_SCOPE)


def results_url(line_item_url: str) -> str:
    """``{line item}/results``: inserted into the path, before the query string (kept); fragment dropped."""
    parts = urlsplit(line_item_url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/results", parts.query, ""))


def found_of(entry: dict[str, Any]) -> Found:
    maximum = number(entry.get("resultMaximum"))
    comment = entry.get("comment")
    return Found(score=number(entry.get("resultScore")), maximum=1.0 if maximum is None else maximum,
                 comment=comment if isinstance(comment, str) else None, comment_returned="comment" in entry)


class LtiAgsReader(LtiAgsAdapter):
    vendor: ClassVar[str] = "lti_ags"

    def __init__(self, destination: Destination, ctx: AdapterContext) -> None:
        super().__init__(destination, ctx)
        self.scopes = tuple(dict.fromkeys((*self.scopes, RESULT_SCOPE)))

    def line_item(self, target: LtiAgsTarget) -> str | None:
        if target.line_item_url is not None:
            return self.line_items.check_origin(target.line_item_url, "line item URL")
        return self.line_items.cached(target) or self.line_items.find(target)

    def read_grade(self, event: GradeEvent) -> Found | None:
        target = event.target
        if not isinstance(target, LtiAgsTarget):
            raise errors.ConfigurationError(f"event {event.event_id} does not target an LTI AGS line item")
        line_item = self.line_item(target)
        if line_item is None:
            return None
        url: str | None = with_query(results_url(line_item), {"user_id": event.learner_id})
        for _ in range(MAX_PAGES):
            if url is None:
                break
            response = self.authorized("GET", url, route=ROUTE, headers={"Accept": RESULT_TYPE})
            if response.status_code == 404 and target.line_item_url is None:
                self.line_items.forget(target)  # the cached line item is gone: no grade there
                return None
            if response.status_code != 200:
                cls = errors.UnexpectedResponse if response.status_code < 400 else error_class_for(response.status_code)
                raise error_for_status(response, route=ROUTE, vendor_message=message_of(response), cls=cls)
            body = json_or_none(response)
            if not isinstance(body, list):
                raise error_for_status(response, route=ROUTE, cls=errors.UnexpectedResponse,
                                       vendor_message="the result container is not a JSON array")
            for entry in body:
                if isinstance(entry, dict) and entry.get("userId") == event.learner_id:
                    return found_of(entry)
            nxt = response.links.get("next", {}).get("url")
            url = self.line_items.check_origin(urljoin(str(response.url), str(nxt)), "next page") if nxt else None
        return None
