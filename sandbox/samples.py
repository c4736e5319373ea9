"""One ordinary demo grade event per vendor (the vendor table's ``demo_sample`` column).

Each function returns the ``i``-th event of its vendor, without ``destination`` (the demo names it),
addressed so that the vendor's simulator (with :data:`sandbox.DEMO_CREDENTIALS`) accepts it. ``urls``
maps each vendor to its simulator's URL, for targets that carry one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sandbox import DEMO_CREDENTIALS
from sandbox.edlink import DEMO_PERSON_ID


def _score(i: int) -> dict[str, Any]:
    return {"score_given": 60 + (i * 7) % 40, "score_maximum": 100, "comment": f"Demo attempt {i + 1}"}


def learningstudio(i: int, urls: Mapping[str, str]) -> dict[str, Any]:
    return {**_score(i), "learner_id": f"{28456671 + i}",
            "target": {"course_id": "31388494", "item_id": "100561235546"}}


def ltiaas(i: int, urls: Mapping[str, str]) -> dict[str, Any]:
    return {**_score(i), "learner_id": f"lti-user-{i}",
            "target": {"line_item_id": "https://lms.example/api/lti/courses/7/line_items/1",
                       "service_key": DEMO_CREDENTIALS["ltiaas"]["service_key"]}}


def edlink(i: int, urls: Mapping[str, str]) -> dict[str, Any]:
    event: dict[str, Any] = {**_score(i), "learner_id": f"edlink-person-{i}",
                             "target": {"class_id": "class-demo", "assignment_id": "assignment-demo"}}
    if i == 0:  # the learner whose person token the sandbox knows also submits an attempt
        event["learner_id"] = DEMO_PERSON_ID
        event["target"]["person_token"] = DEMO_CREDENTIALS["edlink"]["person_token"]
        event["attachments"] = [{"type": "link", "url": "https://work.example/essay"}]
    return event


def thoughtindustries(i: int, urls: Mapping[str, str]) -> dict[str, Any]:
    return {**_score(i), "learner_id": str(uuid.uuid4()),
            "target": {"assignment_id": "123e4567-e89b-12d3-a456-426614174000"}}


def lti_ags(i: int, urls: Mapping[str, str]) -> dict[str, Any]:
    # LTI AGS straight to the platform: the line item is found by resource link, created once
    lti_url = urls.get("lti_ags", "http://127.0.0.1:8805")
    return {**_score(i), "learner_id": f"lti-user-{i}",
            "target": {"lineitems_url": f"{lti_url}/mod/lti/services.php/7/lineitems?type_id=1",
                       "resource_link_id": "demo-resource-link", "label": "Demo quiz"}}
