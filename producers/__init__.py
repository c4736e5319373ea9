"""What a publisher of grade events needs: the event model, and publish / publish_many.

Each vendor's target model is also importable from here under its class name (e.g. the one
:mod:`producers.vendors` names for a vendor), built from the vendor table.
"""

from typing import Any

from producers.events import ActivityProgress, GradeEvent, GradingProgress
from producers.publish import InvalidEvents, Publisher, PublishError, publish, publish_many
from producers.vendors import TABLE

_TARGETS: dict[str, type] = {row.target.__name__: row.target for row in TABLE}


def __getattr__(name: str) -> Any:
    """A vendor's target model by its class name (kept importable from ``producers``)."""
    try:
        return _TARGETS[name]
    except KeyError:
        raise AttributeError(f"module 'producers' has no attribute {name!r}") from None


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
