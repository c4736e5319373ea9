"""LearningStudio: the adapter's own grade read, ``GET /users/{learner}/courses/{course}/gradebookItems/
{guid}/grade`` (signed like every request), after the gradebook item lookup that gives the GUID and
``pointsPossible`` (the scale the adapter rescaled the points to).

404 is no grade; a blank grade (no points, no letter, no comments: "deleted by the instructor") is a
cleared one. ``comments`` is compared (an absent and an empty comment are the same).
"""

from __future__ import annotations

from typing import ClassVar

from worker import errors
from worker.adapters.http import json_or_none
from worker.adapters.learningstudio import (
    CACHE_NAMESPACE,
    GRADE_GET_ROUTE,
    GradebookItem,
    LearningStudioAdapter,
    grade_path,
)
from worker.events import GradeEvent
from worker.readback.base import Found, number
from worker.vendors.learningstudio import LearningStudioTarget


class LearningStudioReader(LearningStudioAdapter):
    vendor: ClassVar[str] = "learningstudio"

    def read_grade(self, event: GradeEvent) -> Found | None:
        target = event.target
        if not isinstance(target, LearningStudioTarget):
            raise errors.ConfigurationError(f"event for {event.destination!r} has a {target.vendor} target")
        item, cached = self._gradebook_item(target)
        try:
            return self._read(event, target, item)
        except errors.NotFound:
            if not cached:
                raise
            self.ctx.cache.delete(CACHE_NAMESPACE, self._cache_key(target))
            item, _ = self._gradebook_item(target)
            return self._read(event, target, item)

    def _read(self, event: GradeEvent, target: LearningStudioTarget, item: GradebookItem) -> Found | None:
        response = self._exchange("GET", grade_path(event.learner_id, target.course_id, item.id), GRADE_GET_ROUTE)
        if response.status_code == 404:
            body = json_or_none(response)
            text = response.text if body is None else str(body)
            if "gradebook item" in text.lower():
                raise self._error(response, GRADE_GET_ROUTE)  # the item, not the grade, is unknown
            return None
        if response.status_code != 200:
            raise self._error(response, GRADE_GET_ROUTE)
        body = json_or_none(response)
        grade = body.get("grade") if isinstance(body, dict) else None
        if not isinstance(grade, dict):
            raise self._error(response, GRADE_GET_ROUTE, cls=errors.UnexpectedResponse)
        comments = grade.get("comments")
        detail = {k: grade[k] for k in ("id", "letterGrade", "updatedDate") if grade.get(k) not in (None, "")}
        return Found(score=number(grade.get("points")), maximum=item.points_possible,
                     comment=comments if isinstance(comments, str) and comments else None,
                     comment_returned=True, detail=detail)
