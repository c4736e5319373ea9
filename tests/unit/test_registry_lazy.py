"""The lazy destination map (worker/registry/lazy.py) and the bounded adapter pool: memory that does not
grow with the number of destinations registered, only with the cache's size (no I/O)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from worker.adapters.base import AdapterContext
from worker.delivery import AdapterPool
from worker.registry.codec import EntryError, prepare
from worker.registry.lazy import DestinationMap, group_of, known, read_map, vendors_of
from worker.routing import all_queues
from worker.settings import Destination, Settings


def stored(name: str, **extra: Any) -> str:
    table = {"vendor": "ltiaas", "base_url": f"https://{name}.example", "api_key_env": "LAZY_KEY", **extra}
    return prepare(name, table, cipher=None, environ={"LAZY_KEY": "k" * 12}).stored


class Counting:
    """A build function that counts its calls (and refuses the entries named ``bad``)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, name: str, entry: str) -> Destination:
        self.calls.append(name)
        if name.startswith("bad"):
            raise EntryError(name, [("base_url", "refused here")])
        return prepare(name, __import__("json").loads(entry)["config"], cipher=None,
                       environ={"LAZY_KEY": "k" * 12}).destination


def test_a_model_is_built_on_first_use_and_the_most_recent_are_kept() -> None:
    build = Counting()
    raws = {f"d{i}": stored(f"d{i}") for i in range(10)}
    entries = {n: known(t) for n, t in raws.items()}
    dests = DestinationMap(entries, build, cache_size=3)
    assert len(dests) == 10 and "d4" in dests and "nope" not in dests and build.calls == []
    assert dests["d1"].base_url == "https://d1.example" and dests["d1"] is dests["d1"]
    for name in ("d2", "d3", "d4"):
        dests[name]
    assert set(dests.cached()) == {"d2", "d3", "d4"}  # d1 was the least recently used
    assert dests["d1"].name == "d1" and build.calls == ["d1", "d2", "d3", "d4", "d1"]
    with pytest.raises(KeyError):
        dests["nope"]
    bad = DestinationMap({"bad-1": known(raws["d9"])}, build)  # an entry that stopped validating here
    with pytest.raises(KeyError):
        bad["bad-1"]
    assert bad.get("bad-1") is None


def test_vendors_groups_and_queues_are_read_without_building_a_model() -> None:
    build = Counting()
    raws = {"a": stored("a"), "b": stored("b", group="bulk"), "c": stored("c")}
    dests = DestinationMap({n: known(t) for n, t in raws.items()}, build, cache_size=10)
    assert vendors_of(dests) == {"a": "ltiaas", "b": "ltiaas", "c": "ltiaas"}
    assert group_of(dests, "b") == "bulk" and group_of(dests, "a") is None
    assert all_queues(dests) == ["grades", "grades.bulk"]
    assert build.calls == []


def test_read_map_validates_each_changed_entry_once() -> None:
    settings = Settings(destination_cache=2)
    raw = {"a": stored("a"), "b": stored("b"), "c": stored("c")}
    first, changed = read_map(settings, raw)
    assert changed == {"a", "b", "c"} and list(first) == ["a", "b", "c"]
    assert len(first.cached()) == 2  # built to validate; kept only as far as the cache goes
    model_a = first["a"]

    invalid: dict[str, str] = {}
    raw2 = {"a": raw["a"], "b": stored("b", timeout=15.0), "bad": '{"config": {"vendor": "ltiaas"}}'}
    second, changed = read_map(settings, raw2, first, invalid)
    assert changed == {"b", "c", "bad"}  # changed, removed, new (and refused)
    assert list(second) == ["a", "b"] and second["a"] is model_a  # unchanged: the same model
    assert second["b"].timeout == 15.0 and "bad" in invalid
    third, changed = read_map(settings, raw2, second, invalid)
    assert changed == set()  # the refused entry is not re-validated (nor said again) while unchanged
    _, changed = read_map(settings, {"a": raw["a"]}, third, invalid)
    assert changed == {"b"} and invalid == {}


def test_read_map_without_validation_builds_nothing() -> None:
    dests, changed = read_map(Settings(), {"a": stored("a"), "b": stored("b")}, validate=False)
    assert changed == {"a", "b"} and dests.cached() == {}


class FakeAdapter:
    closed = False

    def __init__(self, destination: Destination, ctx: AdapterContext) -> None:
        self.destination = destination

    def close(self) -> None:
        self.closed = True


def test_the_adapter_pool_keeps_the_most_recently_used() -> None:
    store = SimpleNamespace(stats=None, cache=None)
    pool = AdapterPool(Settings(destination_cache=2), store, factory=FakeAdapter)  # type: ignore[arg-type]
    build = Counting()
    raws = {n: stored(n) for n in ("a", "b", "c")}
    dests = DestinationMap({n: known(t) for n, t in raws.items()}, build, cache_size=1)  # rebuilt: equal
    first = pool.get(dests["a"])
    assert pool.get(dests["b"]) is not first
    assert pool.get(dests["a"]) is first  # an equal model rebuilt from the same entry: the same adapter
    pool.get(dests["c"])  # evicts b, the least recently used
    assert set(pool._adapters) == {"a", "c"}
    changed_raw = {"a": stored("a", timeout=15.0)}
    changed = DestinationMap({"a": known(changed_raw["a"])}, build, cache_size=1)
    assert pool.get(changed["a"]) is not first  # a changed destination: a new adapter
    pool.close()
    assert first.closed  # retired adapters are closed with the pool
