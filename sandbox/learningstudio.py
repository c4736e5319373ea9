"""A strict simulator of Pearson LearningStudio's gradebook API (OAuth 1.0a CMAC-AES).

Served routes (every one needs a valid ``X-Authorization`` signature, else 401):

``GET  /courses/{course}/items/{item}/gradebookItem``        the content item's gradebook item
``GET|POST|PUT|DELETE /users/{user}/courses/{course}/gradebookItems/{guid}/grade``
                                                             one student's grade (also under
                                                             ``/gradebook/gradebookItems/``)

Signatures are checked like the real service: the consumer key and application id, the CMAC over the
base string, the realm (the URL the client addressed), a timestamp within ±300 s, and a nonce never
seen before (a replay is refused). Gradebook items are provisioned on first lookup with
``pointsPossible`` 100 and a GUID derived from course+item; content item ids starting with ``unknown-``
are not gradable (404). POST creates a grade (201 + ``Location``) and is refused when the grade exists
(400); PUT updates one (204) or answers 404; GET answers 404 ``Grade not found`` when there is none.
Bodies must be JSON (else 406) shaped ``{"grade": {"points"?, "letterGrade"?, "comments"?}}`` (else 400).
Errors are Pearson's plain "message text".

``configure`` switches (``POST /_sandbox/config``):

``{"items": {"<course>/<item>": {"pointsPossible": 50, "id": "<guid>"?}}}``  seed gradebook items
``{"unknown_items": ["<course>/<item>"]}``                                   make items 404
``{"blank_grades": ["<user>/<course>/<item or guid>"]}``                    add a blank grade (an id,
                                                                            empty fields): "deleted by
                                                                            the instructor"
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
import uuid
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import unquote

from sandbox.base import Handler, Request, Response, SandboxApp, demo_score
from worker.adapters import oauth1_cmac

_SEG = r"[^/]+"
_ITEM = rf"/courses/(?P<course>{_SEG})/items/(?P<item>{_SEG})/gradebookItem"
_GRADE = (
    rf"/users/(?P<user>{_SEG})/courses/(?P<course>{_SEG})/(?:gradebook/)?gradebookItems/(?P<guid>{_SEG})/grade"
)
_GRADE_FIELDS = {"points", "letterGrade", "comments", "shareWithStudent"}
_READ_ONLY_FIELDS = {"id", "updatedDate", "gradedStudent"}
_BLANK: dict[str, Any] = {"points": None, "letterGrade": "", "comments": ""}
DEFAULT_POINTS_POSSIBLE = 100
_FIRST_GRADE_ID = 1_051_754_261


def _unquote(match: re.Match[str], name: str) -> str:
    return unquote(match.group(name))


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


class LearningStudioSandbox(SandboxApp):
    vendor = "learningstudio"
    DEMO_CREDENTIALS: ClassVar[dict[str, str]] = {
        "application_id": "demo-application-id",
        "consumer_key": "demo-consumer-key",
        "shared_secret": "demo-secret-0016",  # AES-CMAC key: 16, 24 or 32 bytes
    }
    DEMO_DESTINATION = "demo-ls"

    @classmethod
    def destination_keys(cls, url: str, secret_env: str, *, lti_kid: str | None = None) -> str:
        creds = cls.DEMO_CREDENTIALS
        return (f'application_id = "{creds["application_id"]}"\nconsumer_key = "{creds["consumer_key"]}"\n'
                f'shared_secret_env = "{secret_env}"\n')

    @classmethod
    def demo_event(cls, i: int, urls: Mapping[str, str]) -> dict[str, Any]:
        return {**demo_score(i), "learner_id": f"{28456671 + i}",
                "target": {"course_id": "31388494", "item_id": "100561235546"}}

    def __init__(
        self, *, application_id: str, consumer_key: str, shared_secret: str, max_skew: float = 300.0
    ) -> None:
        oauth1_cmac.secret_key(shared_secret)  # ConfigurationError unless 16/24/32 bytes
        self.application_id = application_id
        self.consumer_key = consumer_key
        self.shared_secret = shared_secret
        self.max_skew = max_skew
        self._reset_state()
        super().__init__()

    def _reset_state(self) -> None:
        self._items: dict[tuple[str, str], dict[str, Any]] = {}  # (course, item) -> gradebookItem
        self._guids: dict[tuple[str, str], tuple[str, str]] = {}  # (course, guid) -> (course, item)
        self._seeds: dict[tuple[str, str], dict[str, Any]] = {}
        self._unknown: set[tuple[str, str]] = set()
        self._grades: dict[tuple[str, str, str], dict[str, Any]] = {}  # (user, course, guid) -> grade
        self._grade_ids = itertools.count(_FIRST_GRADE_ID)
        self._nonce_set: set[str] = set()
        self._nonce_order: deque[tuple[float, str]] = deque()

    # -- SandboxApp ----------------------------------------------------------------------------------
    def register(self) -> None:
        self.route("GET", _ITEM)(self._authorized(self._get_item))
        self.route("GET", _GRADE)(self._authorized(self._get_grade))
        self.route("POST", _GRADE)(self._authorized(self._post_grade))
        self.route("PUT", _GRADE)(self._authorized(self._put_grade))
        self.route("DELETE", _GRADE)(self._authorized(self._delete_grade))

    def state(self) -> dict[str, Any]:
        with self.lock:
            grades = {f"{u}/{c}/{g}": dict(grade) for (u, c, g), grade in self._grades.items()}
            items = {f"{c}/{i}": dict(item) for (c, i), item in self._items.items()}
            return {"grades": grades, "gradebook_items": items, "nonces_seen": len(self._nonce_set)}

    def clear(self) -> None:
        with self.lock:
            self._reset_state()

    def error_body(self, status: int, message: str) -> Any:
        return message  # Pearson documents its error bodies only as "message text"

    def configure(self, spec: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(spec) - {"items", "unknown_items", "blank_grades"})
        if unknown:
            raise ValueError(f"unknown learningstudio sandbox switch {unknown[0]!r}")
        with self.lock:
            for key, seed in dict(spec.get("items") or {}).items():
                self._seed_item(self._pair(key), seed)
            for key in list(spec.get("unknown_items") or []):
                self._unknown.add(self._pair(key))
            for key in list(spec.get("blank_grades") or []):
                user, course, ref = self._triple(key)
                guid = ref if (course, ref) in self._guids else self._provision(course, ref)["id"]
                self._grades[(user, course, guid)] = self._new_grade({}, blank=True)
            return {
                "items": {f"{c}/{i}": dict(v) for (c, i), v in self._seeds.items()},
                "unknown_items": sorted(f"{c}/{i}" for c, i in self._unknown),
                "blank_grades": sorted(f"{u}/{c}/{g}" for (u, c, g), v in self._grades.items() if v["blank"]),
            }

    # -- configuration helpers -------------------------------------------------------------------
    @staticmethod
    def _pair(key: str) -> tuple[str, str]:
        course, sep, item = str(key).partition("/")
        if not sep or not course or not item:
            raise ValueError(f"expected '<course>/<item>', got {key!r}")
        return course, item

    @staticmethod
    def _triple(key: str) -> tuple[str, str, str]:
        parts = str(key).split("/", 2)
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"expected '<user>/<course>/<item>', got {key!r}")
        return parts[0], parts[1], parts[2]

    def _seed_item(self, pair: tuple[str, str], seed: Any) -> None:
        if not isinstance(seed, dict):
            raise ValueError(f"item {pair[0]}/{pair[1]}: expected an object")
        points = seed.get("pointsPossible", DEFAULT_POINTS_POSSIBLE)
        if not isinstance(points, (int, float)) or isinstance(points, bool) or points < 0:
            raise ValueError(f"item {pair[0]}/{pair[1]}: pointsPossible must be a number >= 0")
        self._seeds[pair] = {"pointsPossible": points, **({"id": str(seed["id"])} if "id" in seed else {})}
        old = self._items.pop(pair, None)
        if old is not None:
            self._guids.pop((pair[0], old["id"]), None)
        self._provision(*pair)

    def _provision(self, course: str, item: str) -> dict[str, Any]:
        """The gradebook item of a content item, created on first use (call with the lock held)."""
        found = self._items.get((course, item))
        if found is None:
            seed = self._seeds.get((course, item), {})
            guid = seed.get("id") or str(uuid.uuid5(uuid.NAMESPACE_URL, f"learningstudio:{course}/{item}"))
            found = {
                "id": guid,
                "title": f"Gradable item {item}",
                "pointsPossible": _number(seed.get("pointsPossible", DEFAULT_POINTS_POSSIBLE)),
            }
            self._items[(course, item)] = found
            self._guids[(course, guid)] = (course, item)
        return found

    def _new_grade(self, fields: dict[str, Any], *, blank: bool = False) -> dict[str, Any]:
        grade: dict[str, Any] = {"id": next(self._grade_ids), **_BLANK}
        grade.update(fields)
        grade["updatedDate"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        grade["blank"] = blank
        return grade

    # -- authentication --------------------------------------------------------------------------
    def _authorized(self, handler: Handler) -> Handler:
        def checked(req: Request, match: re.Match[str]) -> Response:
            refusal = self._authenticate(req)
            return refusal if refusal is not None else handler(req, match)

        return checked

    def _authenticate(self, req: Request) -> Response | None:
        header = req.header("x-authorization")
        if not header:
            message = "Missing X-Authorization header"
            if req.header("authorization"):
                message += " (LearningStudio reads X-Authorization, not Authorization)"
            return self._unauthorized(message)
        query = "&".join(
            f"{oauth1_cmac.java_urlencode(k)}={oauth1_cmac.java_urlencode(v)}"
            for k, values in req.query.items()
            for v in values
        )
        url = f"{req.url}?{query}" if query else req.url
        try:
            parsed = oauth1_cmac.verify(
                req.method, url, req.body, header,
                consumer_key=self.consumer_key, application_id=self.application_id,
                secret=self.shared_secret, max_skew=self.max_skew,
            )
        except oauth1_cmac.SignatureInvalid as exc:
            return self._unauthorized(f"Unauthorized: {exc.reason}")
        now = time.monotonic()
        with self.lock:
            while self._nonce_order and self._nonce_order[0][0] < now - 2 * self.max_skew:
                self._nonce_set.discard(self._nonce_order.popleft()[1])
            if parsed.nonce in self._nonce_set:
                return self._unauthorized("Unauthorized: the OAuth nonce has already been used")
            self._nonce_set.add(parsed.nonce)
            self._nonce_order.append((now, parsed.nonce))
        return None

    def _unauthorized(self, message: str) -> Response:
        return self._refuse(401, message, {"WWW-Authenticate": 'OAuth realm="LearningStudio"'})

    def _refuse(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return Response(status, self.error_body(status, message), headers or {})

    # -- handlers ----------------------------------------------------------------------------------
    def _get_item(self, req: Request, match: re.Match[str]) -> Response:
        course, item = _unquote(match, "course"), _unquote(match, "item")
        with self.lock:
            if (course, item) in self._unknown or item.startswith("unknown-"):
                return self._refuse(404, "Item not found")
            found = dict(self._provision(course, item))
        found["links"] = [{"href": req.url, "rel": "self"}]
        return Response(200, {"gradebookItem": found})

    def _grade_key(self, match: re.Match[str]) -> tuple[str, str, str] | Response:
        key = (_unquote(match, "user"), _unquote(match, "course"), _unquote(match, "guid"))
        if (key[1], key[2]) not in self._guids:
            return self._refuse(404, "Gradebook item not found")
        return key

    def _render(self, req: Request, key: tuple[str, str, str], grade: dict[str, Any]) -> dict[str, Any]:
        base = req.url.split("/users/", 1)[0]
        out = {k: v for k, v in grade.items() if k != "blank"}
        out["gradedStudent"] = {"id": key[0], "links": [{"href": f"{base}/users/{key[0]}", "rel": "self"}]}
        return {"grade": out}

    def _get_grade(self, req: Request, match: re.Match[str]) -> Response:
        with self.lock:
            key = self._grade_key(match)
            if isinstance(key, Response):
                return key
            grade = self._grades.get(key)
            if grade is None:
                return self._refuse(404, "Grade not found")
            return Response(200, self._render(req, key, grade))

    def _post_grade(self, req: Request, match: re.Match[str]) -> Response:
        fields = self._grade_fields(req)
        if isinstance(fields, Response):
            return fields
        with self.lock:
            key = self._grade_key(match)
            if isinstance(key, Response):
                return key
            if key in self._grades:
                return self._refuse(400, "Grade already exists; use PUT to update it")
            grade = self._grades[key] = self._new_grade(fields)
            return Response(201, self._render(req, key, grade), {"Location": req.url})

    def _put_grade(self, req: Request, match: re.Match[str]) -> Response:
        fields = self._grade_fields(req)
        if isinstance(fields, Response):
            return fields
        with self.lock:
            key = self._grade_key(match)
            if isinstance(key, Response):
                return key
            grade = self._grades.get(key)
            if grade is None:
                return self._refuse(404, "Grade not found")
            grade.update(fields, blank=False, updatedDate=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            return Response(204)

    def _delete_grade(self, req: Request, match: re.Match[str]) -> Response:
        with self.lock:
            key = self._grade_key(match)
            if isinstance(key, Response):
                return key
            if self._grades.pop(key, None) is None:
                return self._refuse(404, "Grade not found")
            return Response(204)

    def _grade_fields(self, req: Request) -> dict[str, Any] | Response:
        """The grade fields of a POST/PUT body, or the 400/406 refusing it."""
        content_type = (req.header("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return self._refuse(406, "Invalid request body format: expected application/json")
        try:
            body = json.loads(req.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self._refuse(406, "Invalid request body format: not valid JSON")
        grade = body.get("grade") if isinstance(body, dict) else None
        if not isinstance(body, dict) or set(body) != {"grade"} or not isinstance(grade, dict):
            return self._refuse(400, 'The request body must be {"grade": {...}}')
        unknown = sorted(set(grade) - _GRADE_FIELDS - _READ_ONLY_FIELDS)
        if unknown:
            return self._refuse(400, f"Unrecognized grade field: {unknown[0]}")
        fields = {k: v for k, v in grade.items() if k in _GRADE_FIELDS}
        if not fields.keys() & {"points", "letterGrade", "comments"}:
            return self._refuse(400, "A grade needs points, letterGrade or comments")
        points = fields.get("points")
        if "points" in fields and points is not None and (
            not isinstance(points, (int, float)) or isinstance(points, bool)
            or not math.isfinite(points) or points < 0
        ):
            return self._refuse(400, "points must be a number >= 0")
        for name in ("letterGrade", "comments"):
            if name in fields and not isinstance(fields[name], str):
                return self._refuse(400, f"{name} must be a string")
        if len(fields.get("letterGrade") or "") > 20:
            return self._refuse(400, "letterGrade is longer than 20 characters")
        if "shareWithStudent" in fields and not isinstance(fields["shareWithStudent"], bool):
            return self._refuse(400, "shareWithStudent must be a boolean")
        return fields
