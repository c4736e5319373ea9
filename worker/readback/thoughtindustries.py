"""Thought Industries: no documented per-learner read of an assignment's grade.

``GET /incoming/v2/assignmentSubmissions`` pages every submission with no learner or assignment filter
and no confirmed grade fields (``/work/shared/reference/readback.md``), so every cell is ``unreadable``
and the audit sends no request.
"""

from __future__ import annotations

from typing import ClassVar

from worker.adapters.base import AdapterContext
from worker.events import GradeEvent
from worker.readback.base import Found, Unreadable
from worker.settings import Destination


class ThoughtIndustriesReader:
    vendor: ClassVar[str] = "thoughtindustries"
    #: no request is ever sent: the audit records ``unreadable`` without taking a rate-limit slot
    documented_read: ClassVar[bool] = False

    def __init__(self, destination: Destination, ctx: AdapterContext) -> None:
        self.destination = destination
        self.ctx = ctx

    def read_grade(self, event: GradeEvent) -> Found | None:
        raise Unreadable("Thought Industries documents no per-learner read of an assignment grade")

    def close(self) -> None:
        self.ctx.http.close()
