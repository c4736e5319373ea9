"""Config rules live in the config: a file `gradesync config check` rejects makes every settings object
(worker, server, producer) raise too, so no process starts with a file the check refuses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from worker.settings import (
    ConfigError,
    ProducerSettings,
    ServerSettings,
    Settings,
    WorkerSettings,
    reset_settings,
)
from worker.vendors import TABLE, VENDORS

LS = """[destinations.ls]
vendor = "learningstudio"
base_url = "https://api.learningstudio.com"
application_id = "app"
consumer_key = "ck"
shared_secret_env = "CFG_LS_SECRET"
timeout = {timeout}
"""

RULES = [
    # (secret, timeout, visibility timeout, what the check says)
    ("too-short", 5.0, 90, "key 'shared_secret_env': Value error, the shared secret must be 16, 24 or 32 bytes"),
    ("0123456789abcdef", 20.0, 90, "key 'timeout': Value error, 20.0s x 4 requests exceeds the attempt time limit"),
    ("0123456789abcdef", 5.0, 30, "key 'timeout': Value error, 5.0s x 4 requests exceeds the attempt time limit (15s"),
]


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    reset_settings()
    yield
    reset_settings()


def _file(tmp_path: Path, timeout: float) -> Path:
    path = tmp_path / "destinations.toml"
    path.write_text(LS.format(timeout=timeout), encoding="utf-8")
    return path


@pytest.mark.parametrize(("secret", "timeout", "visibility", "message"), RULES)
def test_what_config_check_rejects_every_settings_object_rejects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str, timeout: float, visibility: int, message: str
) -> None:
    from worker.cli import cli

    path = _file(tmp_path, timeout)
    monkeypatch.setenv("CFG_LS_SECRET", secret)
    monkeypatch.setenv("GRADESYNC_DESTINATIONS", str(path))
    monkeypatch.setenv("GRADESYNC_VISIBILITY_TIMEOUT", str(visibility))
    result = CliRunner().invoke(cli, ["config", "check"])
    assert result.exit_code == 1
    assert message in result.output
    assert secret not in result.output
    for kind in (Settings, WorkerSettings, ServerSettings, ProducerSettings):
        reset_settings()
        with pytest.raises(ConfigError, match="destination 'ls'") as info:
            kind().destinations()
        assert message in str(info.value)


def test_a_file_within_the_rules_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFG_LS_SECRET", "0123456789abcdef0123456789abcdef")
    settings = WorkerSettings(destinations_file=_file(tmp_path, 18.0), visibility_timeout=90)  # 72 <= 75
    assert settings.destinations()["ls"].timeout == 18.0


def test_the_settings_objects_are_separate_over_one_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADESYNC_KEY_PREFIX", "shared")
    monkeypatch.setenv("GRADESYNC_WORKER_CONCURRENCY", "3")
    monkeypatch.setenv("GRADESYNC_MAX_BATCH", "7")
    worker, server, producer = WorkerSettings(), ServerSettings(), ProducerSettings()
    assert worker.key_prefix == server.key_prefix == producer.key_prefix == "shared"
    assert worker.worker_concurrency == 3 and not hasattr(server, "worker_concurrency")
    assert server.max_batch == 7 and not hasattr(worker, "max_batch") and not hasattr(producer, "api_token")
    assert Settings().worker_concurrency == 3 and Settings().max_batch == 7  # get_settings(): all of them


def test_the_vendor_table_is_the_one_source() -> None:
    from worker.adapters import REGISTRY
    from worker.settings import SECRET_KEYS, VENDOR_RATE_LIMITS

    assert VENDORS == ("learningstudio", "ltiaas", "edlink", "thoughtindustries", "lti_ags")
    assert set(REGISTRY) == set(SECRET_KEYS) == set(VENDORS)
    for row in TABLE:
        assert row.destination.model_fields["vendor"].annotation.__args__ == (row.name,)  # type: ignore[union-attr]
        assert row.target.model_fields["vendor"].default == row.name
        assert set(row.secrets) <= set(row.destination.model_fields)
        assert set(row.secrets.values()) <= set(row.destination.model_fields)
    assert VENDOR_RATE_LIMITS == {"thoughtindustries": 120.0}  # the only vendor documenting a limit


def test_event_validation_takes_the_vendor_map_explicitly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pydantic import ValidationError

    from worker.events import GradeEvent, format_errors

    # a configured destinations file is NOT consulted behind the caller's back
    monkeypatch.setenv("CFG_LS_SECRET", "0123456789abcdef")
    monkeypatch.setenv("GRADESYNC_DESTINATIONS", str(_file(tmp_path, 5.0)))
    data = {"destination": "ls", "learner_id": "u1", "target": {"course_id": "c", "item_id": "i"}}
    with pytest.raises(ValidationError) as info:
        GradeEvent.model_validate(data)
    assert any("vendor map" in line for line in format_errors(info.value))
    event = GradeEvent.validate_for(data, {"ls": "learningstudio"})
    assert event.vendor == "learningstudio" and event.item_key() == "c/i"
    with pytest.raises(ValidationError, match="unknown destination 'ls'"):
        GradeEvent.validate_for(data, {"other": "learningstudio"})
