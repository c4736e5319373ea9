"""The log handler renders outside its lock: lines still arrive whole, redacted, and a record that cannot be
rendered is reported the standard way, not raised into the delivery that logged it."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest
import structlog

from worker import logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    root = logging.getLogger()
    before = (root.handlers[:], root.level)
    logs.configure("json", "INFO", stream=out)
    yield out
    root.handlers[:], _ = before
    root.setLevel(before[1])
    structlog.reset_defaults()


def _ours() -> logging.Handler:
    """The handler configure() installed (pytest adds its own capture handlers around each test)."""
    ours = [h for h in logging.getLogger().handlers if not type(h).__module__.startswith("_pytest")]
    assert len(ours) == 1
    return ours[0]


def test_the_worker_logs_through_the_line_handler(stream: io.StringIO) -> None:
    assert isinstance(_ours(), logs.LineHandler)


def test_lines_from_many_threads_arrive_whole_and_redacted(stream: io.StringIO) -> None:
    log = structlog.get_logger("gradesync.test")

    def burst(n: int) -> None:
        for i in range(200):
            log.info("delivered", thread=n, i=i, authorization="Bearer s3cr3t-token", detail="x" * 500)

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 8 * 200
    records = [json.loads(line) for line in lines]  # every line is one whole JSON document
    assert {(r["thread"], r["i"]) for r in records} == {(n, i) for n in range(8) for i in range(200)}
    assert "s3cr3t-token" not in stream.getvalue()


def test_a_record_that_cannot_be_rendered_goes_to_handle_error(stream: io.StringIO,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    handler = _ours()
    failed: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", failed.append)
    monkeypatch.setattr(handler, "format", lambda record: 1 / 0)
    assert handler.handle(logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)) is True
    assert len(failed) == 1 and stream.getvalue() == ""


def test_a_filtered_record_is_not_written(stream: io.StringIO) -> None:
    handler = _ours()
    handler.addFilter(lambda record: False)
    try:
        assert handler.handle(logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)) is False
    finally:
        handler.filters.clear()
    assert stream.getvalue() == ""
