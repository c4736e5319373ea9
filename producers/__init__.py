"""What a publisher of grade events needs: the event model, and publish / publish_many.

Each vendor's target model is also importable from here under its class name (e.g. the one
:mod:`producers.vendors` names for a vendor), built from the vendor table.

The names load on first use (PEP 562), so importing one module of the package (say
``producers.settings``, which every ``gradesync`` command and the worker read) does not also load the
publisher and, with it, Celery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from producers.vendors import TABLE

if TYPE_CHECKING:
    from producers.events import ActivityProgress, GradeEvent, GradingProgress
    from producers.publish import InvalidEvents, Publisher, PublishError, publish, publish_many

_FROM = {
    "ActivityProgress": "producers.events", "GradeEvent": "producers.events", "GradingProgress": "producers.events",
    "InvalidEvents": "producers.publish", "PublishError": "producers.publish", "Publisher": "producers.publish",
    "publish": "producers.publish", "publish_many": "producers.publish",
}


#: each vendor's target model by its class name (the table is light: pydantic models, no Celery)
_TARGETS: dict[str, type] = {row.target.__name__: row.target for row in TABLE}


def __getattr__(name: str) -> Any:
    """The public names, and each vendor's target model by its class name, loaded on first use."""
    if name in _FROM:
        value = getattr(importlib.import_module(_FROM[name]), name)
    else:
        try:
            value = _TARGETS[name]
        except KeyError:
            raise AttributeError(f"module 'producers' has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_FROM, *_TARGETS])


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
