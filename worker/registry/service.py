"""Applying destination tables to the registry (all-or-nothing), and reading it back as destinations.

``apply_document`` takes a parsed ``destinations.toml`` (``{"destinations": {name: table}}``) or the
tables of an HTTP request; it validates **every** table first (the settings validators; a secret may be
given directly, see :mod:`worker.registry.codec`) and stores nothing unless all are valid — otherwise
:class:`DocumentError` lists each problem by destination and key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis
import structlog

from worker.connections import redis_client
from worker.crypto import WireCipher
from worker.keys import Keys
from worker.registry.codec import EntryError, Prepared, prepare, unchanged
from worker.registry.lazy import read_map
from worker.registry.store import Registry
from worker.settings import CommonSettings, ConfigError, Destination, key_problem

log = structlog.get_logger("gradesync.registry")


class DocumentError(ConfigError):
    """Some tables are invalid: ``problems`` is a list of (destination, key, message); nothing was stored."""

    def __init__(self, source: str, problems: list[tuple[str, str, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{source}: destination {n!r}: {key_problem(k, m)}" for n, k, m in problems))


def registry_for(settings: CommonSettings, client: redis.Redis | None = None) -> Registry:
    return Registry(client or redis_client(settings.redis_url, socket_timeout=15, socket_connect_timeout=5),
                    Keys(settings.key_prefix))


def prepare_all(settings: CommonSettings, tables: Mapping[str, Any], *, source: str = "request",
                environ: Mapping[str, str] | None = None) -> list[Prepared]:
    """Validate every table; :class:`DocumentError` with every problem of every table."""
    cipher = WireCipher.optional(settings)
    env = os.environ if environ is None else environ
    prepared: list[Prepared] = []
    problems: list[tuple[str, str, str]] = []
    for name, table in tables.items():
        try:
            prepared.append(prepare(str(name), table, cipher=cipher, environ=env,
                                    attempt_time_limit=settings.attempt_time_limit))
        except EntryError as exc:
            problems.extend((str(name), k, m) for k, m in exc.problems)
    if problems:
        raise DocumentError(source, problems)
    return prepared


def apply_document(settings: CommonSettings, registry: Registry, raw: Mapping[str, Any], *, actor: str,
                   source: str = "request", audit: bool = True) -> dict[str, str]:
    """Upsert every destination of a parsed destinations document, all or nothing; name -> created|updated."""
    table = raw.get("destinations")
    if not isinstance(table, Mapping) or not table:
        raise DocumentError(source, [("", "", "no [destinations.<name>] table found")])
    unknown = sorted(set(raw) - {"destinations"})
    if unknown:
        raise DocumentError(source, [("", "", f"unknown top-level key {k!r}") for k in unknown])
    prepared = prepare_all(settings, table, source=source)
    return registry.upsert(keep_unchanged(settings, registry, prepared), actor=actor, source=source, audit=audit)


def keep_unchanged(settings: CommonSettings, registry: Registry, prepared: list[Prepared]) -> list[Prepared]:
    """``prepared`` with each entry that means what is stored already replaced by the stored text (so the
    registry sees it unchanged: no new version, no reload anywhere)."""
    with_secrets = [p for p in prepared if p.secrets]
    if not with_secrets:
        return prepared
    cipher = WireCipher.optional(settings)
    olds = dict(zip((p.name for p in with_secrets), registry.get_many([p.name for p in with_secrets]), strict=True))
    return [replace(p, stored=olds[p.name] or p.stored) if p.secrets and unchanged(olds[p.name], p, cipher) else p
            for p in prepared]


def read_document(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def apply_file(settings: CommonSettings, registry: Registry, path: Path, *, actor: str,
               audit: bool = True) -> dict[str, str]:
    return apply_document(settings, registry, read_document(path), actor=actor, source=str(path), audit=audit)


def current_destinations(settings: CommonSettings, registry: Registry | None = None, *,
                         validate: bool = True) -> Mapping[str, Destination]:
    """What the workers deliver to now, for a one-shot command: the registry once anything was applied to
    it (a worker or `gradesync serve` applies the destinations file at start-up), else the file. A map that
    builds each model on use (:mod:`worker.registry.lazy`); ``validate``: each entry is validated now (an
    invalid one is left out)."""
    registry = registry or registry_for(settings)
    version, entries = registry.snapshot()
    if version == 0:
        return settings.destinations()
    return read_map(settings, entries, validate=validate)[0]


#: set (to ``1``) by a command that applied the destinations file (when there is one) and read the registry
#: before starting worker processes: they need not apply it again nor validate every entry once more (with
#: 10 000 destinations each application validated them all, twice)
FILE_APPLIED = "GRADESYNC_DESTINATIONS_FILE_APPLIED"


def startup_destinations(settings: CommonSettings) -> Mapping[str, Destination]:
    """For a command starting workers: the destinations file applied (it keeps the file's rules: only
    ``*_env`` secrets), then what the registry holds; the file alone while Redis does not answer. Once
    applied, :data:`FILE_APPLIED` tells the processes it starts (they inherit the environment), which then
    neither read the file nor validate the registry's entries here (their runtime's registry view does,
    once: :class:`worker.registry.live.LiveDestinations`)."""
    from worker.settings import load_destinations

    path = settings.destinations_file
    applied = os.environ.get(FILE_APPLIED) == "1"
    if path.exists() and not applied:
        load_destinations(path, attempt_time_limit=settings.attempt_time_limit)
    registry = registry_for(settings)
    try:
        if path.exists() and not applied:
            apply_file(settings, registry, path, actor="startup", audit=False)
        found = current_destinations(settings, registry, validate=not applied)
        os.environ[FILE_APPLIED] = "1"  # also without a file: the registry alone, read and checked
        return found
    except (redis.RedisError, OSError) as exc:
        log.warning("registry_unavailable_at_start", error=type(exc).__name__)
        return settings.destinations()
    finally:
        registry.r.close()


def routing_destinations(settings: CommonSettings) -> Mapping[str, Destination]:
    """The destinations to declare the broker queues of (only their ``group`` is read): the current map of
    a worker or `gradesync serve`; else the registry's entries without validating them (the Celery app's
    configuration is read before a worker's registry view exists: reading the file there validated
    10 000 destinations once more a process, and a deployment with no file could not start); the file
    when nothing was ever applied to the registry or Redis does not answer."""
    from worker.settings import has_live_destinations

    if has_live_destinations(settings):
        return settings.destinations()
    registry = registry_for(settings)
    try:
        return current_destinations(settings, registry, validate=False)
    except (redis.RedisError, OSError):
        return settings.destinations()
    finally:
        registry.r.close()
