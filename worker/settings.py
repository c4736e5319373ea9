"""The typed settings objects, and the destinations file they point at.

Nothing else in gradesync reads the environment: every other module receives settings —
:class:`WorkerSettings`, :class:`ServerSettings` or :class:`ProducerSettings`, each a
:class:`CommonSettings` over the same ``GRADESYNC_*`` variables; :class:`Settings` (from
:func:`get_settings`, read once per process) has them all — or one of their :class:`Destination` entries.
What a destination is, per vendor, comes from the vendor table (:mod:`worker.vendors`).

``destinations.toml`` names each LMS destination, its vendor, endpoint, retry policy and credentials.
A credential key ending in ``_env`` names an environment variable holding the secret, so secrets are
never written in the file; they are resolved here into :class:`pydantic.SecretStr` fields.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, TypeAdapter, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.vendors import TABLE, VENDORS, DestinationBase, tagged_union

#: which credential field each ``*_env`` key of a vendor resolves into
SECRET_KEYS: dict[str, dict[str, str]] = {row.name: dict(row.secrets) for row in TABLE}

#: documented default rate limits (requests/minute) and bursts per vendor, from the vendor table
VENDOR_RATE_LIMITS: dict[str, float] = {
    row.name: row.rate_limit_per_minute for row in TABLE if row.rate_limit_per_minute is not None
}
VENDOR_BURSTS: dict[str, int] = {row.name: row.burst for row in TABLE if row.burst is not None}

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "sentinel://")


def is_redis_url(url: str) -> bool:
    """Does ``url`` point at Redis (rather than an AMQP broker)?"""
    return url.startswith(_REDIS_SCHEMES)


def without_credentials(url: str) -> str:
    """``url`` with any ``user:password@`` removed (for messages and logs)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.rsplit('@', 1)[-1]}" if sep else url.rsplit("@", 1)[-1]


class ConfigError(Exception):
    """The configuration is invalid."""


if TYPE_CHECKING:
    #: any vendor's destination (statically: the base; at run time: the union tagged by ``vendor``)
    Destination = DestinationBase
else:
    Destination = tagged_union(row.destination for row in TABLE)
_DESTINATION = TypeAdapter[Any](Destination)


def parse_destinations(
    raw: Mapping[str, Any], *, source: str = "destinations.toml", environ: Mapping[str, str] | None = None,
    attempt_time_limit: float | None = None,
) -> dict[str, Destination]:
    """Validate the parsed TOML document; secrets are resolved from ``environ``.

    ``attempt_time_limit`` (seconds, from the settings reading the file) is what an attempt's requests
    must fit in. Raises :class:`ConfigError` naming the file, the destination and the key of every
    problem.
    """
    env = os.environ if environ is None else environ
    table = raw.get("destinations")
    if not isinstance(table, Mapping) or not table:
        raise ConfigError(f"{source}: no [destinations.<name>] table found")
    unknown_top = sorted(set(raw) - {"destinations"})
    problems: list[str] = [f"{source}: unknown top-level key {k!r}" for k in unknown_top]
    result: dict[str, Destination] = {}
    for name, entry in table.items():
        dest, errs = validate_destination(str(name), entry, environ=env, attempt_time_limit=attempt_time_limit)
        problems.extend(f"{source}: destination {name!r}: {key_problem(k, m)}" for k, m in errs)
        if dest is not None:
            result[name] = dest
    if problems:
        raise ConfigError("\n".join(problems))
    return result


def key_problem(key: str, msg: str) -> str:
    """One problem as the file's messages say it (key ``""``: the destination's table itself)."""
    return f"key {key!r}: {msg}" if key else msg


def validate_destination(
    name: str, entry: Any, *, environ: Mapping[str, str], attempt_time_limit: float | None = None,
    direct_secrets: bool = False,
) -> tuple[Destination | None, list[tuple[str, str]]]:
    """Validate one ``[destinations.<name>]`` table: the destination, or each problem as (key, message).

    ``direct_secrets``: the caller already moved secret values given directly out of ``entry`` (the
    run-time registry, :mod:`worker.registry`); otherwise a secret value in the table is refused.
    """
    if not isinstance(entry, Mapping):
        return None, [("", "must be a table")]
    problems: list[tuple[str, str]] = []
    data = dict(entry)
    data["name"] = name
    if not direct_secrets:
        for field in set(SECRET_KEYS.get(str(data.get("vendor")), {}).values()):
            if field in data:
                problems.append((field, "secrets are never written in the file; set "
                                        f"{field}_env to the name of an environment variable"))
                data.pop(field)
    for env_key, field in SECRET_KEYS.get(str(data.get("vendor")), {}).items():
        var = data.get(env_key)
        if isinstance(var, str) and environ.get(var):
            data[field] = environ[var]
    try:
        context = {"environ": environ, "attempt_time_limit": attempt_time_limit}
        return _DESTINATION.validate_python(data, context=context), problems
    except ValidationError as exc:
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            if loc and loc[0] in VENDORS:  # the discriminated union's tag
                loc = loc[1:]
            env_keys = {f: k for k, f in SECRET_KEYS.get(str(data.get("vendor")), {}).items()}
            if len(loc) == 1 and loc[0] in env_keys and not direct_secrets:  # a resolved secret: the file's key
                loc = [env_keys[loc[0]]]
            key = ".".join(loc) if loc else "vendor" if err["type"].startswith("union_tag") else "(table)"
            msg = err["msg"]
            if err["type"] == "union_tag_invalid":
                msg = f"must be one of {', '.join(VENDORS)}"
            elif err["type"] == "union_tag_not_found":
                key, msg = "vendor", f"required (one of {', '.join(VENDORS)})"
            problems.append((key, msg))
        return None, problems


