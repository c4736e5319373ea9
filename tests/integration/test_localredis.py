"""Finding a Redis: configured, on localhost, or an embedded real redis-server (a fresh machine's path)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from sandbox.localredis import answers, find_or_start

pytestmark = pytest.mark.integration

NOTHING_HERE = "redis://127.0.0.1:1/0"


def test_embedded_redis_starts_when_none_answers_and_persists_to_its_folder(tmp_path: Path) -> None:
    url, server = find_or_start(None, tmp_path / "redis", local_url=NOTHING_HERE)
    assert server is not None
    try:
        assert answers(url)
        client = redis.Redis.from_url(url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert client.config_get("appendonly")["appendonly"] == "yes"
        client.close()
    finally:
        server.stop()
    assert not answers(url)
    assert any((tmp_path / "redis").iterdir())  # the append-only data lives in the local folder


def test_configured_url_wins_and_must_answer(redis_url: str, tmp_path: Path) -> None:
    assert find_or_start(redis_url, tmp_path) == (redis_url, None)
    with pytest.raises(RuntimeError, match="does not answer"):
        find_or_start(NOTHING_HERE, tmp_path)


def test_a_redis_on_localhost_is_used_when_it_answers(redis_url: str, tmp_path: Path) -> None:
    assert find_or_start(None, tmp_path, local_url=redis_url) == (redis_url, None)
