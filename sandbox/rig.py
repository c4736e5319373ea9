"""The one process rig of the tests, the benchmarks and the demo: a Redis, the vendor simulators, a
destinations file pointing at them, and ``gradesync`` processes (workers, the sandbox, the web app) that
are started, waited for until they say they are ready, and stopped.

Why one: ``tests/integration/conftest.py``, ``bench/harness.py`` and ``sandbox/demo.py`` each had their own
copy (spawn, wait for a log line, SIGTERM then SIGKILL, write the TOML), and the copies had drifted (one
did not wait for a killed process, one did not look at a process that exited before it was ready).
Each caller says how a failure is reported (a test asserts, a drill exits, the demo prints a CLI error).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from sandbox import Running, make_app
from sandbox.base import start
from sandbox.localredis import EmbeddedRedis, find_or_start

__all__ = ["EmbeddedRedis", "Processes", "find_or_start", "simulators", "stop_simulators", "write_destinations"]

#: the log line a worker process writes once it consumes (worker.tasks)
WORKER_READY = "worker_ready"


def write_destinations(path: Path, toml: str) -> Path:
    """Write the destinations file the processes read (``GRADESYNC_DESTINATIONS``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(toml)
    return path


def simulators(vendors: Iterable[str], host: str = "127.0.0.1", ports: Mapping[str, int] | None = None,
               ) -> dict[str, Running]:
    """The vendor simulators in this process, each on its port (0 or absent: a free one)."""
    return {v: start(make_app(v), host, (ports or {}).get(v, 0)) for v in vendors}


def stop_simulators(running: Mapping[str, Running]) -> None:
    for r in running.values():
        r.stop()


class Processes:
    """``python -m worker.cli …`` processes, each in its own session (so a signal reaches its children)
    with its output in ``workdir/<name>.log``; ``fail`` builds the exception raised when one is not ready."""

    def __init__(self, workdir: Path, *, cwd: Path | None = None,
                 fail: Callable[[str], Exception] = AssertionError) -> None:
        self.workdir = workdir
        self.cwd = cwd
        self.fail = fail
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.path(name), "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen([sys.executable, "-m", "worker.cli", *args], env=dict(env), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, cwd=self.cwd)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, name: str, needle: str, timeout: float = 60.0) -> None:
        """Until ``needle`` is in the process's log; ``fail`` if it exits or the time runs out first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log(name):
                return
            if self.procs[name].poll() is not None:
                raise self.fail(f"{name} exited (see {self.path(name)}):\n{self.log(name)[-3000:]}")
            time.sleep(0.1)
        raise self.fail(f"{name}: no {needle!r} within {timeout:.0f}s (see {self.path(name)}):\n"
                        f"{self.log(name)[-3000:]}")

    def start_worker(self, name: str, env: Mapping[str, str], *, concurrency: int, hostname: str,
                     wait: bool = True, timeout: float = 60.0) -> subprocess.Popen[bytes]:
        """``gradesync worker -c concurrency -n hostname``, ready (consuming) when this returns."""
        proc = self.spawn(name, ["worker", "-c", str(concurrency), "-n", hostname], env)
        if wait:
            self.wait_log(name, WORKER_READY, timeout)
        return proc

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Signal every process still running (the last started first), wait, then SIGKILL the rest."""
        procs = list(self.procs.values())
        for proc in reversed(procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
        for proc in procs:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
