"""A faithful Edlink API v2 simulator: the learner's submit (User API) and grading (Graph API).

* ``POST /api/v2/my/classes/:class/assignments/:assignment/submit`` needs the learner's **person
  token**; it appends an attempt and moves the submission to ``submitted``, allowed only from
  ``created``/``reclaimed`` (else 409). ``?$idempotency=<key>`` replays the original response for the
  same key (no second attempt), even though the submission is no longer submittable.
* ``PATCH /api/v2/graph/classes/:class/assignments/:assignment/submissions/:submission_id|:person_id``
  needs the **integration token**; sets ``grade_points``/``grade_comment``/``grade``… on the
  submission (created on demand, state ``created``). ``GET`` of the same path reads it.
* Envelopes: ``{"$request", "$data", "$warnings"?}``; errors ``{"$request", "$errors": [{code,
  message}]}``: 401 for a wrong token (or the wrong kind), 400 for bad bodies, 404 for ids containing
  ``unknown``.

The person token is the person :attr:`EdlinkSandbox.person_id` (default :data:`DEMO_PERSON_ID`); more
people with ``{"people": {"<token>": "<person id>"}}``. ``{"warnings": [{code, message}]}`` adds
``$warnings`` to every success envelope (``[]`` to stop).
"""

from __future__ import annotations

import copy
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from sandbox.base import Request, Response, SandboxApp, demo_score

DEMO_PERSON_ID = "00000000-0000-4000-8000-000000000001"
SUBMITTABLE = ("created", "reclaimed")
STATES = ("created", "submitted", "returned", "reclaimed", "partially-graded", "fully-graded")
PATCHABLE = {
    "grader_id",
    "flags",
    "grade_comment",
    "grade_points",
    "grade",
    "extra_attempts",
    "override_due_date",
    "attachments",
    "state",
    "rubric_grade",
}
_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    422: "UNPROCESSABLE_ENTITY",
    429: "RATE_LIMITED",
}
_BASE = r"/api/v2/{api}/classes/(?P<cls>[^/]+)/assignments/(?P<asg>[^/]+)"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _grade_text(points: float) -> str:
    return str(int(points)) if float(points).is_integer() else str(points)


def _attachment_problems(items: object) -> list[str]:
    if not isinstance(items, list) or not items:
        return ["attachments must be a non-empty array"]
    problems: list[str] = []
    for i, a in enumerate(items):
        where = f"attachments[{i}]"
        if not isinstance(a, dict):
            problems.append(f"{where} must be an object")
            continue
        kind = a.get("type")
        if "title" in a and a["title"] is not None and not isinstance(a["title"], str):
            problems.append(f"{where}.title must be a string")
        if kind == "link":
            if not isinstance(a.get("url"), str) or not re.match(r"^https?://\S+$", a["url"]):
                problems.append(f"{where}.url must be an http(s) URL")
        elif kind == "text":
            if not isinstance(a.get("text"), str) or not a["text"]:
                problems.append(f"{where}.text must be a non-empty string")
        elif kind == "file":
            data, size = a.get("data"), a.get("size")
            if not isinstance(a.get("title"), str) or not a["title"]:
                problems.append(f"{where}.title is required for a file")
            if not isinstance(data, list) or not all(
                isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in data
            ):
                problems.append(f"{where}.data must be an array of bytes (0-255)")
            elif not isinstance(size, int) or isinstance(size, bool) or size != len(data):
                problems.append(f"{where}.size must equal the number of bytes in data")
        else:
            problems.append(f"{where}.type must be one of link, text, file")
    return problems


