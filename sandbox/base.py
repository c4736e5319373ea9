"""The vendor sandbox's shared machinery: a small threaded HTTP server per simulated vendor, a request
log, received state, and fault injection on demand.

Every simulator is a :class:`SandboxApp` subclass registering routes with :meth:`SandboxApp.route`.
Each app also answers a control API under ``/_sandbox/`` (never part of a vendor's API):

``GET /_sandbox/state``       the vendor state it keeps (grades, scores, submissions…) and the request log
``POST /_sandbox/faults``     add a fault: ``{"status": 503, "times": 2, "retry_after": 5, "latency": 0.2,
                              "drop": false, "body": {...}, "path": "regex", "method": "POST"}``
``DELETE /_sandbox/faults``   clear the faults
``POST /_sandbox/reset``      clear state, log and faults
``POST /_sandbox/config``     vendor-specific switches (:meth:`SandboxApp.configure`), e.g. seed data
``POST /_sandbox/ratelimit``  ``{"per_minute": 600, "burst": 100}``: a token bucket over the vendor routes;
                              beyond it they answer 429 with ``Retry-After`` (whole seconds until a token)
                              and the vendor's own 429 body. ``DELETE /_sandbox/ratelimit`` removes it.

A fault matches requests by optional ``method`` and ``path`` (a regex searched in the path), applies
``latency`` seconds first, then either drops the connection without an answer (``drop``), answers
``status`` with ``body`` (default: the vendor's own error shape from :meth:`SandboxApp.error_body`) and a
``Retry-After`` header, or, with neither, lets the request through slowly. ``times`` is how many
requests it affects (``-1``: until cleared); ``for_seconds`` limits it to that many seconds from now, so
``{"status": 503, "times": -1, "for_seconds": 60}`` is a 60-second outage. ``GET /_sandbox/state``
also reports ``counts``: ``{"requests": N, "throttled": M, "by_status": {"200": …}}`` over vendor routes.

It is built on the standard library's HTTP server, not an ASGI framework, because only a raw socket can
drop a connection mid-request the way a failing load balancer does.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlsplit

from sandbox.ratelimit import TokenBucket
from worker.vendors import BY_NAME

_DROP = object()


@dataclass
class Request:
    method: str
    raw_path: str  # the path as sent, percent-encoding kept
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    host: str

    @property
    def path(self) -> str:
        return unquote(self.raw_path)

    @property
    def url(self) -> str:
        """The full URL without the query, as the client addressed it."""
        return f"http://{self.host}{self.raw_path}"

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8")) if self.body else None

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Response:
    status: int
    body: Any = None  # bytes, str, or JSON-able
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if self.body is None:
            return b"", headers
        if isinstance(self.body, bytes):
            return self.body, headers
        if isinstance(self.body, str):
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
            return self.body.encode("utf-8"), headers
        headers.setdefault("Content-Type", "application/json; charset=utf-8")
        return json.dumps(self.body).encode("utf-8"), headers


@dataclass
class Fault:
    status: int | None = None
    body: Any = None
    retry_after: float | None = None
    latency: float = 0.0
    drop: bool = False
    times: int = 1
    path: str | None = None
    method: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    for_seconds: float | None = None
    until: float | None = None  # set from for_seconds when the fault is added

    def matches(self, req: Request) -> bool:
        if self.times == 0:
            return False
        if self.until is not None and time.time() >= self.until:
            return False
        if self.method and self.method.upper() != req.method:
            return False
        return not (self.path and not re.search(self.path, req.path))


Handler = Callable[[Request, "re.Match[str]"], Response]


def demo_score(i: int) -> dict[str, Any]:
    """The score part of the demo's ``i``-th grade event (every vendor's the same)."""
    return {"score_given": 60 + (i * 7) % 40, "score_maximum": 100, "comment": f"Demo attempt {i + 1}"}


class SandboxApp:
    """One simulated vendor API.

    A simulator also says how the demo and the tests use it (the class attributes and class methods
    below), so that a vendor's sandbox side is its one module plus its row in the vendor table.
    """

    vendor = "vendor"
    #: credentials the simulator accepts by default (the demo's and the tests' destinations use them)
    DEMO_CREDENTIALS: ClassVar[dict[str, str]] = {}
    #: the name of its destination in the demo
    DEMO_DESTINATION: ClassVar[str] = ""

    @classmethod
    def demo_secret(cls) -> str:
        """The value of the demo destination's secret environment variable."""
        (field,) = BY_NAME[cls.vendor].secrets.values()
        return cls.DEMO_CREDENTIALS[field]

    @classmethod
    def destination_keys(cls, url: str, secret_env: str, *, lti_kid: str | None = None) -> str:
        """The vendor's own keys of a ``[destinations.<name>]`` table pointing at this simulator."""
        (key,) = BY_NAME[cls.vendor].secrets
        return f'{key} = "{secret_env}"\n'

    @classmethod
    def demo_event(cls, i: int, urls: Mapping[str, str]) -> dict[str, Any]:
        """The demo's ``i``-th ordinary grade event of this vendor, without ``destination``: addressed so
        that this simulator (with :attr:`DEMO_CREDENTIALS`) accepts it; ``urls``: vendor -> simulator URL."""
        raise NotImplementedError

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.lock = threading.RLock()
        self.faults: list[Fault] = []
        self.requests: deque[dict[str, Any]] = deque(maxlen=5000)
        self.ratelimit: TokenBucket | None = None
        self.counts: dict[str, Any] = {"requests": 0, "throttled": 0, "by_status": {}}
        self.register()

    # -- for subclasses --------------------------------------------------------------------------
    def register(self) -> None:
        """Register the vendor's routes (override)."""

    def state(self) -> dict[str, Any]:
        """The vendor state received so far (override)."""
        return {}

    def clear(self) -> None:
        """Forget the vendor state (override)."""

    def configure(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Apply vendor-specific switches or seed data; return what is now set (override)."""
        raise ValueError(f"{self.vendor} sandbox has no configuration switches")

    def error_body(self, status: int, message: str) -> Any:
        """The vendor's own error body for an injected fault (override)."""
        return {"error": message}

    def over_limit(self, wait: int) -> Response:
        """The answer over the rate limit (``wait``: whole seconds until a token): 429 + Retry-After with
        the vendor's own error body (override for another shape)."""
        return Response(429, self.error_body(429, "rate limit exceeded"), {"Retry-After": str(wait)})

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        """Decorator: ``pattern`` is a regex over the *raw* (still percent-encoded) path."""

        def deco(fn: Handler) -> Handler:
            self._routes.append((method.upper(), re.compile(f"^{pattern}$"), fn))
            return fn

        return deco

    # -- dispatch ----------------------------------------------------------------------------------
    def handle(self, req: Request) -> Response | object:
        if req.raw_path.startswith("/_sandbox/"):
            return self._control(req)
        limited = self._take_token()
        if limited is not None:
            resp = self.over_limit(limited)
            self._log(req, resp.status, fault="ratelimit")
            return resp
        fault = self._take_fault(req)
        if fault is not None:
            if fault.latency:
                time.sleep(fault.latency)
            if fault.drop:
                self._log(req, None, fault="drop")
                return _DROP
            if fault.status is not None:
                headers = dict(fault.headers)
                if fault.retry_after is not None:
                    ra = float(fault.retry_after)
                    headers["Retry-After"] = str(int(ra) if ra.is_integer() else ra)
                body = fault.body if fault.body is not None else self.error_body(fault.status, "injected fault")
                resp = Response(fault.status, body, headers)
                self._log(req, resp.status, fault="status")
                return resp
        resp = self._dispatch(req)
        self._log(req, resp.status)
        return resp

    def _dispatch(self, req: Request) -> Response:
        allowed = False
        for method, pattern, fn in self._routes:
            m = pattern.match(req.raw_path)
            if not m:
                continue
            if method != req.method:
                allowed = True
                continue
            try:
                return fn(req, m)
            except json.JSONDecodeError:
                return Response(400, self.error_body(400, "request body is not valid JSON"))
        if allowed:
            return Response(405, self.error_body(405, "method not allowed"))
        return Response(404, self.error_body(404, "not found"))

    def _take_token(self) -> int | None:
        with self.lock:
            return None if self.ratelimit is None else self.ratelimit.take()

    def _take_fault(self, req: Request) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(req):
                    if fault.times > 0:
                        fault.times -= 1
                    return fault
        return None

    def _log(self, req: Request, status: int | None, fault: str | None = None) -> None:
        entry: dict[str, Any] = {
            "t": time.time(),
            "method": req.method,
            "path": req.raw_path,
            "query": req.query,
            "headers": req.headers,
            "body": req.body.decode("utf-8", errors="replace"),
            "status": status,
        }
        if fault:
            entry["fault"] = fault
        with self.lock:
            self.requests.append(entry)
            self.counts["requests"] += 1
            if status == 429 or fault == "ratelimit":
                self.counts["throttled"] += 1
            by_status = self.counts["by_status"]
            key = str(status) if status is not None else "dropped"
            by_status[key] = by_status.get(key, 0) + 1

    def _control(self, req: Request) -> Response:
        name = req.raw_path[len("/_sandbox/") :].strip("/")
        with self.lock:
            if name == "state" and req.method == "GET":
                return Response(200, {"vendor": self.vendor, "state": self.state(),
                                      "requests": list(self.requests),
                                      "faults": [f.__dict__ for f in self.faults if f.times != 0],
                                      "counts": {**self.counts, "by_status": dict(self.counts["by_status"])},
                                      "ratelimit": self.ratelimit.describe() if self.ratelimit else None})
            if name == "faults" and req.method == "POST":
                spec = req.json() or {}
                try:
                    fault = Fault(**spec)
                except TypeError as exc:
                    return Response(400, {"error": str(exc)})
                if fault.for_seconds is not None:
                    fault.until = time.time() + float(fault.for_seconds)
                self.faults.append(fault)
                return Response(201, {"faults": len(self.faults)})
            if name == "ratelimit" and req.method == "POST":
                spec = req.json() or {}
                try:
                    self.ratelimit = TokenBucket(float(spec["per_minute"]), spec.get("burst"))
                except (KeyError, TypeError, ValueError) as exc:
                    return Response(400, {"error": f"per_minute (> 0) and optional burst expected: {exc}"})
                return Response(200, self.ratelimit.describe())
            if name == "ratelimit" and req.method == "DELETE":
                self.ratelimit = None
                return Response(204)
            if name == "faults" and req.method == "DELETE":
                self.faults.clear()
                return Response(204)
            if name == "config" and req.method == "POST":
                try:
                    return Response(200, self.configure(req.json() or {}))
                except (ValueError, TypeError, KeyError) as exc:
                    return Response(400, {"error": str(exc)})
            if name == "reset" and req.method == "POST":
                self.faults.clear()
                self.requests.clear()
                self.ratelimit = None
                self.counts = {"requests": 0, "throttled": 0, "by_status": {}}
                self.clear()
                return Response(204)
        return Response(404, {"error": "unknown sandbox control endpoint"})


def _host(server: ThreadingHTTPServer) -> str:
    host = server.server_address[0]
    return host.decode() if isinstance(host, bytes) else str(host)


class _HTTPHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        req = Request(
            method=self.command,
            raw_path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            host=self.headers.get("Host", f"{_host(self.server)}:{self.server.server_address[1]}"),
        )
        try:
            result = self.server.app.handle(req)
        except Exception as exc:  # a simulator bug answers 500, as a real server would
            result = Response(500, {"error": f"sandbox error: {type(exc).__name__}"})
        if result is _DROP:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        assert isinstance(result, Response)
        payload, headers = result.encode()
        self.send_response(result.status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:  # the request log is in the app
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: sixty-four workers connecting at once would see
    # connection resets that no real vendor's load balancer gives
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], app: SandboxApp) -> None:
        self.app = app
        super().__init__(address, _HTTPHandler)


@dataclass
class Running:
    app: SandboxApp
    server: _Server
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{_host(self.server)}:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start(app: SandboxApp, host: str = "127.0.0.1", port: int = 0) -> Running:
    """Serve ``app`` on ``host:port`` (0: a free port) in a background thread."""
    server = _Server((host, port), app)
    thread = threading.Thread(target=server.serve_forever, name=f"sandbox-{app.vendor}", daemon=True)
    thread.start()
    return Running(app, server, thread)
