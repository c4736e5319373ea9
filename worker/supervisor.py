"""``gradesync worker --processes N``: N worker processes under one parent, so a worker uses every core.

Why processes: delivery is mostly waiting on vendors, which threads overlap well, but each event still
costs a few milliseconds of Python (the ledger scripts, JSON, HTTP parsing, logs) under one interpreter
lock. One process therefore tops out at one core; N processes of T threads each use N cores.

Why a supervisor and not Celery's prefork pool: prefork gives each child one task at a time, so a
process would sit idle for the whole vendor round trip. Here each child is a complete threads-pool
worker (its own consumer, retry pump, adapters and pooled HTTP clients) with its own node name.

The parent only supervises: it starts the children, forwards SIGTERM/SIGINT/SIGQUIT to them (each then
stops gracefully, see README "Running it"), restarts a child that dies on its own (after a short pause
that grows while it keeps dying), and exits once every child has exited after a stop signal.

Why :func:`exec_lean`: ``gradesync worker`` has imported the CLI, the Celery app and the ops pages by the
time it knows it supervises (about 80 MB); the parent replaces itself (same pid, same signals) with this
module run as a script, which loads only structlog and :mod:`worker.logs` (about 30 MB).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import structlog

log = structlog.get_logger("gradesync.supervisor")

#: longest pause before restarting a child that keeps dying
MAX_RESTART_DELAY = 30.0


def child_hostname(hostname: str, index: int) -> str:
    """``name@host`` of child ``index`` (1-based): ``gradesync@%h`` -> ``gradesync-2@%h``."""
    name, at, host = hostname.partition("@")
    return f"{name}-{index}{at}{host}"


@dataclass
class Child:
    index: int
    argv: list[str]
    cpu: int | None = None
    process: subprocess.Popen[bytes] | None = None
    failures: int = 0
    restart_at: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv)  # inherits stdout/stderr: one log stream
        self.started_at = time.monotonic()
        log.info("worker_process_started", index=self.index, pid=self.process.pid, cpu=self.cpu)


class Supervisor:
    def __init__(self, argvs: Sequence[list[str]], cpus: Sequence[int | None]) -> None:
        self.children = [Child(i + 1, list(argv), cpu) for i, (argv, cpu) in enumerate(zip(argvs, cpus, strict=True))]
        self.stopping: int | None = None

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping is None:
            log.info("worker_stopping", signal=signal.Signals(signum).name)
        self.stopping = signum
        for child in self.children:
            if child.process is not None and child.process.poll() is None:
                child.process.send_signal(signum)

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            signal.signal(sig, self._forward)
        for child in self.children:
            child.start()
        while True:
            alive = 0
            for child in self.children:
                proc = child.process
                if proc is not None and proc.poll() is None:
                    alive += 1
                    continue
                if self.stopping is not None:
                    continue
                self._maybe_restart(child)
                alive += 1
            if alive == 0:
                return 0
            time.sleep(0.2)

    def _maybe_restart(self, child: Child) -> None:
        now = time.monotonic()
        if child.process is not None:
            code = child.process.returncode
            ran = now - child.started_at
            child.failures = 0 if ran > 60 else child.failures + 1
            delay = min(MAX_RESTART_DELAY, 0.5 * 2 ** max(child.failures - 1, 0))
            child.restart_at = now + delay
            child.process = None
            log.warning("worker_process_exited", index=child.index, returncode=code, restart_in=delay)
        if now >= child.restart_at:
            child.start()


def run(processes: int, child_argv: Sequence[str], hostname: str, cpus: Sequence[int | None] = ()) -> int:
    """Start ``processes`` copies of ``gradesync worker <child_argv> --processes 1 -n <name-i@host>``, child
    ``i`` with ``--cpu cpus[i]`` where that is not ``None`` (see :mod:`worker.affinity`)."""
    base = [sys.executable, "-m", "worker.cli", "worker", *child_argv, "--processes", "1"]
    cpu_of = [cpus[i] if i < len(cpus) else None for i in range(processes)]
    argvs = [[*base, "--hostname", child_hostname(hostname, i + 1),
              *(["--cpu", str(cpu_of[i])] if cpu_of[i] is not None else [])] for i in range(processes)]
    log.info("supervisor_started", processes=processes, pid=os.getpid(),
             pinned=any(c is not None for c in cpu_of))
    return Supervisor(argvs, cpu_of).run()


def exec_lean(processes: int, child_argv: Sequence[str], hostname: str, log_format: str, log_level: str,
              cpus: Sequence[int | None] = ()) -> None:
    """:func:`run` in this process, re-executed without the CLI and the Celery app (never returns)."""
    spec = json.dumps({"processes": processes, "child_argv": list(child_argv), "hostname": hostname,
                       "log_format": log_format, "log_level": log_level, "cpus": list(cpus)})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()), spec])  # noqa: S606 - an argv, no shell


def _lean_main(spec: str) -> int:
    from worker import logs

    args = json.loads(spec)
    logs.configure(args["log_format"], args["log_level"])
    return run(args["processes"], args["child_argv"], args["hostname"], args.get("cpus", []))


if __name__ == "__main__":  # exec_lean: the worker package without its __init__ (which loads the Celery app)
    _root = Path(__file__).resolve().parent
    sys.path[0] = str(_root.parent)
    _package = types.ModuleType("worker")
    _package.__path__ = [str(_root)]
    sys.modules.setdefault("worker", _package)
    sys.exit(_lean_main(sys.argv[1]))
