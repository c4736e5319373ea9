"""The broker seam: the in-memory dispatcher, and which modules may load Celery."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from worker.dispatch import Delivery, Dispatcher
from worker.dispatch.memory import InMemoryDispatcher
from worker.store.ledger import RUNNABLE, TERMINAL, EventState

ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    def __init__(self) -> None:
        self.ran: list[tuple[str, str]] = []

    def run(self, event_id: str, token: str) -> str:
        self.ran.append((event_id, token))
        return "succeeded"


def test_the_memory_dispatcher_queues_per_destination_and_drains_in_order() -> None:
    memory = InMemoryDispatcher()
    assert isinstance(memory, Dispatcher)
    memory.send_many([Delivery("a1", "a", "t1"), Delivery("a2", "a", "t2")])
    memory.send(Delivery("b1", "b", "t3"))
    assert memory.depths(["a", "b", "c"]) == {"a": 2, "b": 1, "c": 0}
    taken = memory.take()
    assert taken == Delivery("a1", "a", "t1")
    assert memory.take() == Delivery("b1", "b", "t3")  # destinations take turns
    recorder = Recorder()
    assert memory.drain(recorder) == 1  # type: ignore[arg-type]
    assert recorder.ran == [("a2", "t2")] and memory.take() is None and memory.sent == 3
    memory.send_many([Delivery("x", "a", "t")])
    assert memory.clear() == 1 and memory.depths(["a"]) == {"a": 0}


def test_states_are_one_str_enum() -> None:
    assert EventState.DEAD_LETTERED == "dead_lettered" and f"{EventState.QUEUED}" == "queued"
    assert set(RUNNABLE) | set(TERMINAL) == set(EventState)


def test_only_four_modules_import_celery_or_kombu_and_worker_errors_does_not_load_it() -> None:
    importing = sorted(
        str(path.relative_to(ROOT)) for package in ("producers", "worker") for path in (ROOT / package).rglob("*.py")
        if re.search(r"^(from|import) (celery|kombu)", path.read_text(), re.MULTILINE))
    assert importing == ["worker/celery_app.py", "worker/dispatch/celery.py", "worker/kombu_redis.py",
                         "worker/tasks.py"]
    code = "import sys, worker, worker.errors, worker.retry; print('celery' in sys.modules, 'kombu' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_message_ids_are_random_version_4_uuids() -> None:
    import uuid

    from worker.dispatch.celery import _uuid4

    ids = [_uuid4() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_redis_message_quotes_what_it_carries() -> None:
    import base64
    import json

    from worker.dispatch import Delivery
    from worker.dispatch.celery import redis_message

    queue, payload = redis_message(Delivery('ev"1{x}', "lt", "tok\\en"), origin='o"rigin', reply_to="r{}")
    message = json.loads(payload)
    assert queue == "grades"  # the shared queue (no group)
    assert json.loads(base64.b64decode(message["body"]))[:2] == [['ev"1{x}'], {"token": "tok\\en", "destination": "lt"}]
    assert message["headers"]["argsrepr"] == repr(['ev"1{x}']) and message["headers"]["origin"] == 'o"rigin'
    assert message["properties"]["reply_to"] == "r{}"
    assert message["properties"]["delivery_info"] == {"exchange": "", "routing_key": "grades"}
