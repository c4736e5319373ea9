"""`gradesync demo --exit-when-settled` as a user runs it: the sample settles as before (a transient outage
retried, a permanent refusal dead-lettered, a stale event superseded), then the outage phase — with
the flow-control sandbox, every grade of the downed vendor is parked and delivered, none dead-lettered."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from sandbox.demo import VENDORS
from sandbox.localredis import free_port

pytestmark = pytest.mark.e2e


def test_demo_settles_and_rides_out_the_outage(redis_client: redis.Redis, redis_url: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADESYNC_")}
    env["GRADESYNC_REDIS_URL"] = redis_url
    out = subprocess.run(
        [sys.executable, "-m", "worker.cli", "demo", "--exit-when-settled", "--events", "2", "--outage-seconds", "8",
         "--data-dir", str(tmp_path), "--web-port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    settled = re.findall(r"settled: (.*)", out.stdout)
    ordinary = 2 * len(VENDORS) + 1  # 2 per vendor, and the newer of the stale pair
    assert settled[0] == f"dead_lettered 1, succeeded {ordinary}, superseded 1", out.stdout[-3000:]
    assert "destinations" in out.stdout and "demo-ls" in out.stdout  # the live flow table
    assert "outage: learningstudio answers 503" in out.stdout
    assert settled[1] == "succeeded 6", out.stdout[-3000:]
    assert "stopped." in out.stdout
