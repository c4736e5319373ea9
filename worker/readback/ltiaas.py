"""LTIAAS: ``GET /api/lineitems/{line item URL, encodeURIComponent-ed}/scores?userId=…`` with the same
``SERVICE-AUTH-V1`` / ``LTIK-AUTH-V2`` authorization as the score POST.

The answer is ``{"scores": [{id, userId, scoreOf, timestamp, resultScore, resultMaximum, comment?}],
"next": …}``; a ``next`` page is asked for with ``?url=<next>``. No entry for the learner, or one
without ``resultScore`` (a cleared grade), is no grade.
"""

from __future__ import annotations

from typing import Any, ClassVar

from worker import errors
from worker.adapters.http import json_or_none, send
from worker.adapters.ltiaas import LtiaasAdapter, classify, score_path
from worker.events import GradeEvent
from worker.readback.base import Found, number
from worker.vendors.ltiaas import LtiaasTarget

ROUTE = "scores.get"
MAX_PAGES = 20


def found_of(entry: dict[str, Any]) -> Found:
    maximum = number(entry.get("resultMaximum"))
    detail = {k: entry[k] for k in ("timestamp",) if entry.get(k) is not None}
    return Found(score=number(entry.get("resultScore")), maximum=maximum if maximum is not None else 1.0,
                 comment=entry.get("comment") if isinstance(entry.get("comment"), str) else None,
                 comment_returned="comment" in entry, detail=detail)


class LtiaasReader(LtiaasAdapter):
    vendor: ClassVar[str] = "ltiaas"

    def read_grade(self, event: GradeEvent) -> Found | None:
        target = event.target
        if not isinstance(target, LtiaasTarget):
            raise errors.ConfigurationError(f"event {event.event_id} does not target an ltiaas line item")
        headers = {"Authorization": self._authorization(target), "Accept": "application/json"}
        params: dict[str, str] = {"userId": event.learner_id}
        for _ in range(MAX_PAGES):
            request = self.ctx.http.build_request("GET", score_path(target.line_item_id), params=params,
                                                  headers=headers)
            response = send(self.ctx.http, request, route=ROUTE, observe=self.ctx.observe)
            if response.status_code != 200:
                raise classify(response)
            body = json_or_none(response)
            if not isinstance(body, dict) or not isinstance(body.get("scores"), list):
                raise errors.UnexpectedResponse(f"{ROUTE}: the answer has no scores list", status=200)
            for entry in body["scores"]:
                if isinstance(entry, dict) and entry.get("userId") == event.learner_id:
                    return found_of(entry)
            nxt = body.get("next")
            if not isinstance(nxt, str) or not nxt:
                return None
            params = {"userId": event.learner_id, "url": nxt}
        return None
