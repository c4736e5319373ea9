"""The allocator trim (worker/memtrim.py): runs where glibc is the C library, at most as often as asked."""

from __future__ import annotations

import pytest

from worker import memtrim


def test_trim_runs_and_is_rate_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    if not memtrim.available():
        pytest.skip("the C library is not glibc: trimming is a no-op here")  # pragma: no cover
    calls: list[int] = []
    monkeypatch.setattr(memtrim, "_trim", lambda pad: calls.append(pad) or 1)
    monkeypatch.setattr(memtrim, "_last", 0.0)
    assert memtrim.trim() is True
    assert memtrim.trim(at_most_every=3600.0) is False  # ran moments ago
    assert memtrim.trim() is True  # unconditional
    assert calls == [0, 0]


def test_without_glibc_nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memtrim, "_trim", None)
    assert memtrim.available() is False and memtrim.trim() is False
