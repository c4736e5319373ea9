"""Each vendor's destination is served by its own adapter module, behind one Protocol."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from worker.adapters import REGISTRY, build_adapter
from worker.adapters.base import AdapterContext
from worker.keys import Keys
from worker.vendors.edlink import EdlinkDestination
from worker.vendors.learningstudio import LearningStudioDestination
from worker.vendors.ltiaas import LtiaasDestination
from worker.vendors.thoughtindustries import ThoughtIndustriesDestination

DESTS = [
    LearningStudioDestination(name="ls", vendor="learningstudio", base_url="https://ls.example", application_id="a",
                              consumer_key="c", shared_secret_env="S", shared_secret=SecretStr("0123456789abcdef")),
    LtiaasDestination(name="lt", vendor="ltiaas", base_url="https://lt.example", api_key_env="K",
                      api_key=SecretStr("k")),
    EdlinkDestination(name="ed", vendor="edlink", base_url="https://ed.example", integration_token_env="T",
                      integration_token=SecretStr("t")),
    ThoughtIndustriesDestination(name="ti", vendor="thoughtindustries", base_url="https://ti.example",
                                 api_key_env="K", api_key=SecretStr("k")),
]


@pytest.mark.parametrize("dest", DESTS, ids=lambda d: d.vendor)
def test_registry_builds_the_vendor_adapter(dest: object) -> None:
    adapter = build_adapter(dest, AdapterContext(http=httpx.Client()))  # type: ignore[arg-type]
    assert adapter.vendor == dest.vendor  # type: ignore[attr-defined]
    assert type(adapter).__module__ == f"worker.adapters.{dest.vendor}"  # type: ignore[attr-defined]
    adapter.close()


def test_every_vendor_is_registered() -> None:
    assert set(REGISTRY) == {"learningstudio", "ltiaas", "edlink", "thoughtindustries", "lti_ags"}


def test_queue_names() -> None:
    assert Keys.queue() == "grades" and Keys.queue("slow-lms") == "grades.slow-lms"


def test_a_small_fixed_set_of_queues_whatever_the_number_of_destinations() -> None:
    from worker.routing import all_queues, members, queue_of, queues_of

    many = {f"d{i}": DESTS[1].model_copy(update={"name": f"d{i}"}) for i in range(10_000)}
    assert all_queues(many) == ["grades"] and queue_of(many["d7"]) == "grades" and queue_of(None) == "grades"
    many["ti"] = DESTS[3].model_copy(update={"group": "ti-workers"})
    assert all_queues(many) == ["grades", "grades.ti-workers"]
    assert queues_of([many["ti"]]) == ["grades.ti-workers"] and queues_of([many["d1"], many["d2"]]) == ["grades"]
    assert members(many)["grades.ti-workers"] == ["ti"] and len(members(many)["grades"]) == 10_000
