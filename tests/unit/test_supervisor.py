from __future__ import annotations

from pathlib import Path

import pytest

from worker.settings import Settings
from worker.supervisor import child_hostname


@pytest.mark.parametrize(("given", "index", "expected"), [
    ("gradesync@%h", 1, "gradesync-1@%h"),
    ("w@host.example", 3, "w-3@host.example"),
    ("plain", 2, "plain-2"),
])
def test_child_hostname(given: str, index: int, expected: str) -> None:
    assert child_hostname(given, index) == expected


def test_processes_default_to_the_cores_this_process_may_use() -> None:
    import os

    assert Settings().processes() == len(os.sched_getaffinity(0))
    assert Settings(worker_processes=3).processes() == 3


def test_task_events_are_off_by_default_and_on_when_asked(tmp_path: Path) -> None:
    from worker.celery_app import build_config

    dests = tmp_path / "d.toml"
    dests.write_text('[destinations.a]\nvendor = "ltiaas"\nbase_url = "http://x"\napi_key_env = "K"\n')
    off = build_config(Settings(destinations_file=dests))
    on = build_config(Settings(destinations_file=dests, task_events=True))
    assert (off["worker_send_task_events"], off["task_send_sent_event"]) == (False, False)
    assert (on["worker_send_task_events"], on["task_send_sent_event"]) == (True, True)
