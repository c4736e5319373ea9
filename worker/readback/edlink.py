"""Edlink: ``GET /api/v2/my/classes/{class}/assignments/{assignment}/submissions`` with the integration
token (a teacher's or admin's token sees every learner's submission), paged with ``$first`` / ``$next``.

Every enrolled learner has a submission from the start (state ``created``), so a submission without
``grade_points`` is no grade (never graded, or cleared). Edlink's submission carries no maximum: the
points are compared in the delivered scale. ``grade_comment`` is compared.
"""

from __future__ import annotations

from typing import Any, ClassVar

from worker import errors
from worker.adapters.edlink import EdlinkAdapter, errors_message
from worker.adapters.http import error_for_status, json_or_none, path_segment, send
from worker.adapters.lti_lineitems import origin
from worker.events import GradeEvent
from worker.readback.base import Found, number
from worker.vendors.edlink import EdlinkTarget

ROUTE = "submissions.get"
PAGE_SIZE = 100
MAX_PAGES = 200


def found_of(sub: dict[str, Any]) -> Found:
    comment = sub.get("grade_comment")
    detail = {k: sub[k] for k in ("state", "grade", "updated_date") if sub.get(k) not in (None, "")}
    return Found(score=number(sub.get("grade_points")), maximum=None,
                 comment=comment if isinstance(comment, str) and comment else None, comment_returned=True,
                 detail=detail)


class EdlinkReader(EdlinkAdapter):
    vendor: ClassVar[str] = "edlink"

    def read_grade(self, event: GradeEvent) -> Found | None:
        target = event.target
        if not isinstance(target, EdlinkTarget):
            raise errors.ConfigurationError(f"event {event.event_id} does not target an edlink assignment")
        token = self.credential("integration_token")
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        url = (f"/api/v2/my/classes/{path_segment(target.class_id)}/assignments/"
               f"{path_segment(target.assignment_id)}/submissions?$first={PAGE_SIZE}")
        for _ in range(MAX_PAGES):
            response = send(self.ctx.http, self.ctx.http.build_request("GET", url, headers=headers), route=ROUTE,
                            observe=self.ctx.observe)
            body = json_or_none(response)
            if response.status_code != 200:
                cls = errors.UnexpectedResponse if response.status_code < 400 else None
                raise error_for_status(response, route=ROUTE, vendor_message=errors_message(body), cls=cls)
            if not isinstance(body, dict) or not isinstance(body.get("$data"), list):
                raise error_for_status(response, route=ROUTE, cls=errors.UnexpectedResponse,
                                       vendor_message="the answer has no $data list")
            for sub in body["$data"]:
                if isinstance(sub, dict) and sub.get("person_id") == event.learner_id:
                    return found_of(sub)
            nxt = body.get("$next")
            if not isinstance(nxt, str) or not nxt:
                return None
            if nxt.startswith("http") and origin(nxt) != origin(self.destination.base_url):
                raise errors.UnexpectedResponse(f"{ROUTE}: the next page is on another origin; not following it")
            url = nxt
        return None
