"""The one typed settings object, and the destinations file it points at.

Nothing else in gradesync reads the environment: every other module receives a :class:`Settings`
(from :func:`get_settings`, read once per process) or one of its :class:`Destination` entries.

``destinations.toml`` names each LMS destination, its vendor, endpoint, retry policy and credentials.
A credential key ending in ``_env`` names an environment variable holding the secret, so secrets are
never written in the file; they are resolved here into :class:`pydantic.SecretStr` fields.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

Vendor = Literal["learningstudio", "ltiaas", "edlink", "thoughtindustries", "lti_ags"]
VENDORS: tuple[str, ...] = ("learningstudio", "ltiaas", "edlink", "thoughtindustries", "lti_ags")

#: which credential field each ``*_env`` key of a vendor resolves into
SECRET_KEYS: dict[str, dict[str, str]] = {
    "learningstudio": {"shared_secret_env": "shared_secret"},
    "ltiaas": {"api_key_env": "api_key"},
    "edlink": {"integration_token_env": "integration_token"},
    "thoughtindustries": {"api_key_env": "api_key"},
    "lti_ags": {"private_key_env": "private_key"},
}


#: documented default rate limits (requests/minute) per vendor (../shared/reference/vendors.md): Thought
#: Industries' standard plan allows 120/min (burst 20); the others document none
VENDOR_RATE_LIMITS: dict[str, float] = {"thoughtindustries": 120.0}
VENDOR_BURSTS: dict[str, int] = {"thoughtindustries": 20}

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


class _DestinationBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
    base_url: str
    timeout: float = Field(10.0, gt=0, le=300, description="seconds per HTTP request")
    max_attempts: int = Field(8, ge=1, le=100, description="total attempts before dead-lettering")
    retry_base_delay: float = Field(2.0, gt=0, le=86_400)
    retry_max_delay: float = Field(600.0, gt=0, le=7 * 86_400)
    requeue_rate: float = Field(10.0, gt=0, description="default events/second for a DLQ requeue")
    # flow control (worker/flow): the destination, not the single event, reacts to pressure
    rate_limit_per_minute: float | None = Field(
        None, ge=0,
        description="requests/minute shared by every worker (absent: the vendor's documented limit; 0: none)")
    burst: int | None = Field(None, ge=1, description="requests allowed at once above the rate (default: 1 s worth)")
    max_concurrency: int | None = Field(
        None, ge=1, description="threads of one worker process this destination may hold (default: half)")
    max_event_age: float = Field(7 * 86_400.0, gt=0, description="seconds a parked/waiting event may wait")
    breaker_failures: int = Field(5, ge=1, description="consecutive transient failures that open the breaker")
    breaker_cooldown: float = Field(30.0, gt=0, description="seconds open before the first probe")
    breaker_max_cooldown: float = Field(600.0, gt=0, description="cap of the growing cool-down")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _vendor_rate_limit(cls, data: Any) -> Any:
        """An absent ``rate_limit_per_minute`` takes the vendor's documented limit; 0 means none."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        vendor = str(data.get("vendor"))
        if "rate_limit_per_minute" not in data:
            data["rate_limit_per_minute"] = VENDOR_RATE_LIMITS.get(vendor)
            if data["rate_limit_per_minute"] is not None and "burst" not in data:
                data["burst"] = VENDOR_BURSTS.get(vendor)
        elif data["rate_limit_per_minute"] == 0:
            data["rate_limit_per_minute"] = None
        return data

    @model_validator(mode="after")
    def _delays(self) -> _DestinationBase:
        if self.retry_max_delay < self.retry_base_delay:
            raise ValueError("retry_max_delay must be >= retry_base_delay")
        if self.breaker_max_cooldown < self.breaker_cooldown:
            raise ValueError("breaker_max_cooldown must be >= breaker_cooldown")
        return self

    @property
    def configured_burst(self) -> int:
        """Requests allowed at once above the rate: ``burst``, else 1 s worth of the rate."""
        if self.burst is not None:
            return self.burst
        rate = self.rate_limit_per_minute
        return max(1, int(rate / 60)) if rate else 1

    def missing_secrets(self) -> list[str]:
        """The ``*_env`` keys whose environment variable was not set."""
        missing = []
        for env_key, field in SECRET_KEYS[self.vendor].items():  # type: ignore[attr-defined]
            if getattr(self, field) is None:
                missing.append(f"{env_key} (${getattr(self, env_key)})")
        return missing


class LearningStudioDestination(_DestinationBase):
    vendor: Literal["learningstudio"]
    application_id: str = Field(min_length=1)
    consumer_key: str = Field(min_length=1)
    shared_secret_env: str = Field(min_length=1)
    shared_secret: SecretStr | None = None


class LtiaasDestination(_DestinationBase):
    vendor: Literal["ltiaas"]
    api_key_env: str = Field(min_length=1)
    api_key: SecretStr | None = None


