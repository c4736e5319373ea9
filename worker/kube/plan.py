"""What the manifests are made from: the cluster file (``cluster.toml``), the destinations file, and the
capacity arithmetic that caps each worker group's replicas.

Capacity: one worker process (threads pool, ``concurrency`` threads) delivers at most
``min(events_per_second_per_process, concurrency / vendor_latency_seconds)`` events a second to one
destination (the first figure is measured by ``bench/bench_capacity.py``, the second is how many calls
its threads can have in flight). A destination limited to ``rate_limit_per_minute`` (flow control,
issue 8; Thought Industries documents 120/min) can keep ``ceil(limit / 60 / per-process rate)`` processes
busy: scaling its workers past that only makes them wait for the limiter, so a group's
``maxReplicaCount`` is the sum of what its destinations' limits can use (capped by ``max_replicas``).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# VENDOR_RATE_LIMITS: the vendors' documented request limits, used when a destination sets no
# ``rate_limit_per_minute`` (the same table the destination settings use; 0 in the file means no limit)
from worker.settings import SECRET_KEYS, VENDOR_RATE_LIMITS, ConfigError

DEFAULT_GROUP = "default"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkerDefaults(_Model):
    concurrency: int = Field(16, ge=1, le=512)
    events_per_second_per_process: float = Field(150.0, gt=0, description="measured CPU-bound delivery rate")
    vendor_latency_seconds: float = Field(0.5, gt=0, description="typical vendor answer time")
    min_replicas: int = Field(0, ge=0)
    max_replicas: int = Field(10, ge=1)
    task_events: bool = Field(True, description="--task-events: Flower's task views (~15 % CPU)")
    shutdown_grace_seconds: int = Field(25, ge=1, description="GRADESYNC_SHUTDOWN_GRACE of the worker")
    grace_margin_seconds: int = Field(15, ge=5, description="added to the grace for terminationGracePeriod")
    memory_request: str = "128Mi"
    memory_limit: str = "256Mi"
    cpu_request: str = "200m"
    cpu_limit: str = "1"


class Group(_Model):
    destinations: list[str] = Field(min_length=1)
    concurrency: int | None = Field(None, ge=1, le=512)
    min_replicas: int | None = Field(None, ge=0)
    max_replicas: int | None = Field(None, ge=1)


class Keda(_Model):
    """How KEDA reads the queue lengths (the broker the workers use)."""

    broker: Literal["redis", "redis-sentinel", "rabbitmq"] = "redis"
    redis_address: str = "redis.gradesync.svc.cluster.local:6379"
    redis_database: int = Field(0, ge=0)
    redis_tls: bool = False
    sentinel_addresses: str = ""
    sentinel_master: str = "mymaster"
    messages_per_replica: int = Field(200, ge=1, description="target queue length per worker replica")
    activation_messages: int = Field(0, ge=0, description="scale from zero above this many messages")
    polling_interval: int = Field(15, ge=1)
    cooldown_period: int = Field(300, ge=0, description="seconds of empty queues before scaling to zero")


class Web(_Model):
    replicas: int = Field(2, ge=1)
    memory_request: str = "128Mi"
    memory_limit: str = "256Mi"
    cpu_request: str = "100m"
    cpu_limit: str = "1"


class ClusterConfig(_Model):
    namespace: str = Field("gradesync", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    image: str = Field(min_length=1)
    user_id: int = Field(10001, ge=1)
    worker: WorkerDefaults = WorkerDefaults()
    groups: dict[str, Group] = {}
    keda: Keda = Keda()
    web: Web = Web()


@dataclass(frozen=True)
class DestinationPlan:
    name: str
    vendor: str
    rate_limit_per_minute: int | None
    secret_envs: tuple[str, ...]
    #: the destinations file's ``group`` (its broker queue ``grades.<group>``; None: the shared queue)
    group: str | None = None


@dataclass(frozen=True)
class GroupPlan:
    name: str
    destinations: tuple[DestinationPlan, ...]
    concurrency: int
    min_replicas: int
    max_replicas: int
    #: processes each destination's rate limit can keep busy (None: not limited)
    usable: dict[str, int | None]


@dataclass(frozen=True)
class Plan:
    config: ClusterConfig
    destinations_text: str
    destinations: tuple[DestinationPlan, ...]
    groups: tuple[GroupPlan, ...]


def per_process_rate(worker: WorkerDefaults, concurrency: int) -> float:
    """Events/s one worker process can deliver to one destination."""
    return min(worker.events_per_second_per_process, concurrency / worker.vendor_latency_seconds)


def processes_usable(rate_limit_per_minute: int | None, per_process: float) -> int | None:
    """How many worker processes a destination's rate limit can keep busy (None: unlimited)."""
    if rate_limit_per_minute is None:
        return None
    return max(1, math.ceil(rate_limit_per_minute / 60.0 / per_process))


