"""Shared pieces of the lti_ags unit tests: a key, a destination, an in-memory cache, a fake platform."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs

import httpx
from pydantic import SecretStr

from worker.adapters.base import AdapterContext
from worker.adapters.client import make_client
from worker.events import GradeEvent
from worker.lti_keys import ToolKey, generate_key
from worker.vendors.lti import LtiAgsDestination

BASE = "https://canvas.example.edu"
TOKEN_URL = "https://sso.example.edu/login/oauth2/token"
CLIENT_ID = "10000000000042"
VENDORS = {"vendors": {"lti": "lti_ags"}}
SCORE = "https://purl.imsglobal.org/spec/lti-ags/scope/score"
LINEITEM = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem"


@lru_cache(maxsize=2)
def key(n: int = 0) -> ToolKey:
    return generate_key()


def destination(**over: Any) -> LtiAgsDestination:
    k = key()
    data: dict[str, Any] = {"name": "lti", "vendor": "lti_ags", "base_url": BASE, "client_id": CLIENT_ID,
                            "token_url": TOKEN_URL, "private_key_env": "LTI_KEY",
                            "private_key": SecretStr(k.private_pem().decode()), "kid": k.kid}
    data.update(over)
    return LtiAgsDestination(**data)


class DictCache:
    """The shared cache's contract in memory (SET NX included)."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], Any] = {}
        self.ttls: dict[tuple[str, str], int] = {}

    def get_json(self, namespace: str, key: str) -> Any | None:
        return self.data.get((namespace, key))

    def set_json(self, namespace: str, key: str, value: Any, ttl_seconds: int) -> None:
        self.data[(namespace, key)] = value
        self.ttls[(namespace, key)] = ttl_seconds

    def delete(self, namespace: str, key: str) -> None:
        self.data.pop((namespace, key), None)

    def add_json(self, namespace: str, key: str, value: Any, ttl_seconds: int) -> bool:
        if (namespace, key) in self.data:
            return False
        self.set_json(namespace, key, value, ttl_seconds)
        return True


def token_answer(token: str = "tok-1", expires_in: int = 3600,  # noqa: S107 - a fake token
                 scope: str = f"{SCORE} {LINEITEM}") -> httpx.Response:
    return httpx.Response(200, json={"access_token": token, "token_type": "Bearer", "expires_in": expires_in,
                                     "scope": scope})


class Platform:
    """A MockTransport handler: the token endpoint answers from ``tokens``, everything else from ``answers``."""

    def __init__(self, *answers: httpx.Response, tokens: list[httpx.Response] | None = None) -> None:
        self.answers = list(answers) or [httpx.Response(200, json={})]
        self.tokens = tokens or [token_answer("tok-1"), token_answer("tok-2"), token_answer("tok-3")]
        self.requests: list[httpx.Request] = []
        self.token_requests: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if str(request.url) == TOKEN_URL:
            self.token_requests.append({k: v[0] for k, v in parse_qs(request.content.decode()).items()})
            return self.tokens.pop(0) if len(self.tokens) > 1 else self.tokens[0]
        self.requests.append(request)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def bodies(self) -> list[Any]:
        return [json.loads(r.content) if r.content else None for r in self.requests]


def context(handler: Callable[[httpx.Request], httpx.Response], dest: LtiAgsDestination | None = None,
            cache: DictCache | None = None) -> AdapterContext:
    d = dest or destination()
    return AdapterContext(http=make_client(d, transport=httpx.MockTransport(handler)), cache=cache or DictCache())


def event(**over: Any) -> GradeEvent:
    data: dict[str, Any] = {"event_id": "6f1c2a4e-0d1b-4c55-9a0e-2f7b8d3c1e11", "destination": "lti",
                            "learner_id": "lti-user-42", "occurred_at": "2025-03-04T05:06:07.891234+02:00",
                            "score_given": 83, "score_maximum": 100, "comment": "Well argued",
                            "target": {"line_item_url": f"{BASE}/api/lti/courses/7/line_items/9"}}
    data.update(over)
    return GradeEvent.model_validate(data, context=VENDORS)
