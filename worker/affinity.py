"""Pinning worker processes to CPUs (``GRADESYNC_WORKER_CPU_AFFINITY``: ``auto``, ``on`` or ``off``).

Why: a worker process runs many threads under one interpreter lock, and a thread hands the lock over
each time it waits on Redis or a vendor. When the threads float over several cores, each hand-over wakes a
thread on another core (an inter-processor interrupt; on a virtual machine, a trip through the
hypervisor), and a waiter woken there often finds the lock taken again and goes back to sleep. The process
pays CPU for wake-ups that run no Python. Pinned to one core, the hand-over is a switch on that core. On
the 2-core VM of the README's performance section a pinned process spent 18-39 % less CPU per
delivered event than a floating one, and two pinned processes delivered 1.16-1.30x what two floating
ones did (``bench/bench_delivery.py --affinity auto,off,on``). A process cannot use more than one core
anyway: the lock sees to that.

Policy, :func:`plan`:

``auto`` (default)
    Pin when a supervisor runs several processes that share out evenly over the CPUs this worker may use
    (the default, one process per core, does): child *i* runs on allowed CPU *i mod n*. Never a single
    process and never fewer processes than CPUs: another program on the machine (a second worker, a pod
    beside this one) pinning the same way would stack on the same first CPUs while the others idle.
``on``
    Always: child *i* on allowed CPU *i mod n*, a single process on the first allowed CPU. For a machine or
    a cpuset (Kubernetes' static CPU manager) that this worker has to itself.
``off``
    Never; the kernel places every thread.

Only Linux has ``sched_setaffinity``; elsewhere nothing is pinned.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

Mode = Literal["auto", "on", "off"]


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on, in order (empty where the platform cannot pin)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return []


def plan(processes: int, allowed: Sequence[int], mode: Mode) -> list[int | None]:
    """The CPU of each of ``processes`` worker processes (``None``: not pinned)."""
    n = len(allowed)
    pin = n > 0 and (mode == "on" or (mode == "auto" and n > 1 and processes > 1 and processes % n == 0))
    return [allowed[i % n] if pin else None for i in range(processes)]


def pin(cpu: int) -> None:
    """Run every thread of this process on ``cpu`` (threads started later inherit it)."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # pragma: no cover - no procfs: the calling thread only
        tids = [0]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, {cpu})
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