def _destinations(raw: dict[str, Any], source: str) -> tuple[DestinationPlan, ...]:
    table = raw.get("destinations")
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"{source}: no [destinations.<name>] table found")
    out = []
    for name, entry in sorted(table.items()):
        vendor = str(entry.get("vendor", ""))
        limit = entry.get("rate_limit_per_minute", VENDOR_RATE_LIMITS.get(vendor))
        names = [str(entry[k]) for k in SECRET_KEYS.get(vendor, {}) if k in entry]
        names += [str(k["key_env"]) for k in entry.get("rotation_keys", []) if isinstance(k, dict) and "key_env" in k]
        envs = tuple(sorted(set(names)))
        group = entry.get("group")
        out.append(DestinationPlan(name, vendor, int(limit) if limit else None, envs,
                                   str(group) if group else None))
    return tuple(out)


def make_plan(config: ClusterConfig, destinations_text: str, *, source: str = "destinations.toml") -> Plan:
    """Assign every destination to exactly one group (unlisted ones to ``default``) and size the groups."""
    dests = _destinations(tomllib.loads(destinations_text), source)
    by_name = {d.name: d for d in dests}
    assigned: dict[str, str] = {}
    for group, listed in config.groups.items():
        for name in listed.destinations:
            if name not in by_name:
                raise ConfigError(f"cluster file: group {group!r} names unknown destination {name!r}")
            if name in assigned:
                raise ConfigError(f"cluster file: destination {name!r} is in groups {assigned[name]!r} and {group!r}")
            assigned[name] = group
    for d in dests:  # the queue a destination's events go to is the queue its group's workers consume
        if d.group is not None and assigned.get(d.name) != d.group:
            raise ConfigError(f"destination {d.name!r} sets group = {d.group!r}: list it in the cluster file's "
                              f"[groups.{d.group}]")
        if d.group is None and d.name in assigned:
            raise ConfigError(f"cluster file: group {assigned[d.name]!r} lists {d.name!r}, whose destinations entry "
                              f"has no group = {assigned[d.name]!r} (its events would go to the shared queue)")
    members: dict[str, list[DestinationPlan]] = {}
    for d in dests:
        members.setdefault(assigned.get(d.name, DEFAULT_GROUP), []).append(d)
    groups = []
    for group, items in sorted(members.items()):
        spec: Group | None = config.groups.get(group)
        w = config.worker
        concurrency = (spec.concurrency if spec else None) or w.concurrency
        rate = per_process_rate(w, concurrency)
        usable = {d.name: processes_usable(d.rate_limit_per_minute, rate) for d in items}
        cap = (spec.max_replicas if spec else None) or w.max_replicas
        if all(u is not None for u in usable.values()):
            cap = min(cap, sum(u for u in usable.values() if u is not None))
        min_replicas = spec.min_replicas if spec and spec.min_replicas is not None else w.min_replicas
        if group == DEFAULT_GROUP:
            # the retry pump runs inside workers: one always-on worker re-queues due retries of every
            # destination, including those of groups scaled to zero (which KEDA then wakes)
            min_replicas = max(1, min_replicas)
        groups.append(GroupPlan(group, tuple(items), concurrency, min(min_replicas, cap), cap, usable))
    if DEFAULT_GROUP not in members:
        raise ConfigError("cluster file: every destination is in a named group; leave at least one in "
                          f"{DEFAULT_GROUP!r} (its always-on worker runs the retry pump)")
    return Plan(config, destinations_text, dests, tuple(groups))


def load_config(path: Path) -> ClusterConfig:
    try:
        return ClusterConfig.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