class EdlinkDestination(_DestinationBase):
    vendor: Literal["edlink"]
    integration_token_env: str = Field(min_length=1)
    integration_token: SecretStr | None = None


class ThoughtIndustriesDestination(_DestinationBase):
    vendor: Literal["thoughtindustries"]
    api_key_env: str = Field(min_length=1)
    api_key: SecretStr | None = None
    mode: Literal["json", "jwt"] = "json"


AGS_SCOPES: tuple[str, ...] = (
    "https://purl.imsglobal.org/spec/lti-ags/scope/score",
    "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem",
)


class LtiRotationKey(BaseModel):
    """Another key published in the JWKS (the next one before a switch, the last one after it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kid: str = Field(min_length=1)
    key_env: str = Field(min_length=1, description="environment variable holding a private or public key PEM")
    key: SecretStr | None = None


class LtiAgsDestination(_DestinationBase):
    """LTI 1.3 AGS straight to the platform; see :mod:`worker.adapters.lti_ags`."""

    vendor: Literal["lti_ags"]
    client_id: str = Field(min_length=1)
    token_url: str = Field(pattern=r"^https?://")
    audience: str | None = Field(None, min_length=1, description="the assertion's aud (default: token_url)")
    private_key_env: str = Field(min_length=1)
    private_key: SecretStr | None = None
    kid: str = Field(min_length=1, description="RFC 7638 thumbprint of the signing key")
    rotation_keys: tuple[LtiRotationKey, ...] = ()
    scopes: tuple[str, ...] = Field(AGS_SCOPES, min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _rotation_secrets(cls, data: Any, info: ValidationInfo) -> Any:
        env = (info.context or {}).get("environ")
        if isinstance(data, dict) and isinstance(data.get("rotation_keys"), list) and env is not None:
            if any(isinstance(k, dict) and "key" in k for k in data["rotation_keys"]):
                raise ValueError("rotation_keys: a key is never written in the file; set key_env to the name "
                                 "of an environment variable holding its PEM")
            data = {**data, "rotation_keys": [
                {**k, "key": env[k["key_env"]]} if isinstance(k, dict) and env.get(str(k.get("key_env"))) else k
                for k in data["rotation_keys"]
            ]}
        return data

    @field_validator("scopes")
    @classmethod
    def _score_scope(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if AGS_SCOPES[0] not in value:
            raise ValueError(f"must include {AGS_SCOPES[0]} (scores are what gradesync posts)")
        return value

    @model_validator(mode="after")
    def _keys_match(self) -> LtiAgsDestination:
        from producers.lti_keys import KeyProblem, load_key

        problems = []
        if self.private_key is not None:
            try:
                load_key(self.private_key.get_secret_value(), kid=self.kid)
            except KeyProblem as exc:
                problems.append(f"private_key_env (${self.private_key_env}): {exc}")
        for i, rk in enumerate(self.rotation_keys):
            if rk.key is not None:
                try:
                    load_key(rk.key.get_secret_value(), kid=rk.kid, require_private=False)
                except KeyProblem as exc:
                    problems.append(f"rotation_keys[{i}].key_env (${rk.key_env}): {exc}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def missing_secrets(self) -> list[str]:
        missing = super().missing_secrets()
        return missing + [f"rotation_keys.key_env (${k.key_env})" for k in self.rotation_keys if k.key is None]


Destination = Annotated[
    LearningStudioDestination | LtiaasDestination | EdlinkDestination | ThoughtIndustriesDestination
    | LtiAgsDestination,
    Field(discriminator="vendor"),
]
_DESTINATION = TypeAdapter[Any](Destination)


def parse_destinations(
    raw: Mapping[str, Any], *, source: str = "destinations.toml", environ: Mapping[str, str] | None = None
) -> dict[str, Destination]:
    """Validate the parsed TOML document; secrets are resolved from ``environ``.

    Raises :class:`ConfigError` naming the file, the destination and the key of every problem.
    """
    env = os.environ if environ is None else environ
    table = raw.get("destinations")
    if not isinstance(table, Mapping) or not table:
        raise ConfigError(f"{source}: no [destinations.<name>] table found")
    unknown_top = sorted(set(raw) - {"destinations"})
    problems: list[str] = [f"{source}: unknown top-level key {k!r}" for k in unknown_top]
    result: dict[str, Destination] = {}
    for name, entry in table.items():
        if not isinstance(entry, Mapping):
            problems.append(f"{source}: destination {name!r}: must be a table")
            continue
        data = dict(entry)
        data["name"] = name
        for field in set(SECRET_KEYS.get(str(data.get("vendor")), {}).values()):
            if field in data:
                problems.append(
                    f"{source}: destination {name!r}: key {field!r}: secrets are never written in the "
                    f"file; set {field}_env to the name of an environment variable"
                )
                data.pop(field)
        for env_key, field in SECRET_KEYS.get(str(data.get("vendor")), {}).items():
            var = data.get(env_key)
            if isinstance(var, str) and env.get(var):
                data[field] = env[var]
        try:
            result[name] = _DESTINATION.validate_python(data, context={"environ": env})
        except ValidationError as exc:
            for err in exc.errors():
                loc = [str(p) for p in err["loc"]]
                if loc and loc[0] in VENDORS:  # the discriminated union's tag
                    loc = loc[1:]
                key = ".".join(loc) if loc else "vendor" if err["type"].startswith("union_tag") else "(table)"
                msg = err["msg"]
                if err["type"] == "union_tag_invalid":
                    msg = f"must be one of {', '.join(VENDORS)}"
                elif err["type"] == "union_tag_not_found":
                    key, msg = "vendor", f"required (one of {', '.join(VENDORS)})"
                problems.append(f"{source}: destination {name!r}: key {key!r}: {msg}")
    if problems:
        raise ConfigError("\n".join(problems))
    return result


def load_destinations(path: Path, *, environ: Mapping[str, str] | None = None) -> dict[str, Destination]:
    """Read and validate a destinations TOML file."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: destinations file not found (set GRADESYNC_DESTINATIONS)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_destinations(raw, source=str(path), environ=environ)


