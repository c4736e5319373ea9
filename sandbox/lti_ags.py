"""A strict LTI 1.3 platform simulator: Assignment and Grade Services with the Security Framework's token
endpoint (:mod:`sandbox.lti_platform`).

Line items live at two URL styles, as real platforms spell them:

* Canvas: ``/api/lti/courses/{course}/line_items`` (container), ``…/line_items/{id}`` (line item);
* Moodle: ``/mod/lti/services.php/{course}/lineitems?type_id={t}`` and
  ``…/lineitems/{id}/lineitem?type_id={t}`` — the ``type_id`` query parameter is required, so a client
  that appends ``/scores`` after the query string (``…lineitem?type_id=1/scores``) gets a 400.

Enforced: bearer token and scope per route (``lineitem`` / ``lineitem.readonly`` to read the container,
``lineitem`` to create, ``score`` to post scores); exact media types (``Accept`` of the container
``application/vnd.ims.lis.v2.lineitemcontainer+json`` else 406, ``Content-Type`` of a new line item
``application/vnd.ims.lis.v2.lineitem+json`` and of a score ``application/vnd.ims.lis.v1.score+json``
else 415); the AGS score rules (``userId``, ``activityProgress``, ``gradingProgress``, ``timestamp`` ISO
8601 with sub-second precision and a timezone, ``scoreGiven`` ≥ 0 with ``scoreMaximum`` > 0); the
timestamp order per (line item, user), checked as each platform does: Moodle style compares whole
seconds and refuses a timestamp not newer with ``409 Refusing score with an earlier timestamp`` (so a
newer score within the same second is refused too); Canvas style refuses a strictly older one with
``400`` and a timestamp message (an equal one replaces the score).
The container filters by ``resource_link_id``, ``resource_id`` and ``tag`` and pages (``page_size``,
default 10) with ``Link: <…>; rel="next"``.

Switches (``POST /_sandbox/config``): ``jwks``, ``jwks_url``, ``audience``, ``allowed_scopes``,
``token_lifetime``, ``expire_tokens`` (see :mod:`sandbox.lti_platform`), ``page_size``,
``ignore_filters`` (answer the whole container and all results, as platforms that ignore the query
filters do), ``rate_limit_style`` (``retry_after`` | ``canvas403`` | ``canvas429`` | ``d2l``: how an
answer over the limit looks, and the budget headers of ordinary answers), ``leaky_bucket``
(``{"per_minute": 120}``, or null to remove it: Canvas's in-flight-charging bucket, see
:mod:`sandbox.lms_throttle`), and ``seed``: a list of line items ``{course, style: canvas|moodle,
resourceLinkId, label, scoreMaximum,
tag?, resourceId?}`` to create (the answer lists their ids). ``POST /_sandbox/reset`` forgets line items,
scores, tokens, seen ``jti`` values and the switches, but keeps the tool's registration (``jwks``,
``jwks_url``, ``audience``), as a platform keeps a registered tool.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlencode

from sandbox.base import Request, Response, demo_score
from sandbox.lms_throttle import STYLES, LeakyBucket, d2l_headers, over_limit
from sandbox.lti_demo import demo_pem
from sandbox.lti_platform import AGS, LtiPlatformAuth

CONTAINER_TYPE = "application/vnd.ims.lis.v2.lineitemcontainer+json"
RESULT_TYPE = "application/vnd.ims.lis.v2.resultcontainer+json"
LINEITEM_TYPE = "application/vnd.ims.lis.v2.lineitem+json"
SCORE_TYPE = "application/vnd.ims.lis.v1.score+json"
ACTIVITY = ("Initialized", "Started", "InProgress", "Submitted", "Completed")
GRADING = ("FullyGraded", "Pending", "PendingManual", "Failed", "NotReady")
CANVAS_SUBMISSION = "https://canvas.instructure.com/lti/submission"
STALE_CANVAS = "Score timestamp can only be updated to a later point in time"
_CANVAS = r"/api/lti/courses/(?P<course>[^/]+)/line_items"
_MOODLE = r"/mod/lti/services\.php/(?P<course>[^/]+)/lineitems"


def _media(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_timestamp(value: object) -> datetime | None:
    """ISO 8601 with a timezone and a sub-second part (the AGS rule), else None."""
    if not isinstance(value, str) or not re.search(r"T\d\d:\d\d:\d\d\.\d+", value):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def is_stale(style: str, incoming: datetime, stored: datetime | None) -> bool:
    """Moodle compares whole seconds and refuses equal ones (``timemodified >= strtotime(timestamp)``);
    Canvas refuses only a strictly older timestamp."""
    if stored is None:
        return False
    if style == "moodle":
        return int(stored.timestamp()) >= int(incoming.timestamp())
    return incoming < stored


class LtiAgsSandbox(LtiPlatformAuth):
    vendor = "lti_ags"
    # the tool's key pair is generated per run (sandbox.lti_demo); the platform gets its JWKS
    DEMO_CREDENTIALS: ClassVar[dict[str, str]] = {"client_id": "demo-lti-client-id",
                                                  "deployment_id": "demo-deployment-1"}
    DEMO_DESTINATION = "demo-lti"

    @classmethod
    def demo_secret(cls) -> str:
        return demo_pem()  # generated for this run; the platform reads its JWKS from `gradesync serve`

    @classmethod
    def destination_keys(cls, url: str, secret_env: str, *, lti_kid: str | None = None) -> str:
        return (f'client_id = "{cls.DEMO_CREDENTIALS["client_id"]}"\ntoken_url = "{url}/login/oauth2/token"\n'
                f'private_key_env = "{secret_env}"\nkid = "{lti_kid}"\n')

    @classmethod
    def demo_event(cls, i: int, urls: Mapping[str, str]) -> dict[str, Any]:
        # LTI AGS straight to the platform: the line item is found by resource link, created once
        lti_url = urls.get("lti_ags", "http://127.0.0.1:8805")
        return {**demo_score(i), "learner_id": f"lti-user-{i}",
                "target": {"lineitems_url": f"{lti_url}/mod/lti/services.php/7/lineitems?type_id=1",
                           "resource_link_id": "demo-resource-link", "label": "Demo quiz"}}

    def __init__(self, client_id: str, deployment_id: str = "1", **auth: Any) -> None:
        #: line item number -> record
        self.line_items: dict[int, dict[str, Any]] = {}
        #: (line item number, user) -> stored score
        self.scores: dict[tuple[int, str], dict[str, Any]] = {}
        self.page_size = 10
        self.ignore_filters = False
        self.refused_stale = 0
        self.rate_limit_style = "retry_after"
        self.leaky: LeakyBucket | None = None
        super().__init__(client_id, deployment_id, **auth)

    # -- SandboxApp ---------------------------------------------------------------------------------
    def register(self) -> None:
        self.register_auth()
        for style, base in (("canvas", _CANVAS), ("moodle", _MOODLE)):
            item = rf"{base}/(?P<n>\d+)" + ("/lineitem" if style == "moodle" else "")
            self.route("GET", base)(functools.partial(self._container, style=style))
            self.route("POST", base)(functools.partial(self._create, style=style))
            self.route("GET", item)(functools.partial(self._item, style=style))
            self.route("POST", rf"{item}/scores")(functools.partial(self._score, style=style))
            self.route("GET", rf"{item}/results")(functools.partial(self._results, style=style))

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                **self.auth_state(),
                "line_items": [dict(v) for _, v in sorted(self.line_items.items())],
                "scores": [{"lineItem": self.line_items[n]["id"], **s} for (n, _), s in sorted(self.scores.items())],
                "refused_stale": self.refused_stale,
            }

    def clear(self) -> None:
        with self.lock:
            self.clear_auth()
            self.line_items.clear()
            self.scores.clear()
            self.page_size = 10
            self.ignore_filters = False
            self.refused_stale = 0
            self.rate_limit_style = "retry_after"
            self.leaky = None

    def configure(self, spec: dict[str, Any]) -> dict[str, Any]:
        known = {"jwks", "jwks_url", "audience", "allowed_scopes", "token_lifetime", "expire_tokens", "page_size",
                 "ignore_filters", "seed", "rate_limit_style", "leaky_bucket"}
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"unknown lti_ags sandbox switch(es): {', '.join(sorted(unknown))}")
        with self.lock:
            self.configure_auth(spec)
            if "page_size" in spec:
                self.page_size = max(1, int(spec["page_size"]))
            if "ignore_filters" in spec:
                self.ignore_filters = bool(spec["ignore_filters"])
            if "rate_limit_style" in spec:
                if spec["rate_limit_style"] not in STYLES:
                    raise ValueError(f"rate_limit_style must be one of {', '.join(STYLES)}")
                self.rate_limit_style = spec["rate_limit_style"]
            if "leaky_bucket" in spec:
                self.leaky = LeakyBucket.of(spec["leaky_bucket"]) if spec["leaky_bucket"] else None
            seeded = [self._store_item(str(s.get("host", "lms.invalid")), str(s["course"]),
                                       str(s.get("style", "canvas")), s) for s in spec.get("seed") or []]
        return {"seeded": [item["id"] for item in seeded], "page_size": self.page_size,
                "rate_limit_style": self.rate_limit_style,
                "leaky_bucket": self.leaky.describe() if self.leaky else None}

    def error_body(self, status: int, message: str) -> Any:
        return {"errors": [{"message": message}]}

    # -- throttling as real platforms do it (sandbox.lms_throttle) --------------------------------------
    def over_limit(self, wait: int) -> Response:
        return over_limit(self.rate_limit_style, wait, self.error_body(429, "rate limit exceeded"))

    def handle(self, req: Request) -> Response | object:
        leaky = self.leaky
        if req.raw_path.startswith("/_sandbox/") or (leaky is None and self.rate_limit_style != "d2l"):
            return super().handle(req)
        headers: dict[str, str] = {}
        if leaky is not None:
            wait = leaky.reserve()  # charged its up-front cost while in flight
            if wait is not None:
                resp = self.over_limit(wait)
                self._log(req, resp.status, fault="ratelimit")
                return resp
            try:
                result = super().handle(req)
            finally:
                cost, remaining = leaky.settle()
            headers = {"X-Request-Cost": f"{cost:.4f}", "X-Rate-Limit-Remaining": f"{remaining:.4f}"}
        else:
            result = super().handle(req)
        if isinstance(result, Response) and not (result.status == 429 or "Rate Limit Exceeded" in str(result.body)):
            with self.lock:
                if self.rate_limit_style == "d2l" and self.ratelimit is not None:
                    headers.update(d2l_headers(self.ratelimit))
            result.headers.update(headers)
        return result

    # -- line items ---------------------------------------------------------------------------------
    def _type_id(self, req: Request, style: str) -> str | Response | None:
        if style != "moodle":
            return None
        type_id = req.param("type_id")
        if type_id is None or not type_id.isdigit():
            return Response(400, "Incorrect type_id", {"Content-Type": "text/plain"})
        return type_id

    def _store_item(self, host: str, course: str, style: str, body: dict[str, Any],
                    type_id: str | None = None) -> dict[str, Any]:
        n = len(self.line_items) + 1
        if style == "moodle":
            url = f"http://{host}/mod/lti/services.php/{course}/lineitems/{n}/lineitem?type_id={type_id or '1'}"
        else:
            url = f"http://{host}/api/lti/courses/{course}/line_items/{n}"
        record = {"id": url, "label": body["label"], "scoreMaximum": body["scoreMaximum"],
                  "resourceLinkId": body.get("resourceLinkId"), "course": course, "style": style}
        for key in ("resourceId", "tag"):
            if body.get(key) is not None:
                record[key] = body[key]
        self.line_items[n] = record
        return record

    @staticmethod
    def _public(record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if k not in ("course", "style")}

    def _container(self, req: Request, m: re.Match[str], style: str) -> Response:
        refusal = self.bearer(req, f"{AGS}lineitem", f"{AGS}lineitem.readonly")
        if refusal is not None:
            return refusal
        type_id = self._type_id(req, style)
        if isinstance(type_id, Response):
            return type_id
        if CONTAINER_TYPE not in (req.header("accept") or ""):
            return Response(406, self.error_body(406, f"Accept must be {CONTAINER_TYPE}"))
        filters = {"resourceLinkId": req.param("resource_link_id"), "resourceId": req.param("resource_id"),
                   "tag": req.param("tag")}
        raw_page = req.param("page") or "1"
        if not raw_page.isdigit() or int(raw_page) < 1:
            return Response(400, self.error_body(400, "page must be a positive integer"))
        page = int(raw_page)
        with self.lock:
            items = [self._public(r) for _, r in sorted(self.line_items.items())
                     if r["course"] == m["course"] and r["style"] == style
                     and (self.ignore_filters or all(v is None or r.get(k) == v for k, v in filters.items()))]
            size = self.page_size
        chunk = items[(page - 1) * size: page * size]
        headers = {"Content-Type": CONTAINER_TYPE}
        if page * size < len(items):
            query = {k: v[0] for k, v in req.query.items() if k != "page"}
            headers["Link"] = f'<{req.url}?{urlencode({**query, "page": str(page + 1)})}>; rel="next"'
        return Response(200, _json_bytes(chunk), headers)

    def _create(self, req: Request, m: re.Match[str], style: str) -> Response:
        refusal = self.bearer(req, f"{AGS}lineitem")
        if refusal is not None:
            return refusal
        type_id = self._type_id(req, style)
        if isinstance(type_id, Response):
            return type_id
        if _media(req.header("content-type")) != LINEITEM_TYPE:
            return Response(415, self.error_body(415, f"Content-Type must be {LINEITEM_TYPE}"))
        body = req.json()
        if not isinstance(body, dict) or not isinstance(body.get("label"), str) or not body["label"]:
            return Response(400, self.error_body(400, "label is required"))
        if not _number(body.get("scoreMaximum")) or float(body["scoreMaximum"]) <= 0:
            return Response(400, self.error_body(400, "scoreMaximum must be a number > 0"))
        with self.lock:
            record = self._store_item(req.host, m["course"], style, body, type_id)
        return Response(201, _json_bytes(self._public(record)), {"Content-Type": LINEITEM_TYPE})

    def _lookup(self, req: Request, m: re.Match[str], style: str) -> dict[str, Any] | Response:
        type_id = self._type_id(req, style)
        if isinstance(type_id, Response):
            return type_id
        with self.lock:
            record = self.line_items.get(int(m["n"]))
        if record is None or record["course"] != m["course"] or record["style"] != style:
            return Response(404, self.error_body(404, "Line item not found"))
        return record

    def _item(self, req: Request, m: re.Match[str], style: str) -> Response:
        refusal = self.bearer(req, f"{AGS}lineitem", f"{AGS}lineitem.readonly")
        if refusal is not None:
            return refusal
        record = self._lookup(req, m, style)
        if isinstance(record, Response):
            return record
        return Response(200, _json_bytes(self._public(record)), {"Content-Type": LINEITEM_TYPE})

    # -- scores -----------------------------------------------------------------------------------------
    @staticmethod
    def validate_score(body: Any) -> list[str]:
        if not isinstance(body, dict):
            return ["the score must be a JSON object"]
        problems = []
        if not isinstance(body.get("userId"), str) or not body["userId"]:
            problems.append("userId is required")
        if body.get("activityProgress") not in ACTIVITY:
            problems.append(f"activityProgress must be one of {', '.join(ACTIVITY)}")
        if body.get("gradingProgress") not in GRADING:
            problems.append(f"gradingProgress must be one of {', '.join(GRADING)}")
        if parse_timestamp(body.get("timestamp")) is None:
            problems.append("timestamp is required: ISO 8601 with sub-second precision and a timezone")
        given, maximum = body.get("scoreGiven"), body.get("scoreMaximum")
        if given is not None and (not _number(given) or given < 0):
            problems.append("scoreGiven must be a number >= 0")
        if given is not None and (not _number(maximum) or float(maximum or 0) <= 0):
            problems.append("scoreMaximum must be a number > 0 when scoreGiven is present")
        if body.get("comment") is not None and not isinstance(body["comment"], str):
            problems.append("comment must be a string")
        return problems

    def _score(self, req: Request, m: re.Match[str], style: str) -> Response:
        refusal = self.bearer(req, f"{AGS}score")
        if refusal is not None:
            return refusal
        record = self._lookup(req, m, style)
        if isinstance(record, Response):
            return record
        if _media(req.header("content-type")) != SCORE_TYPE:
            return Response(415, self.error_body(415, f"Content-Type must be {SCORE_TYPE}"))
        body = req.json()
        problems = self.validate_score(body)
        if problems:
            if style == "moodle":
                return Response(400, "Incorrect score received: " + "; ".join(problems), {"Content-Type": "text/plain"})
            return Response(422, self.error_body(422, "; ".join(problems)))
        stamp = parse_timestamp(body["timestamp"])
        assert stamp is not None
        n = int(m["n"])
        with self.lock:
            current = self.scores.get((n, body["userId"]))
            if current is not None and is_stale(style, stamp, parse_timestamp(current["timestamp"])):
                self.refused_stale += 1
                if style == "moodle":
                    return Response(409, "Refusing score with an earlier timestamp", {"Content-Type": "text/plain"})
                return Response(400, self.error_body(400, STALE_CANVAS))
            self.scores[(n, body["userId"])] = {k: body.get(k) for k in (
                "userId", "scoreGiven", "scoreMaximum", "comment", "activityProgress", "gradingProgress", "timestamp")}
            if isinstance(body.get(CANVAS_SUBMISSION), dict):  # Canvas's submission extension, as received
                self.scores[(n, body["userId"])]["submission"] = body[CANVAS_SUBMISSION]
        if style == "moodle":
            return Response(204)
        return Response(200, {"resultUrl": f"{record['id']}/results/{body['userId']}"})

    # -- results (the read an audit makes) ------------------------------------------------------------
    def _results(self, req: Request, m: re.Match[str], style: str) -> Response:
        """``GET {line item}/results[?user_id=]``: the result container (``[]`` when none, as Canvas), paged
        with ``Link: rel="next"``; a score stored without ``scoreGiven`` is a result with a null score."""
        refusal = self.bearer(req, f"{AGS}result.readonly")
        if refusal is not None:
            return refusal
        record = self._lookup(req, m, style)
        if isinstance(record, Response):
            return record
        if RESULT_TYPE not in (req.header("accept") or ""):
            return Response(406, self.error_body(406, f"Accept must be {RESULT_TYPE}"))
        user = None if self.ignore_filters else req.param("user_id")
        raw_page = req.param("page") or "1"
        if not raw_page.isdigit() or int(raw_page) < 1:
            return Response(400, self.error_body(400, "page must be a positive integer"))
        page, n = int(raw_page), int(m["n"])
        with self.lock:
            stored = [s for (num, uid), s in sorted(self.scores.items()) if num == n and user in (None, uid)]
            size = self.page_size
        results = []
        for s in stored:
            result: dict[str, Any] = {"id": f"{record['id']}/results/{s['userId']}", "scoreOf": record["id"],
                                      "userId": s["userId"], "resultScore": s.get("scoreGiven"),
                                      "resultMaximum": s.get("scoreMaximum") or record["scoreMaximum"]}
            if s.get("comment") is not None:
                result["comment"] = s["comment"]
            results.append(result)
        chunk = results[(page - 1) * size: page * size]
        headers = {"Content-Type": RESULT_TYPE}
        if page * size < len(results):
            query = {k: v[0] for k, v in req.query.items() if k != "page"}
            headers["Link"] = f'<{req.url}?{urlencode({**query, "page": str(page + 1)})}>; rel="next"'
        return Response(200, _json_bytes(chunk), headers)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")
