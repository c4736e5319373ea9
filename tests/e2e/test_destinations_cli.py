"""`gradesync destinations` (list, --json, pause, resume) and `gradesync sandbox --rate-limit / --outage`,
run as separate processes the way an operator runs them."""

from __future__ import annotations

import getpass
import json
import re
import time
import uuid

import httpx
import pytest
import redis

from sandbox import DEFAULT_PORTS as DESTS  # one destination per simulated vendor
from sandbox.localredis import free_port
from tests.e2e.test_cli import GRADESYNC, Env, env  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e


def test_destinations_list_pause_resume(env: Env, redis_client: redis.Redis) -> None:  # noqa: F811
    now = time.time()
    redis_client.hset("gradesync:flow:ti", mapping={
        "breaker": "open", "breaker_since": f"{now - 125}", "probe_at": f"{now + 40}", "rate": "60",
        "rate_since": f"{now + 3600}", "rate_until": f"{now + 3650}", "rate_reason": "HTTP 429 at 120/min",
        # a vendor's answer quoted in the reason must not drive the terminal
        "breaker_reason": "5 consecutive transient failures: 503 \x1b[2J\x1b]0;owned\x07Service Unavailable"})
    redis_client.zadd("gradesync:parked:ti", {str(uuid.uuid4()): now - i for i in range(4)})

    listed = env.run("destinations", "--json")
    assert listed.returncode == 0, listed.stderr
    by = {d["name"]: d for d in json.loads(listed.stdout)["destinations"]}
    assert {"ed", "ls", "lt", "ti"} <= set(by) and len(by) == len(DESTS)
    assert (by["ti"]["state"], by["ti"]["parked"], by["ti"]["rate_per_minute"]) == ("open", 4, 60.0)
    assert by["ti"]["since"] == pytest.approx(now - 125, abs=1)
    assert {d["state"] for n, d in by.items() if n != "ti"} == {"closed"}
    assert json.loads(env.run("destinations", "list", "--json").stdout)["destinations"][-1]["name"] == "ti"

    table = env.run("destinations")
    assert table.returncode == 0, table.stderr
    assert "\x1b" not in table.stdout and "\x07" not in table.stdout
    [header, *rows] = table.stdout.splitlines()
    assert header.split()[:6] == ["DESTINATION", "VENDOR", "STATE", "SINCE", "RATE/MIN", "PARKED"]
    ti = next(r for r in rows if r.startswith("ti "))
    assert " open " in ti and re.search(r" [23]m \d+s ago ", ti), ti  # opened 125 s ago
    assert "\\x1b[2J\\x1b]0;owned\\x07Service Unavailable" in ti and "next probe in" in ti
    assert " 4 " in ti
    assert re.search(r"rate lowered: HTTP 429 at 120/min; the configured rate in (1h|6[01]m)", ti), ti

    paused = env.run("destinations", "pause", "lt", "--reason", "LMS maintenance 02:00-04:00 UTC")
    assert paused.returncode == 0, paused.stderr
    actor = f"cli:{getpass.getuser()}"
    assert paused.stdout.strip() == f"paused lt: paused by {actor}: LMS maintenance 02:00-04:00 UTC (0 parked)"
    assert redis_client.hget("gradesync:flow:lt", "paused") == b"1"
    lt = next(d for d in json.loads(env.run("destinations", "--json").stdout)["destinations"] if d["name"] == "lt")
    assert lt["state"] == "paused" and lt["since"] == pytest.approx(time.time(), abs=30)

    assert env.run("destinations", "pause", "lt").returncode == 2  # --reason is required
    too_long = env.run("destinations", "pause", "lt", "--reason", "x" * 501)
    assert too_long.returncode == 2 and "longer than 500" in too_long.stderr
    unknown = env.run("destinations", "pause", "nope", "--reason", "x")
    assert unknown.returncode == 1 and "unknown destination 'nope'" in unknown.stderr
    assert env.run("destinations", "resume", "nope").returncode == 1

    resumed = env.run("destinations", "resume", "lt")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "resumed lt: now closed"
    assert redis_client.hgetall("gradesync:flow:lt") == {}

    audit = json.loads(env.run("dlq", "audit", "--json").stdout)
    assert [(a["actor"], a["action"], a["destination"]) for a in audit] == [
        (actor, "resume", "lt"), (actor, "pause", "lt")]
    assert audit[1]["reason"] == "LMS maintenance 02:00-04:00 UTC"
    human = env.run("dlq", "audit").stdout
    assert "pause" in human and "reason: LMS maintenance" in human

    assert env.run("dlq", "requeue", "--all", "--dry-run").returncode == 0  # the dlq CLI records the same actor
    latest = json.loads(env.run("dlq", "audit", "--json", "--limit", "1").stdout)[0]
    assert (latest["actor"], latest["action"], latest["dry_run"]) == (actor, "requeue", True)

    env.vars["GRADESYNC_REDIS_URL"] = f"redis://user:secret@127.0.0.1:{free_port()}/0"
    down = env.run("destinations")
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert "Redis at redis://127.0.0.1:" in down.stderr and "unavailable" in down.stderr
    assert "secret" not in down.stderr


