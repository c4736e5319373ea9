"""The run-time destination registry on a real Redis: apply all-or-nothing, paging, the audit, the live
view of a process (new / changed / removed), and no plaintext secret anywhere in Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from worker.keys import Keys
from worker.registry.live import LiveDestinations
from worker.registry.service import DocumentError, apply_document, current_destinations
from worker.registry.store import Registry
from worker.settings import Settings

SECRET = "direct-secret-9f8e7d6c5b4a"
pytestmark = pytest.mark.integration


def lt(**extra: object) -> dict[str, object]:
    return {"vendor": "ltiaas", "base_url": "https://acme.ltiaas.com", "api_key_env": "ACME_KEY", **extra}


@pytest.fixture
def settings(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> Settings:
    return Settings(redis_url=redis_url, key_prefix="regtest",
                    GRADESYNC_DESTINATIONS=tmp_path / "absent.toml")  # type: ignore[call-arg]


@pytest.fixture
def registry(settings: Settings, redis_client: redis.Redis) -> Registry:
    return Registry(redis_client, Keys(settings.key_prefix))


def dump(client: redis.Redis) -> bytes:
    """Every value of every key (the way a Redis dump or a replica would show them)."""
    out = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            out.append(client.get(key) or b"")
        elif kind == b"hash":
            out.extend(v for kv in client.hgetall(key).items() for v in kv)
        elif kind == b"stream":
            out.extend(v for _, f in client.xrange(key) for kv in f.items() for v in kv)
        elif kind == b"zset":
            out.extend(client.zrange(key, 0, -1))
    return b"\n".join(out)


def test_apply_is_all_or_nothing_and_names_each_bad_key(settings: Settings, registry: Registry) -> None:
    doc = {"destinations": {"a": lt(), "b": lt(timeout=0), "c": {"vendor": "nope", "base_url": "https://x"}}}
    with pytest.raises(DocumentError) as info:
        apply_document(settings, registry, doc, actor="test")
    assert {(n, k) for n, k, _ in info.value.problems} == {("b", "timeout"), ("c", "vendor")}
    assert registry.count() == 0 and registry.version() == 0
    assert apply_document(settings, registry, {"destinations": {"a": lt()}}, actor="test") == {"a": "created"}
    assert apply_document(settings, registry, {"destinations": {"a": lt(max_attempts=3), "b": lt()}},
                          actor="test") == {"a": "updated", "b": "created"}
    assert registry.version() == 2
    again = apply_document(settings, registry, {"destinations": {"a": lt(max_attempts=3)}}, actor="test")
    assert again == {"a": "unchanged"} and registry.version() == 2  # nothing to reload
    audit = registry.r.xrange(Keys(settings.key_prefix).audit)
    assert [f[b"action"] for _, f in audit] == [b"destination_apply", b"destination_apply"]
    assert audit[-1][1][b"actor"] == b"test"


def test_pages_in_name_order_through_thousands(settings: Settings, registry: Registry) -> None:
    names = [f"inst-{i:05d}" for i in range(2500)]
    apply_document(settings, registry, {"destinations": {n: lt() for n in names}}, actor="test")
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = registry.page(cursor, 1000)
        seen.extend(page)
        if cursor is None:
            break
    assert seen == names
    assert len(current_destinations(settings, registry)) == 2500


def test_remove_and_the_change_stream(settings: Settings, registry: Registry) -> None:
    apply_document(settings, registry, {"destinations": {"a": lt()}}, actor="test")
    assert registry.delete("a", actor="test", reason="gone") is True
    assert registry.delete("a", actor="test") is False
    assert registry.get("a") is None and registry.count() == 0
    ops = [(f[b"name"], f[b"op"]) for _, f in registry.r.xrange(Keys(settings.key_prefix).registry_changes)]
    assert ops == [(b"a", b"upsert"), (b"a", b"remove")]


def test_a_live_view_sees_new_changed_and_removed(settings: Settings, registry: Registry) -> None:
    live = LiveDestinations(settings, registry, poll_seconds=0.1).install()
    try:
        assert settings.destinations() == {}
        apply_document(settings, registry, {"destinations": {"a": lt(), "b": lt()}}, actor="test")
        live.refresh()
        first = settings.destinations()
        assert sorted(first) == ["a", "b"]
        apply_document(settings, registry, {"destinations": {"a": lt(rate_limit_per_minute=30)}}, actor="test")
        live.refresh()
        second = settings.destinations()
        assert second["a"].rate_limit_per_minute == 30 and second["b"] is first["b"]  # only "a" rebuilt
        registry.delete("b", actor="test")
        live.refresh()
        assert sorted(settings.destinations()) == ["a"]
    finally:
        live.close()
    with pytest.raises(Exception, match="destinations file not found"):
        settings.destinations()  # closed: back to the (absent) file


def test_a_direct_secret_is_never_plaintext_in_redis(settings: Settings, registry: Registry,
                                                     redis_client: redis.Redis) -> None:
    entry = {k: v for k, v in lt().items() if k != "api_key_env"}
    apply_document(settings, registry, {"destinations": {"a": {**entry, "api_key": SECRET}}}, actor="test")
    assert SECRET.encode() not in dump(redis_client)
    (dest,) = current_destinations(settings, registry).values()
    assert dest.secret("api_key").get_secret_value() == SECRET  # type: ignore[union-attr]


def test_the_file_is_applied_at_start(settings: Settings, registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "destinations.toml"
    path.write_text('[destinations.f1]\nvendor = "ltiaas"\nbase_url = "https://f1.example"\napi_key_env = "F1"\n')
    with_file = settings.model_copy(update={"destinations_file": path})
    live = LiveDestinations(with_file, registry).install()
    try:
        assert list(with_file.destinations()) == ["f1"] and registry.get("f1") is not None
    finally:
        live.close()
    path.write_text('[destinations.f2]\nvendor = "ltiaas"\nbase_url = "https://x"\napi_key = "inline"\n')
    with pytest.raises(Exception, match="secrets are never written in the file"):
        LiveDestinations(with_file, registry).install()  # the start-up file keeps the file's rules


def test_keys_rotate_re_encrypts_the_registered_secrets(settings: Settings, registry: Registry) -> None:
    from worker.crypto import WireCipher, generate_key
    from worker.ops.keys_cli import rotate_registry

    entry = {k: v for k, v in lt().items() if k != "api_key_env"}
    apply_document(settings, registry, {"destinations": {"a": {**entry, "api_key": SECRET}, "b": lt()}},
                   actor="test")
    old = settings.secret_key.get_secret_value()  # type: ignore[union-attr]
    new = generate_key()
    assert rotate_registry(registry, WireCipher.parse(f"{new},{old}")) == {
        "rotated": 1, "changed_meanwhile": 0, "undecryptable": 0}  # "b" has no direct secret
    only_new = settings.model_copy(update={"secret_key": SecretStr(new)})
    (dest,) = [d for n, d in current_destinations(only_new, registry).items() if n == "a"]
    assert dest.secret("api_key").get_secret_value() == SECRET  # type: ignore[union-attr]
    assert rotate_registry(registry, WireCipher.parse(generate_key()))["undecryptable"] == 1


def test_a_producer_without_a_live_view_knows_registered_destinations(settings: Settings, registry: Registry) -> None:
    from worker.publish import InvalidEvents, Publisher
    from worker.testing import InMemoryDispatcher

    apply_document(settings, registry, {"destinations": {"tenant-x": lt()}}, actor="test")
    event = {"destination": "tenant-x", "learner_id": "l1", "score_given": 1, "score_maximum": 2,
             "target": {"line_item_id": "https://lms.example/li/1", "service_key": "k"}}
    publisher = Publisher(settings, dispatcher=InMemoryDispatcher())
    try:
        (eid,) = publisher.publish_many([event])
        assert publisher.ledger.load(eid) is not None
        registry.delete("tenant-x", actor="test")
        with pytest.raises(InvalidEvents):
            publisher.publish_many([{**event, "learner_id": "l2"}])  # removed: refused from the next batch
    finally:
        publisher.close()