def load_destinations(
    path: Path, *, environ: Mapping[str, str] | None = None, attempt_time_limit: float | None = None
) -> dict[str, Destination]:
    """Read and validate a destinations TOML file."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: destinations file not found (set GRADESYNC_DESTINATIONS)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_destinations(raw, source=str(path), environ=environ, attempt_time_limit=attempt_time_limit)


class CommonSettings(BaseSettings):
    """What every gradesync process reads from ``GRADESYNC_*``: where the state and the broker are, the
    destinations file, and how long records live. The narrower objects below add their own fields over
    the same environment, so a worker, the HTTP server and a producer never see each other's knobs."""

    model_config = SettingsConfigDict(env_prefix="GRADESYNC_", extra="ignore", frozen=True, populate_by_name=True)

    # both accept redis://, rediss:// (TLS) and redis+sentinel://h1:26379,h2:26379/<master>/<db>: see
    # worker.connections, the one place these URLs are turned into clients and broker options
    redis_url: str = Field("redis://localhost:6379/0", description="state store; broker unless broker_url")
    broker_url: str | None = Field(None, description="redis://…, redis+sentinel://… or amqp://…; defaults to redis_url")
    destinations_file: Path = Field(Path("destinations.toml"), alias="GRADESYNC_DESTINATIONS")
    key_prefix: str = Field("gradesync", description="prefix of every Redis key gradesync writes")
    ledger_ttl_days: float = Field(30.0, gt=0, description="how long event ledgers are kept")
    visibility_timeout: int = Field(
        90, ge=30, le=3600, description="seconds before an unacknowledged message is redelivered"
    )
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"
    secret_key: SecretStr | None = Field(
        None, description="Fernet key(s) encrypting per-event secrets at rest; comma-separated, first encrypts"
    )
    dead_letter_ttl_days: float = Field(
        30.0, ge=0, description="dead letters (and their encrypted secrets) expire after this; 0 = never"
    )
    audit_rate_share: float = Field(
        0.2, gt=0, le=1, description="share of a destination's rate limit an audit's reads may use (worker/audit)"
    )
    audit_unlimited_rate: float = Field(
        120.0, gt=0, description="reads/minute of an audit of a destination with no rate limit"
    )
    destination_cache: int = Field(
        1000, ge=1, description="destination models and adapters a process keeps built (the most recently "
                                "used; the others cost only their stored entry: worker/registry/lazy.py)")

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def attempt_time_limit(self) -> int:
        """Seconds one attempt may run: the visibility timeout - 15 (then the broker redelivers)."""
        return self.visibility_timeout - 15

    @property
    def ledger_ttl_seconds(self) -> int:
        return int(self.ledger_ttl_days * 86_400)

    @property
    def dead_letter_ttl_seconds(self) -> int | None:
        """None: dead letters never expire."""
        return int(self.dead_letter_ttl_days * 86_400) or None

    def destinations(self) -> Mapping[str, Destination]:
        """The validated destinations (read once per process and cached).

        Every rule about the file is a validator (including the one that needs these settings: request
        timeouts must fit :attr:`attempt_time_limit`), so every process refuses the same files.
        """
        live = _LIVE.get(id(self))
        if live:  # a worker's or `gradesync serve`'s settings: the run-time registry (worker.registry)
            return live[1][-1]()
        return _destinations_cached(self.destinations_file.resolve(), self.attempt_time_limit)

    def vendors(self) -> dict[str, str]:
        """destination name -> vendor (the map :class:`worker.events.GradeEvent` validation takes)."""
        from worker.registry.lazy import vendors_of  # the registry's map answers without building models

        return vendors_of(self.destinations())


class ProducerSettings(CommonSettings):
    """A publisher of grade events (``publish``, ``gradesync publish``)."""

    max_future_skew_seconds: float = Field(
        300.0, ge=0, le=86_400, description="how far in the future an event's occurred_at may be (clock skew)"
    )


