"""`gradesync worker --processes N`: N real worker processes under one supervisor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import Cluster
from tests.integration.test_pipeline import lt_event

pytestmark = pytest.mark.integration


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def wait_until(predicate: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def cpus_of(pid: int) -> set[frozenset[int]]:
    """The CPU sets of every thread of process ``pid``."""
    found = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            found.add(frozenset(os.sched_getaffinity(int(tid))))
        except ProcessLookupError:
            continue
    return found


def test_processes_deliver_restart_a_dead_child_and_stop_together(cluster: Cluster, tmp_path: Path) -> None:
    log_path = tmp_path / "supervisor.log"
    allowed = sorted(os.sched_getaffinity(0))
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker", "--processes", "2", "-c", "2",
             "-n", f"procs{os.getpid()}@%h"],
            env={**cluster.env, "GRADESYNC_WORKER_CPU_AFFINITY": "on"}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: log_path.read_text(errors="replace").count("worker_ready") >= 2, "two ready workers")
        first = children(proc.pid)
        assert len(first) == 2
        # the parent re-executed itself as the lean supervisor (no CLI, no Celery app)
        assert "supervisor.py" in Path(f"/proc/{proc.pid}/cmdline").read_text()
        # pinned: child i and every one of its threads (Celery's pool included) on allowed CPU i mod n
        pinned = {min(first): allowed[0], max(first): allowed[1 % len(allowed)]}
        assert {pid: cpus_of(pid) for pid in first} == {pid: {frozenset({c})} for pid, c in pinned.items()}

        ids = cluster.publisher.publish_many([lt_event(learner_id=f"p{i}") for i in range(20)])
        assert set(cluster.wait_for(ids).values()) == {"succeeded"}

        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: len(children(proc.pid)) == 2 and victim not in children(proc.pid), "a restarted child")
        assert "worker_process_exited" in log_path.read_text(errors="replace")
        wait_until(lambda: log_path.read_text(errors="replace").count("worker_ready") >= 3, "the new child ready")
        (new,) = children(proc.pid) - first
        assert cpus_of(new) == {frozenset({pinned[victim]})}  # the restarted child takes its CPU back

        more = cluster.publisher.publish_many([lt_event(learner_id=f"q{i}") for i in range(10)])
        assert set(cluster.wait_for(more).values()) == {"succeeded"}

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
        assert children(proc.pid) == set()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