class Settings(BaseSettings):
    """Process-wide configuration, read from ``GRADESYNC_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="GRADESYNC_", extra="ignore", frozen=True, populate_by_name=True)

    # both accept redis://, rediss:// (TLS) and redis+sentinel://h1:26379,h2:26379/<master>/<db>: see
    # producers.connections, the one place these URLs are turned into clients and broker options
    redis_url: str = Field("redis://localhost:6379/0", description="state store; broker unless broker_url")
    broker_url: str | None = Field(None, description="redis://…, redis+sentinel://… or amqp://…; defaults to redis_url")
    destinations_file: Path = Field(Path("destinations.toml"), alias="GRADESYNC_DESTINATIONS")
    key_prefix: str = Field("gradesync", description="prefix of every Redis key gradesync writes")
    ledger_ttl_days: float = Field(30.0, gt=0, description="how long event ledgers are kept")
    visibility_timeout: int = Field(
        90, ge=30, le=3600, description="seconds before an unacknowledged message is redelivered"
    )
    worker_concurrency: int = Field(16, ge=1, le=512, description="threads per worker process")
    worker_processes: int | None = Field(
        None, ge=1, le=256, description="worker processes per `gradesync worker` (default: one per core)"
    )
    task_events: bool = Field(False, description="send Celery task events (Flower needs them; ~15 % CPU)")
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"
    api_token: SecretStr | None = Field(None, description="bearer token of the HTTP API and dashboard")
    insecure_dev: bool = Field(False, description="allow `gradesync serve` without an API token")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="HTTP ingest request body limit")
    max_batch: int = Field(1000, ge=1, description="events per HTTP ingest request")
    max_future_skew_seconds: float = Field(
        300.0, ge=0, le=86_400, description="how far in the future an event's occurred_at may be (clock skew)"
    )
    secret_key: SecretStr | None = Field(
        None, description="Fernet key(s) encrypting per-event secrets at rest; comma-separated, first encrypts"
    )
    dead_letter_ttl_days: float = Field(
        30.0, ge=0, description="dead letters (and their encrypted secrets) expire after this; 0 = never"
    )
    heartbeat_file: Path | None = Field(None, description="file a worker touches every 10 s (liveness probe)")
    trusted_proxies: str = Field(
        "", description="comma-separated CIDRs of reverse proxies whose X-Forwarded-* headers are believed"
    )
    auth_fail_limit: int = Field(10, ge=1, description="failed logins / bearer tokens per client per window")
    auth_fail_window: int = Field(300, ge=1, description="seconds of the failed-authentication window")
    stranded_after: float = Field(
        300.0, ge=1, le=86_400, description="seconds an event may stay queued without a message before the "
        "sweeper queues it again (4x that while its queue is not empty)"
    )
    shutdown_grace: float = Field(
        25.0, ge=5, le=3600, description="seconds a SIGTERMed worker has to finish or hand back its attempts"
    )

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    def processes(self) -> int:
        """Worker processes: ``worker_processes``, else one per core this process may run on."""
        if self.worker_processes:
            return self.worker_processes
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)

    @property
    def ledger_ttl_seconds(self) -> int:
        return int(self.ledger_ttl_days * 86_400)

    @property
    def dead_letter_ttl_seconds(self) -> int | None:
        """None: dead letters never expire."""
        return int(self.dead_letter_ttl_days * 86_400) or None

    def destinations(self) -> dict[str, Destination]:
        """The validated destinations (read once per process and cached)."""
        return _destinations_cached(self.destinations_file.resolve())

    def vendors(self) -> dict[str, str]:
        """destination name -> vendor."""
        return {name: d.vendor for name, d in self.destinations().items()}


@lru_cache(maxsize=8)
def _destinations_cached(path: Path) -> dict[str, Destination]:
    return load_destinations(path)


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