class WorkerSettings(CommonSettings):
    """``gradesync worker``: threads, processes, shutdown and the sweeper."""

    worker_concurrency: int = Field(16, ge=1, le=512, description="threads per worker process")
    worker_processes: int | None = Field(
        None, ge=1, le=256, description="worker processes per `gradesync worker` (default: one per core)"
    )
    worker_cpu_affinity: Literal["auto", "on", "off"] = Field(
        "auto", description="pin worker processes to CPUs: `auto` when several share out evenly over the cores "
        "(the default one per core), `on` always, `off` never (see worker/affinity.py)"
    )
    task_events: bool = Field(False, description="send Celery task events (Flower needs them; ~15 % CPU)")
    heartbeat_file: Path | None = Field(None, description="file a worker touches every 10 s (liveness probe)")
    stranded_after: float = Field(
        300.0, ge=1, le=86_400, description="seconds an event may stay queued without a message before the "
        "sweeper queues it again (4x that while its queue is not empty)"
    )
    shutdown_grace: float = Field(
        25.0, ge=5, le=3600, description="seconds a SIGTERMed worker has to finish or hand back its attempts"
    )

    def processes(self) -> int:
        """Worker processes: ``worker_processes``, else one per core this process may run on."""
        if self.worker_processes:
            return self.worker_processes
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)


class ServerSettings(ProducerSettings):
    """``gradesync serve``: the HTTP API (which ingests events, so it is a producer too) and dashboard."""

    api_token: SecretStr | None = Field(None, description="bearer token of the HTTP API and dashboard")
    insecure_dev: bool = Field(False, description="allow `gradesync serve` without an API token")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="HTTP ingest request body limit")
    max_batch: int = Field(1000, ge=1, description="events per HTTP ingest request")
    trusted_proxies: str = Field(
        "", description="comma-separated CIDRs of reverse proxies whose X-Forwarded-* headers are believed"
    )
    auth_fail_limit: int = Field(10, ge=1, description="failed logins / bearer tokens per client per window")
    auth_fail_window: int = Field(300, ge=1, description="seconds of the failed-authentication window")
    metrics_all_destinations_up_to: int = Field(
        100, ge=0, description="/metrics has series for every destination up to this many; above it only for "
                               "those active in the last metrics_active_seconds (or with something waiting)")
    metrics_active_seconds: float = Field(
        3600.0, gt=0, description="how recent a destination's last delivery attempt must be for its /metrics series")


class Settings(WorkerSettings, ServerSettings):
    """Every field at once: what :func:`get_settings` returns to the CLI's sub-commands and to modules
    shared by several processes (the one-process ``gradesync`` command runs any of them)."""


#: id(settings) -> (those settings, the views installed for them: the last one answers). Keyed by the
#: settings object a worker or `gradesync serve` was built with (held here, so the id stays theirs), not by
#: the registry: another object in the process (a producer's, a test's) reads the file or the registry
#: itself, never a view it did not install.
_LIVE: dict[int, tuple[CommonSettings, list[Callable[[], Mapping[str, Destination]]]]] = {}


def has_live_destinations(settings: CommonSettings) -> bool:
    """Was a live view installed for these settings (a worker's, `gradesync serve`'s)?"""
    return bool(_LIVE.get(id(settings)))


def refresh_live_destinations(settings: CommonSettings) -> bool:
    """Look at the run-time registry now instead of at the next poll (a message of a destination this
    process does not know yet); True when the map changed."""
    entry = _LIVE.get(id(settings))
    refresh = getattr(entry[1][-1], "refresh", None) if entry else None
    return bool(refresh()) if callable(refresh) else False


def install_live_destinations(settings: CommonSettings, current: Callable[[], Mapping[str, Destination]]) -> None:
    """From now on ``settings.destinations()`` is ``current()`` (the run-time registry's current map). The
    file's parsed copy is dropped from the cache: with 10 000 destinations it is ~16 MB a process that
    nothing reads any more (read again if another settings object asks for the file)."""
    _LIVE.setdefault(id(settings), (settings, []))[1].append(current)
    _destinations_cached.cache_clear()


def uninstall_live_destinations(settings: CommonSettings, current: Callable[[], Mapping[str, Destination]]) -> None:
    """``current`` is closed: the one installed before it, else the file."""
    entry = _LIVE.get(id(settings))
    if entry is None:
        return
    if current in entry[1]:
        entry[1].remove(current)
    if not entry[1]:
        del _LIVE[id(settings)]


@lru_cache(maxsize=8)
def _destinations_cached(path: Path, attempt_time_limit: float) -> dict[str, Destination]:
    return load_destinations(path, attempt_time_limit=attempt_time_limit)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings and destinations (tests, and `gradesync` sub-commands that set env)."""
    get_settings.cache_clear()
    _destinations_cached.cache_clear()


def environ_value(name: str) -> str | None:
    """Read one environment variable (for the few CLI helpers that need a named one)."""
    return os.environ.get(name)
