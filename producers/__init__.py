"""What a publisher of grade events needs: the event model, and publish / publish_many."""

from producers.events import (
    ActivityProgress,
    EdlinkTarget,
    GradeEvent,
    GradingProgress,
    LearningStudioTarget,
    LtiaasTarget,
    LtiAgsTarget,
    ThoughtIndustriesTarget,
)
from producers.publish import InvalidEvents, Publisher, PublishError, publish, publish_many

__all__ = [
    "ActivityProgress",
    "EdlinkTarget",
    "GradeEvent",
    "GradingProgress",
    "InvalidEvents",
    "LearningStudioTarget",
    "LtiAgsTarget",
    "LtiaasTarget",
    "PublishError",
    "Publisher",
    "ThoughtIndustriesTarget",
    "publish",
    "publish_many",
]
