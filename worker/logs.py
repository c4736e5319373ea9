"""Structured logging (structlog): JSON lines in production, readable lines in a terminal.

Every record about an event carries ``event_id``, ``destination``, ``vendor`` and ``attempt`` (bound
with contextvars by :mod:`worker.delivery`). One redaction step (:func:`worker.redact.redact`) runs last
on every record, ours and Celery's alike: Authorization headers, tokens, keys, signatures never reach the
output, and neither does any known secret value (the destinations' credentials, the per-event secrets of
the event being delivered), whatever the level, tracebacks included.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from worker.redact import clear_secrets, redact


def _redact(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    cleaned: EventDict = redact(event_dict)
    return cleaned


class LineHandler(logging.StreamHandler):
    """A stream handler that renders a record *before* it takes the handler's lock, and holds the lock only
    to write the line.

    Why: :class:`logging.StreamHandler` formats inside its lock, and here formatting is the whole
    structlog chain (redaction, JSON). With 64 delivery threads logging one line per event, a GIL
    profile showed a tenth of them queued on that lock while its holder waited for the interpreter lock
    mid-format. Rendering is per record and needs no lock; lines still reach the stream whole and in
    the order they are written.
    """

    def handle(self, record: logging.LogRecord) -> bool:
        if not self.filter(record):
            return False
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return True
        with self.lock:  # type: ignore[union-attr]
            try:
                self.stream.write(line)
                self.flush()
            except Exception:
                self.handleError(record)
        return True


def configure(fmt: str = "auto", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Configure structlog and route the standard library's (Celery's) logging through it."""
    out = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    # tracebacks are rendered to text before the redaction step, in both formats: an exception message
    # may quote a vendor's answer
    tail: list[Processor] = [structlog.processors.format_exc_info, _redact]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = LineHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Celery's "Task … received" / "… succeeded in" lines repeat our one "delivered" (or "retry_scheduled",
    # "dead_lettered") line per event and cost as much CPU again; shown at DEBUG, failures always
    quiet = logging.getLogger().getEffectiveLevel() > logging.DEBUG
    for per_task in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(per_task).setLevel(logging.WARNING if quiet else logging.NOTSET)


def bind(**values: Any) -> None:
    structlog.contextvars.bind_contextvars(**values)


def clear() -> None:
    structlog.contextvars.clear_contextvars()
    clear_secrets()  # the per-event secrets bound for masking end with the event's log context
