"""What a publisher of grade events imports: the event model, and publish / publish_many.

``from producers import publish, publish_many, GradeEvent`` — and each vendor's target model under its
class name (e.g. ``LtiaasTarget``), from the vendor table.

Why a package of its own that only re-exports: it is the backend's one stable import path, and it sits
*above* :mod:`worker` (the event contract, the settings, the event store, the broker seam and the
publisher all live there, so that ``gradesync serve``'s ingest API and ``gradesync publish`` use the
same code). The direction is one way: ``producers`` imports ``worker``, nothing in ``worker`` imports
``producers`` (``tests/unit/test_layers.py``).
"""

from __future__ import annotations

from worker.events import ActivityProgress, GradeEvent, GradingProgress
from worker.publish import InvalidEvents, Publisher, PublishError, publish, publish_many
from worker.vendors import TABLE

#: each vendor's target model by its class name, from the vendor table (a new vendor needs no line here)
_TARGETS: dict[str, type] = {row.target.__name__: row.target for row in TABLE}
globals().update(_TARGETS)

__all__ = [
    "ActivityProgress",
    "GradeEvent",
    "GradingProgress",
    "InvalidEvents",
    "PublishError",
    "Publisher",
    "publish",
    "publish_many",
    *_TARGETS,
]