def test_sandbox_rate_limit_and_outage_flags(env: Env) -> None:  # noqa: F811
    ports = [a for v, p in env.ports.items() for a in (f"--{v}-port", str(p))]
    bad = env.run("sandbox", *ports, "--rate-limit", "moodle=60")
    assert bad.returncode == 2 and "unknown vendor 'moodle'" in bad.stderr
    args = [*GRADESYNC, "sandbox", *ports, "--rate-limit", "thoughtindustries=6:2", "--outage", "ltiaas=600@1"]
    env.start("sandbox", args, "outage: 503")
    ti = f"http://127.0.0.1:{env.ports['thoughtindustries']}/incoming/v2/assignmentExternalActivity"
    statuses = [httpx.post(ti, json={}, timeout=10).status_code for _ in range(4)]
    assert 429 in statuses and statuses[0] != 429  # the burst of 2 passes, then the limit answers 429
    lt = f"http://127.0.0.1:{env.ports['ltiaas']}/api/lineitems/x/scores"
    deadline = time.monotonic() + 30
    status = 0
    while time.monotonic() < deadline and status != 503:  # the outage starts after its 1 s delay
        status = httpx.post(lt, json={}, timeout=10).status_code
        time.sleep(0.2)
    assert status == 503


def test_destinations_apply_show_list_remove(env: Env, redis_client: redis.Redis) -> None:  # noqa: F811
    secret = "e2e-direct-key-71c3b9a5d2"
    tenants = env.tmp / "tenants.toml"
    tenants.write_text(f'[destinations.tenant-a]\nvendor = "ltiaas"\nbase_url = "https://a.example"\n'
                       f'api_key = "{secret}"\nrate_limit_per_minute = 30\n'
                       '[destinations.tenant-b]\nvendor = "ltiaas"\nbase_url = "https://b.example"\n'
                       'api_key_env = "TENANT_B_KEY"\n')
    applied = env.run("destinations", "apply", str(tenants))
    assert applied.returncode == 0, applied.stderr
    assert "2 created" in applied.stdout
    assert env.run("destinations", "apply", str(tenants)).stdout.count("2 unchanged") == 1

    shown = env.run("destinations", "show", "tenant-a", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["config"] == {"vendor": "ltiaas", "base_url": "https://a.example",
                                                  "api_key": "**********", "rate_limit_per_minute": 30}
    listed = json.loads(env.run("destinations", "list", "--json").stdout)["destinations"]
    assert {"tenant-a", "tenant-b"} <= {d["name"] for d in listed}
    page = json.loads(env.run("destinations", "list", "--json", "--limit", "1", "--cursor", "tenant-a").stdout)
    assert [d["name"] for d in page["destinations"]] == ["tenant-b"] and page["next_cursor"] is None
    outputs = [applied.stdout, applied.stderr, shown.stdout, env.run("destinations").stdout]
    assert not [o for o in outputs if secret in o]

    # an event of tenant-b retrying: the removal is refused, then forced (dead-lettered with the reason)
    event_id = str(uuid.uuid4())
    redis_client.hset(f"gradesync:event:{event_id}", mapping={
        "state": "retrying", "destination": "tenant-b", "vendor": "ltiaas", "token": "t", "wire": "{}"})
    redis_client.zadd("gradesync:scheduled:tenant-b", {event_id: time.time() + 60})
    redis_client.zadd("gradesync:scheduled", {event_id: time.time() + 60})
    refused = env.run("destinations", "remove", "tenant-b")
    assert refused.returncode == 1 and "1 event(s) of 'tenant-b' are pending" in refused.stderr
    forced = env.run("destinations", "remove", "tenant-b", "--force", "--reason", "contract ended")
    assert forced.returncode == 0, forced.stderr
    assert "1 pending event(s) dead-lettered" in forced.stdout
    assert redis_client.hget(f"gradesync:event:{event_id}", "state") == b"dead_lettered"
    assert b"contract ended" in (redis_client.hget(f"gradesync:event:{event_id}", "reason") or b"")
    assert redis_client.zscore("gradesync:scheduled", event_id) is None
    assert redis_client.hget("gradesync:registry", "tenant-b") is None
    audit = json.loads(env.run("dlq", "audit", "--json").stdout)
    actions = [a["action"] for a in (audit["items"] if isinstance(audit, dict) else audit)]
    assert actions[:2] == ["destination_remove", "destination_apply"]
