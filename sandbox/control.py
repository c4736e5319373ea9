"""A client of a simulator's ``/_sandbox/`` control API (tests, benchmarks, the demo)."""

from __future__ import annotations

import re
from typing import Any

import httpx


class SandboxClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=10.0)

    def fault(self, **spec: Any) -> None:
        """Inject a fault (see :mod:`sandbox.base` for the fields)."""
        self._http.post("/_sandbox/faults", json=spec).raise_for_status()

    def configure(self, **spec: Any) -> dict[str, Any]:
        """Vendor-specific switches or seed data (see the simulator's docstring)."""
        response = self._http.post("/_sandbox/config", json=spec)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def rate_limit(self, per_minute: float, burst: int | None = None) -> dict[str, Any]:
        """Answer 429 (with Retry-After) to vendor requests beyond ``per_minute`` (``burst`` at once)."""
        spec: dict[str, Any] = {"per_minute": per_minute}
        if burst is not None:
            spec["burst"] = burst
        response = self._http.post("/_sandbox/ratelimit", json=spec)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def clear_rate_limit(self) -> None:
        self._http.delete("/_sandbox/ratelimit").raise_for_status()

    def outage(self, seconds: float, status: int = 503) -> None:
        """Answer ``status`` to every vendor request for the next ``seconds`` seconds."""
        self.fault(status=status, times=-1, for_seconds=seconds)

    def counts(self) -> dict[str, Any]:
        """``{"requests": N, "throttled": M, "by_status": {...}}`` over the vendor routes since the reset."""
        counts: dict[str, Any] = self.dump()["counts"]
        return counts

    def clear_faults(self) -> None:
        self._http.delete("/_sandbox/faults").raise_for_status()

    def reset(self) -> None:
        self._http.post("/_sandbox/reset").raise_for_status()

    def dump(self) -> dict[str, Any]:
        response = self._http.get("/_sandbox/state")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.dump()["state"]
        return state

    def requests(self, *, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        """Logged requests, optionally only those of ``method`` whose path matches the regex ``path``."""
        out = []
        for entry in self.dump()["requests"]:
            if method and entry["method"] != method.upper():
                continue
            if path and not re.search(path, entry["path"]):
                continue
            out.append(entry)
        return out

    def close(self) -> None:
        self._http.close()
