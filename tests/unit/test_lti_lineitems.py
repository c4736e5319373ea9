"""Line item resolution: container paging, client-side filtering, creation exactly once, the race."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.unit.lti_support import (
    BASE,
    DictCache,
    Platform,
    context,
    destination,
    event,
)
from worker import errors
from worker.adapters.lti_ags import LtiAgsAdapter
from worker.adapters.lti_lineitems import LOCK_NAMESPACE, NAMESPACE, LineItems, with_query

CONTAINER = f"{BASE}/mod/lti/services.php/12/lineitems?type_id=5"


def item(n: int, rl: str, **extra: str) -> dict[str, object]:
    return {"id": f"{BASE}/mod/lti/services.php/12/lineitems/{n}/lineitem?type_id=5", "resourceLinkId": rl,
            "label": f"L{n}", "scoreMaximum": 10, **extra}


def page(items: list[dict[str, object]], nxt: str | None = None) -> httpx.Response:
    headers = {"Link": f'<{nxt}>; rel="next"'} if nxt else {}
    return httpx.Response(200, json=items, headers=headers)


def resolver(platform: Platform, cache: DictCache, sleeps: list[float] | None = None) -> LineItems:
    adapter = LtiAgsAdapter(destination(), context(platform, cache=cache))
    return LineItems("lti", BASE.lower(), cache, adapter.authorized,
                     sleep=(sleeps.append if sleeps is not None else lambda _s: None))


def target(**over: object) -> object:
    return event(target={"lineitems_url": CONTAINER, "resource_link_id": "rl-7", **over})


def test_with_query_keeps_the_existing_query() -> None:
    assert with_query(CONTAINER, {"resource_link_id": "a b"}) == (
        f"{BASE}/mod/lti/services.php/12/lineitems?type_id=5&resource_link_id=a+b")


def test_paging_follows_link_next_and_filters_again() -> None:
    p2 = f"{CONTAINER}&resource_link_id=rl-7&page=2"
    platform = Platform(
        page([item(1, "rl-1"), item(2, "rl-2")], nxt=p2),  # a platform that ignores the filter
        page([item(3, "rl-7", tag="quiz"), item(4, "rl-7", tag="grade")]),
    )
    cache = DictCache()
    ev = target(tag="grade")
    url, cached = resolver(platform, cache).resolve(ev.target, ev)  # type: ignore[attr-defined]
    assert (url, cached) == (item(4, "rl-7")["id"], False)
    assert [str(r.url) for r in platform.requests] == [f"{CONTAINER}&resource_link_id=rl-7&tag=grade", p2]
    assert all(r.headers["Accept"] == "application/vnd.ims.lis.v2.lineitemcontainer+json" for r in platform.requests)
    # the second lookup is the shared cache's
    again = resolver(platform, cache).resolve(ev.target, ev)  # type: ignore[attr-defined]
    assert again == (url, True) and len(platform.requests) == 2


def test_a_next_page_on_another_host_is_refused() -> None:
    platform = Platform(page([], nxt="https://elsewhere.example/page2"))
    ev = target()
    with pytest.raises(errors.InvalidRequest, match="origin"):
        resolver(platform, DictCache()).resolve(ev.target, ev)  # type: ignore[attr-defined]


def test_missing_line_item_is_created_once_with_the_line_item_media_type() -> None:
    created = item(9, "rl-7", tag="grade")
    platform = Platform(page([]), page([]), httpx.Response(201, json=created))
    cache = DictCache()
    ev = target(tag="grade", label="Essay 1", score_maximum=20)
    url, _ = resolver(platform, cache).resolve(ev.target, ev)  # type: ignore[attr-defined]
    assert url == created["id"]
    get1, get2, post = platform.requests
    assert (get1.method, get2.method, post.method) == ("GET", "GET", "POST")  # looked again under the lock
    assert str(post.url) == CONTAINER
    assert post.headers["Content-Type"] == "application/vnd.ims.lis.v2.lineitem+json"
    assert json.loads(post.content) == {"scoreMaximum": 20, "label": "Essay 1", "resourceLinkId": "rl-7",
                                        "tag": "grade"}
    assert not any(ns == LOCK_NAMESPACE for ns, _ in cache.data)  # the lock is released
    assert cache.get_json(NAMESPACE, f"lti:{_digest(ev)}") == created["id"]


def _digest(ev: object) -> str:
    import hashlib

    return hashlib.sha256(ev.target.item_key().encode()).hexdigest()[:32]  # type: ignore[attr-defined]


def test_the_recheck_under_the_lock_finds_another_workers_line_item() -> None:
    platform = Platform(page([]), page([item(5, "rl-7")]))
    ev = target()
    url, _ = resolver(platform, DictCache()).resolve(ev.target, ev)  # type: ignore[attr-defined]
    assert url == item(5, "rl-7")["id"]
    assert [r.method for r in platform.requests] == ["GET", "GET"]  # no POST


class LateCache(DictCache):
    """The lock is another worker's; its URL lands in the cache after a few polls."""

    def __init__(self, url: str | None, after: int) -> None:
        super().__init__()
        self.url, self.after, self.polls = url, after, 0

    def add_json(self, namespace: str, key: str, value: object, ttl_seconds: int) -> bool:
        return False

    def get_json(self, namespace: str, key: str) -> object | None:
        if namespace == NAMESPACE:
            self.polls += 1
            if self.url is not None and self.polls > self.after:
                return self.url
        return super().get_json(namespace, key)


def test_a_worker_that_loses_the_race_waits_for_the_winners_url() -> None:
    winner = item(6, "rl-7")["id"]
    platform = Platform(page([]))
    sleeps: list[float] = []
    ev = target()
    url, _ = resolver(platform, LateCache(str(winner), after=4), sleeps).resolve(ev.target, ev)  # type: ignore[attr-defined]
    assert url == winner
    assert [r.method for r in platform.requests] == ["GET"] and len(sleeps) >= 3


def test_a_creator_that_never_finishes_makes_the_attempt_retryable() -> None:
    platform = Platform(page([]))
    ev = target()
    with pytest.raises(errors.RetryableError, match="another worker"):
        resolver(platform, LateCache(None, after=0)).resolve(ev.target, ev)  # type: ignore[attr-defined]
    assert [r.method for r in platform.requests] == ["GET"]


def test_no_score_maximum_means_no_line_item_can_be_created() -> None:
    platform = Platform(page([]), page([]))
    ev = target(score_maximum=None)
    ev = event(score_given=None, score_maximum=None, target=ev.target.model_dump())  # type: ignore[attr-defined]
    with pytest.raises(errors.InvalidRequest, match="score maximum"):
        resolver(platform, DictCache()).resolve(ev.target, ev)  # type: ignore[arg-type]


def test_a_relative_next_link_is_resolved_against_the_page() -> None:
    platform = Platform(page([], nxt="/mod/lti/services.php/12/lineitems?type_id=5&page=2"),
                        page([item(3, "rl-7")]))
    ev = target()
    url, _ = resolver(platform, DictCache()).resolve(ev.target, ev)  # type: ignore[attr-defined]
    assert url == item(3, "rl-7")["id"]
    assert str(platform.requests[1].url) == f"{BASE}/mod/lti/services.php/12/lineitems?type_id=5&page=2"