class EdlinkSandbox(SandboxApp):
    vendor = "edlink"
    DEMO_CREDENTIALS: ClassVar[dict[str, str]] = {
        "integration_token": "demo-edlink-integration-token", "person_token": "demo-person-token"}
    DEMO_DESTINATION = "demo-edlink"

    @classmethod
    def demo_event(cls, i: int, urls: Mapping[str, str]) -> dict[str, Any]:
        event: dict[str, Any] = {**demo_score(i), "learner_id": f"edlink-person-{i}",
                                 "target": {"class_id": "class-demo", "assignment_id": "assignment-demo"}}
        if i == 0:  # the learner whose person token the sandbox knows also submits an attempt
            event["learner_id"] = DEMO_PERSON_ID
            event["target"]["person_token"] = cls.DEMO_CREDENTIALS["person_token"]
            event["attachments"] = [{"type": "link", "url": "https://work.example/essay"}]
        return event

    def __init__(self, integration_token: str, person_token: str, person_id: str = DEMO_PERSON_ID) -> None:
        self.integration_token = integration_token
        self.person_id = person_id
        self.people: dict[str, str] = {person_token: person_id}
        self._default_people = dict(self.people)
        #: submission id -> submission
        self.submissions: dict[str, dict[str, Any]] = {}
        #: (class, assignment, person) -> submission id
        self._by_person: dict[tuple[str, str, str], str] = {}
        #: (token, idempotency key) -> the original (status, body)
        self._replays: dict[tuple[str, str], tuple[int, Any]] = {}
        self.replayed = 0
        self.warnings: list[dict[str, Any]] = []
        super().__init__()

    # -- SandboxApp ------------------------------------------------------------------------------
    def register(self) -> None:
        self.route("POST", _BASE.format(api="my") + r"/submit")(self._submit)
        sub = _BASE.format(api="graph") + r"/submissions/(?P<sub>[^/]+)"
        self.route("PATCH", sub)(self._patch)
        self.route("GET", sub)(self._get)
        self.route("GET", _BASE.format(api="my") + r"/submissions")(self._list)

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "submissions": copy.deepcopy(self.submissions),
                "idempotency_keys": sorted(key for _, key in self._replays),
                "replayed": self.replayed,
                "people": sorted(self.people.values()),
                "warnings": copy.deepcopy(self.warnings),
            }

    def clear(self) -> None:
        with self.lock:
            self.submissions.clear()
            self._by_person.clear()
            self._replays.clear()
            self.replayed = 0
            self.warnings = []
            self.people = dict(self._default_people)

    def configure(self, spec: dict[str, Any]) -> dict[str, Any]:
        unknown = set(spec) - {"warnings", "people"}
        if unknown:
            raise ValueError(f"unknown edlink sandbox switch(es): {', '.join(sorted(unknown))}")
        with self.lock:
            if "warnings" in spec:
                warnings = spec["warnings"] or []
                if not isinstance(warnings, list) or not all(isinstance(w, dict) for w in warnings):
                    raise ValueError("warnings must be a list of {code, message} objects")
                self.warnings = [{"code": w.get("code"), "message": w.get("message")} for w in warnings]
            if "people" in spec:
                if not isinstance(spec["people"], dict):
                    raise ValueError("people must map a person token to a person id")
                self.people.update({str(k): str(v) for k, v in spec["people"].items()})
            return {"warnings": self.warnings, "people": sorted(self.people.values())}

    def error_body(self, status: int, message: str) -> Any:
        code = _CODES.get(status, "INTERNAL_SERVER_ERROR" if status >= 500 else "ERROR")
        return {"$request": str(uuid.uuid4()), "$errors": [{"code": code, "message": message}]}

    # -- helpers ---------------------------------------------------------------------------------
    def _error(self, status: int, *messages: str) -> Response:
        code = _CODES.get(status, "ERROR")
        errors = [{"code": code, "message": m} for m in messages]
        return Response(status, {"$request": str(uuid.uuid4()), "$errors": errors})

    def _ok(self, data: Any) -> Response:
        body: dict[str, Any] = {"$request": str(uuid.uuid4()), "$data": copy.deepcopy(data)}
        if self.warnings:
            body["$warnings"] = copy.deepcopy(self.warnings)
        return Response(200, body)

    @staticmethod
    def _token(req: Request) -> str | None:
        scheme, _, token = (req.header("authorization") or "").strip().partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    def _person(self, token: str | None) -> str | None:
        if token is None:
            return None
        for known, person in self.people.items():
            if hmac.compare_digest(token.encode(), known.encode()):
                return person
        return None

    @staticmethod
    def _json(req: Request) -> Any:
        try:
            return json.loads(req.body.decode("utf-8")) if req.body else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None

    def _submission(self, cls: str, asg: str, person: str) -> dict[str, Any]:
        """The person's submission, created on demand (caller holds the lock)."""
        key = (cls, asg, person)
        sid = self._by_person.get(key)
        if sid is None:
            sid = str(uuid.uuid4())
            stamp = _now()
            self.submissions[sid] = {
                "id": sid,
                "created_date": stamp,
                "updated_date": stamp,
                "state": "created",
                "flags": [],
                "attempts": [],
                "grade_points": None,
                "grade": None,
                "grade_comment": None,
                "extra_attempts": 0,
                "properties": {},
                "class_id": cls,
                "assignment_id": asg,
                "person_id": person,
                "identifiers": [],
                "rule_ids": [],
                "references": {},
            }
            self._by_person[key] = sid
        return self.submissions[sid]

    # -- routes ----------------------------------------------------------------------------------
    def _submit(self, req: Request, m: re.Match[str]) -> Response:
        token = self._token(req)
        person = self._person(token)
        if token is None or person is None:
            return self._error(401, "A valid person (user) access token is required for the User API.")
        key = req.param("$idempotency")
        with self.lock:
            if key is not None and (token, key) in self._replays:
                self.replayed += 1
                status, body = self._replays[(token, key)]
                return Response(status, copy.deepcopy(body))
            response = self._do_submit(req, m, person)
            if key is not None and response.status < 500:
                self._replays[(token, key)] = (response.status, copy.deepcopy(response.body))
            return response

    def _do_submit(self, req: Request, m: re.Match[str], person: str) -> Response:
        cls, asg = m["cls"], m["asg"]
        if "unknown" in cls or "unknown" in asg:
            return self._error(404, "The requested class or assignment does not exist.")
        body = self._json(req)
        if not isinstance(body, dict):
            return self._error(400, "The request body must be a JSON Attempt object.")
        problems = _attachment_problems(body.get("attachments"))
        if problems:
            return self._error(400, *problems)
        sub = self._submission(cls, asg, person)
        if sub["state"] not in SUBMITTABLE:
            return self._error(
                409, f"The submission is {sub['state']}; it can be submitted only when created or reclaimed."
            )
        stamp = _now()
        attachments = []
        for a in body["attachments"]:
            item: dict[str, Any] = {
                "id": str(uuid.uuid4()),
                "type": a["type"],
                "title": a.get("title"),
                "share_mode": "view",
                "identifiers": [],
                "rule_ids": [],
                "references": {},
            }
            if a["type"] == "link":
                item["url"] = a["url"]
            elif a["type"] == "text":
                item["text"] = a["text"]
            else:
                item["size"] = a["size"]
                item["url"] = (
                    f"https://ed.link/api/v2/my/classes/{cls}/assignments/{asg}/submissions/"
                    f"{sub['id']}/files/{item['id']}/download"
                )
            attachments.append(item)
        sub["attempts"].append(
            {"created_date": stamp, "attachments": attachments, "rule_ids": [], "references": {}}
        )
        sub["state"] = "submitted"
        sub["updated_date"] = stamp
        return self._ok(sub)

    def _graph_auth(self, req: Request) -> Response | None:
        token = self._token(req)
        if token is None or not hmac.compare_digest(token.encode(), self.integration_token.encode()):
            return self._error(401, "A valid integration access token is required for the Graph API.")
        return None

    def _find(self, m: re.Match[str], *, create: bool) -> dict[str, Any] | None:
        cls, asg, ref = m["cls"], m["asg"], m["sub"]
        sub = self.submissions.get(ref)
        if sub is not None and (sub["class_id"], sub["assignment_id"]) == (cls, asg):
            return sub
        if (cls, asg, ref) in self._by_person or create:
            return self._submission(cls, asg, ref)
        return None

    def _patch(self, req: Request, m: re.Match[str]) -> Response:
        refusal = self._graph_auth(req)
        if refusal is not None:
            return refusal
        if any("unknown" in m[g] for g in ("cls", "asg", "sub")):
            return self._error(404, "The requested class, assignment or submission does not exist.")
        body = self._json(req)
        if not isinstance(body, dict) or not body:
            return self._error(400, "The request body must be a JSON object with the fields to update.")
        problems = [f"{k} cannot be updated" for k in sorted(set(body) - PATCHABLE)]
        points = body.get("grade_points")
        if points is not None and (not isinstance(points, (int, float)) or isinstance(points, bool)):
            problems.append("grade_points must be a number or null")
        for name in ("grade_comment", "grade", "grader_id"):
            if body.get(name) is not None and not isinstance(body[name], str):
                problems.append(f"{name} must be a string or null")
        if "state" in body and body["state"] not in STATES:
            problems.append(f"state must be one of {', '.join(STATES)}")
        if "attachments" in body:
            problems += _attachment_problems(body["attachments"])
        if problems:
            return self._error(400, *problems)
        with self.lock:
            sub = self._find(m, create=True)
            assert sub is not None
            for name in PATCHABLE & set(body) - {"attachments"}:
                sub[name] = copy.deepcopy(body[name])
            if "attachments" in body:  # the Graph API can also submit on the learner's behalf
                attempt = {"created_date": _now(), "attachments": copy.deepcopy(body["attachments"])}
                sub["attempts"].append({**attempt, "rule_ids": [], "references": {}})
            if "grade_points" in body and "grade" not in body:
                sub["grade"] = None if points is None else _grade_text(points)
            sub["updated_date"] = _now()
            return self._ok(sub)

    def _get(self, req: Request, m: re.Match[str]) -> Response:
        refusal = self._graph_auth(req)
        if refusal is not None:
            return refusal
        with self.lock:
            sub = self._find(m, create=False)
            if sub is None:
                return self._error(404, "The requested submission does not exist.")
            return self._ok(sub)

    def _list(self, req: Request, m: re.Match[str]) -> Response:
        """``GET /api/v2/my/classes/:class/assignments/:assignment/submissions``: the integration (teacher /
        admin) token sees every submission, a person token only its own; paged with ``$first`` (default 100)
        and ``$after`` (a submission id), ``$next`` the URL of the next page."""
        token = self._token(req)
        person = self._person(token)
        staff = token is not None and hmac.compare_digest(token.encode(), self.integration_token.encode())
        if not staff and person is None:
            return self._error(401, "A valid access token is required.")
        raw_first = req.param("$first") or "100"
        if not raw_first.isdigit() or not 1 <= int(raw_first) <= 10_000:
            return self._error(400, "$first must be an integer between 1 and 10000")
        first, after = int(raw_first), req.param("$after")
        with self.lock:
            subs = [copy.deepcopy(s) for s in self.submissions.values()
                    if (s["class_id"], s["assignment_id"]) == (m["cls"], m["asg"])
                    and (staff or s["person_id"] == person)]
        subs.sort(key=lambda s: s["id"])
        if after:
            subs = [s for s in subs if s["id"] > after]
        page = subs[:first]
        envelope: dict[str, Any] = {"$request": str(uuid.uuid4()), "$data": page}
        if len(subs) > first:
            envelope["$next"] = f"{req.url}?$first={first}&$after={page[-1]['id']}"
        return Response(200, envelope)
