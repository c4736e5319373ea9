"""Settings and the destinations file: every problem named with the file, destination and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.settings import ConfigError, Settings, load_destinations, parse_destinations

GOOD = {
    "destinations": {
        "acme-ls": {"vendor": "learningstudio", "base_url": "https://api.learningstudio.com",
                    "application_id": "app", "consumer_key": "ck", "shared_secret_env": "ACME_LS_SECRET"},
        "acme-lt": {"vendor": "ltiaas", "base_url": "https://acme.ltiaas.com/", "api_key_env": "ACME_LT_KEY",
                    "max_attempts": 3},
        "acme-ed": {"vendor": "edlink", "base_url": "https://ed.link", "integration_token_env": "ED"},
        "acme-ti": {"vendor": "thoughtindustries", "base_url": "https://acme.thoughtindustries.com",
                    "api_key_env": "TI", "mode": "jwt"},
    }
}


def test_valid_file_resolves_secrets_from_the_environment() -> None:
    dests = parse_destinations(GOOD, environ={"ACME_LS_SECRET": "0123456789abcdef", "ACME_LT_KEY": "k"})
    ls = dests["acme-ls"]
    assert ls.vendor == "learningstudio" and ls.timeout == 10.0 and ls.max_attempts == 8
    assert ls.shared_secret is not None and ls.shared_secret.get_secret_value() == "0123456789abcdef"
    assert dests["acme-lt"].base_url == "https://acme.ltiaas.com" and dests["acme-lt"].max_attempts == 3
    assert dests["acme-ti"].mode == "jwt"  # type: ignore[union-attr]
    assert dests["acme-ed"].missing_secrets() == ["integration_token_env ($ED)"]
    assert "0123456789abcdef" not in repr(ls)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"vendor": "moodle", "base_url": "https://x"}, "key 'vendor': must be one of learningstudio, ltiaas"),
        ({"base_url": "https://x"}, "key 'vendor': required"),
        ({"vendor": "ltiaas", "base_url": "ftp://x", "api_key_env": "K"}, "key 'base_url': Value error, must start"),
        ({"vendor": "ltiaas", "base_url": "https://x"}, "key 'api_key_env': Field required"),
        ({"vendor": "ltiaas", "base_url": "https://x", "api_key_env": "K", "timeout": 0},
         "key 'timeout': Input should be greater than 0"),
        ({"vendor": "ltiaas", "base_url": "https://x", "api_key_env": "K", "max_attempts": 0},
         "key 'max_attempts': Input should be greater than or equal to 1"),
        ({"vendor": "ltiaas", "base_url": "https://x", "api_key_env": "K", "retry_base_delay": 10,
          "retry_max_delay": 5}, "retry_max_delay must be >= retry_base_delay"),
        ({"vendor": "ltiaas", "base_url": "https://x", "api_key_env": "K", "colour": "red"},
         "key 'colour': Extra inputs are not permitted"),
        ({"vendor": "ltiaas", "base_url": "https://x", "api_key": "inline"},
         "key 'api_key': secrets are never written in the file"),
        ({"vendor": "thoughtindustries", "base_url": "https://x", "api_key_env": "K", "mode": "xml"},
         "key 'mode': Input should be 'json' or 'jwt'"),
    ],
)
def test_invalid_entries_name_file_destination_and_key(entry: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_destinations({"destinations": {"bad-one": entry}}, source="conf/destinations.toml", environ={})
    message = str(info.value)
    assert "conf/destinations.toml: destination 'bad-one': " in message
    assert expected in message, message


def test_empty_or_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no \[destinations\.<name>\] table"):
        parse_destinations({}, source="d.toml", environ={})
    with pytest.raises(ConfigError, match="destinations file not found"):
        load_destinations(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[destinations.x\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_destinations(broken)


def test_settings_read_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRADESYNC_REDIS_URL", "redis://example:6380/2")
    monkeypatch.setenv("GRADESYNC_DESTINATIONS", str(tmp_path / "d.toml"))
    monkeypatch.setenv("GRADESYNC_VISIBILITY_TIMEOUT", "120")
    s = Settings()
    assert s.redis_url == "redis://example:6380/2"
    assert s.broker == "redis://example:6380/2"  # the broker defaults to the Redis URL
    assert s.destinations_file == tmp_path / "d.toml"
    assert s.visibility_timeout == 120
    monkeypatch.setenv("GRADESYNC_BROKER_URL", "amqp://guest:guest@localhost:5672//")
    assert Settings().broker.startswith("amqp://")
