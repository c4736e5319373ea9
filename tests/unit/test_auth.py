"""The token rule and who the client is behind (trusted or untrusted) proxies; no I/O."""

from __future__ import annotations

import pytest

from worker.ops.auth import MIN_TOKEN_LENGTH, TrustedProxies, check_token
from worker.settings import ConfigError


@pytest.mark.parametrize("token", ["", " ", "\t\n ", "a" * (MIN_TOKEN_LENGTH - 1), " " + "b" * 40, "c" * 40 + "\n"])
def test_a_short_blank_or_padded_token_is_refused(token: str) -> None:
    with pytest.raises(ConfigError, match="GRADESYNC_API_TOKEN"):
        check_token(token)


def test_a_long_enough_token_is_accepted() -> None:
    assert check_token("t" * MIN_TOKEN_LENGTH) == "t" * MIN_TOKEN_LENGTH


def test_forwarded_headers_of_an_untrusted_peer_are_ignored() -> None:
    proxies = TrustedProxies.parse("10.0.0.0/8")
    origin = proxies.resolve("203.0.113.9", "http", {"host": "app:8000", "x-forwarded-for": "1.2.3.4",
                                                     "x-forwarded-host": "evil.example", "x-forwarded-proto": "https"})
    assert (origin.client, origin.scheme, origin.host) == ("203.0.113.9", "http", "app:8000")


def test_behind_trusted_proxies_the_client_is_the_rightmost_untrusted_hop() -> None:
    proxies = TrustedProxies.parse("10.0.0.0/8, 192.168.1.1")
    headers = {"host": "app:8000", "x-forwarded-for": "6.6.6.6, 198.51.100.4, 192.168.1.1",
               "x-forwarded-host": "grades.example.org", "x-forwarded-proto": "https"}
    origin = proxies.resolve("10.1.2.3", "http", headers)
    assert (origin.client, origin.scheme, origin.host) == ("198.51.100.4", "https", "grades.example.org")
    assert proxies.resolve("10.1.2.3", "http", {"host": "h"}).client == "10.1.2.3"  # no header: the peer
    odd = proxies.resolve("10.1.2.3", "http", {"host": "h", "x-forwarded-proto": "gopher"})
    assert odd.scheme == "http"


@pytest.mark.parametrize("spec", ["nope", "10.0.0.0/33", "10.0.0.0/8,,300.1.1.1"])
def test_a_bad_trusted_proxies_value_is_refused(spec: str) -> None:
    with pytest.raises(ConfigError, match="GRADESYNC_TRUSTED_PROXIES"):
        TrustedProxies.parse(spec)
