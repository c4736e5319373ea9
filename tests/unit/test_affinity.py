"""The pinning policy of worker processes (worker/affinity.py): a pure function of the process count, the
allowed CPUs and the mode."""

from __future__ import annotations

import pytest

from worker.affinity import Mode, plan
from worker.settings import Settings


@pytest.mark.parametrize(("processes", "allowed", "mode", "expected"), [
    # auto: one process per core (the default), or a whole multiple of them: each core gets its share
    (2, [0, 1], "auto", [0, 1]),
    (4, [0, 1], "auto", [0, 1, 0, 1]),
    (3, [2, 5, 7], "auto", [2, 5, 7]),
    # auto never pins a single process, nor fewer processes than cores, nor an uneven share
    (1, [0, 1], "auto", [None]),
    (2, [0, 1, 2, 3], "auto", [None, None]),
    (3, [0, 1], "auto", [None, None, None]),
    (2, [4], "auto", [None, None]),  # one allowed CPU: nothing to choose
    # on: always, round-robin; a single process on the first allowed CPU
    (1, [0, 1], "on", [0]),
    (3, [0, 1], "on", [0, 1, 0]),
    (2, [6, 9, 11, 12], "on", [6, 9]),
    # off: never
    (2, [0, 1], "off", [None, None]),
    # a platform that cannot pin reports no CPUs
    (2, [], "on", [None, None]),
])
def test_plan(processes: int, allowed: list[int], mode: Mode, expected: list[int | None]) -> None:
    assert plan(processes, allowed, mode) == expected


def test_affinity_is_auto_by_default_and_refuses_unknown_modes() -> None:
    assert Settings().worker_cpu_affinity == "auto"
    assert Settings(worker_cpu_affinity="off").worker_cpu_affinity == "off"
    with pytest.raises(ValueError, match="worker_cpu_affinity"):
        Settings(worker_cpu_affinity="sometimes")  # type: ignore[arg-type]
