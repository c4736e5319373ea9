"""``/metrics``: Prometheus text exposition of gradesync's Redis-backed counters and gauges.

A custom collector reads Redis at scrape time (``worker.store.stats`` and the overview), so one scrape of
any web process shows the totals of every worker process on every host; there is no per-process registry
to aggregate. Metric names follow the Prometheus conventions (``gradesync_`` namespace, ``_total`` on
counters, base unit seconds).

``/metrics`` needs no authentication (the convention of Prometheus exporters and of Flower's
``/metrics``): it holds only counts, destination names and vendor names, never an event, a credential
or an error message. Restrict it at the network level if destination names are sensitive.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder
from prometheus_client.registry import Collector

from worker.audit.api import audit_families
from worker.ops.auth import AuthLimiter
from worker.ops.flow_metrics import flow_families
from worker.ops.overview import OpsContext, compute_overview
from worker.store.stats import BUCKETS, OUTCOMES

NS = "gradesync"


def _le(bound: float) -> str:
    """A bucket bound as Prometheus writes it (0.005, 1.0, 30.0)."""
    return repr(float(bound))


class GradesyncCollector(Collector):
    """Reads the counters kept in Redis at every scrape."""

    def __init__(self, ctx: OpsContext) -> None:
        self.ctx = ctx

    def describe(self) -> Iterable[Metric]:
        return []  # nothing is read at registration time

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(f"{NS}_redis_up", "1 if gradesync's Redis answered this scrape, else 0")
        started = time.monotonic()
        try:
            families = list(self._families())
        except (redis.RedisError, OSError):
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families
        duration = GaugeMetricFamily(f"{NS}_scrape_duration_seconds", "time taken to read gradesync's state")
        duration.add_metric([], time.monotonic() - started)
        yield duration

    def _shown(self, rows: list[Any], vendors: dict[str, str]) -> set[str] | None:
        """The destinations with per-destination series (None: every one). Up to
        ``metrics_all_destinations_up_to`` destinations, all of them; above it — thousands of tenants — only
        those with a delivery attempt in the last ``metrics_active_seconds`` or with events in progress,
        scheduled or dead-lettered (flow control adds the open, paused, parked and slowed ones), so a
        scrape stays bounded by the active destinations, not the registered ones."""
        settings = self.ctx.settings
        if len(vendors) <= settings.metrics_all_destinations_up_to:
            return None
        active = self.ctx.store.stats.active_since(time.time() - settings.metrics_active_seconds)
        return active | {r.destination for r in rows if r.in_progress or r.scheduled_retries or r.dead_letters}

    def _families(self) -> Iterator[Metric]:
        stats = self.ctx.store.stats
        rows = compute_overview(self.ctx, windows=False)
        every = self.ctx.vendors()
        shown = self._shown(rows, every)
        vendors = every if shown is None else {n: v for n, v in every.items() if n in shown}

        published = CounterMetricFamily(f"{NS}_events_published", "grade events published, per destination",
                                        labels=["destination"])
        totals = {name: 0 for name in vendors}
        totals.update({d: n for d, n in stats.published_totals().items() if shown is None or d in shown})
        for dest, n in sorted(totals.items()):
            published.add_metric([dest], n)
        yield published

        processed = CounterMetricFamily(
            f"{NS}_events_processed",
            "delivery attempts finished, per destination, vendor and outcome "
            "(succeeded, superseded, retried, dead_lettered)",
            labels=["destination", "vendor", "outcome"],
        )
        counts = {(name, vendor, outcome): 0 for name, vendor in vendors.items() for outcome in OUTCOMES}
        counts.update({k: n for k, n in stats.processed_totals().items() if shown is None or k[0] in shown})
        for (dest, vendor, outcome), n in sorted(counts.items()):
            processed.add_metric([dest, vendor, outcome], n)
        yield processed

        hist = HistogramMetricFamily(
            f"{NS}_vendor_request_duration_seconds",
            "duration of HTTP requests to the vendor APIs, per destination, vendor, route and status class "
            "(2xx, 4xx, 5xx, error)",
            labels=["destination", "vendor", "route", "status_class"],
        )
        for labels, raw in sorted(stats.request_histograms().items()):
            if shown is not None and labels[0] not in shown:
                continue
            count = raw.get("count", 0.0)
            buckets: list[tuple[str, float]] = [
                (_le(bound), raw.get(f"le:{bound}", 0.0)) for bound in BUCKETS
            ]
            buckets.append(("+Inf", count))
            hist.add_metric(list(labels), buckets=buckets, sum_value=raw.get("sum", 0.0))
        yield hist

        auth = CounterMetricFamily(
            f"{NS}_auth_failures",
            "refused authentications of the HTTP API and dashboard: wrong Bearer token (bearer), wrong login "
            "token (login), refused because the client was over the limit (rate_limited)",
            labels=["kind"])
        for kind, n in sorted(AuthLimiter(self.ctx.store.redis, self.ctx.keys, limit=1, window=1).totals().items()):
            auth.add_metric([kind], n)
        yield auth

        now = time.time()
        gauges = {
            "queue_depth": GaugeMetricFamily(
                f"{NS}_queue_depth", "messages waiting in the destination's broker queue (Redis list or RabbitMQ)",
                labels=["destination"]),
            "in_progress": GaugeMetricFamily(
                f"{NS}_events_in_progress", "delivery attempts running now", labels=["destination"]),
            "scheduled": GaugeMetricFamily(
                f"{NS}_scheduled_retries", "events waiting for a scheduled retry", labels=["destination"]),
            "dead": GaugeMetricFamily(
                f"{NS}_dead_letters", "events in the dead-letter queue", labels=["destination"]),
            "oldest": GaugeMetricFamily(
                f"{NS}_dead_letter_oldest_age_seconds",
                "age of the oldest dead letter (0 when there is none)", labels=["destination"]),
        }
        for row in rows:
            if shown is not None and row.destination not in shown:
                continue
            label = [row.destination]
            if row.queue_depth is not None:
                gauges["queue_depth"].add_metric(label, row.queue_depth)
            gauges["in_progress"].add_metric(label, row.in_progress)
            gauges["scheduled"].add_metric(label, row.scheduled_retries)
            gauges["dead"].add_metric(label, row.dead_letters)
            gauges["oldest"].add_metric(label, row.oldest_age(now) or 0.0)
        yield from gauges.values()
        yield from flow_families(self.ctx, shown)
        yield from audit_families(self.ctx)


def make_registry(ctx: OpsContext) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GradesyncCollector(ctx))
    return registry


def metrics_router(ctx: OpsContext) -> APIRouter:
    registry = make_registry(ctx)
    router = APIRouter(tags=["ops"])

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_PLAIN_0_0_4: {}},
                         "description": "Prometheus text format (OpenMetrics when the scraper asks)"}},
    )
    def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        headers = {"Content-Type": content_type, "Cache-Control": "no-store"}
        return Response(encoder(registry), headers=headers)

    return router
