"""The flow-control gauges of ``/metrics`` (read from Redis at scrape time, like every gradesync metric):

* ``gradesync_destination_state{destination,state}``: 1 for the destination's current state (``closed``,
  ``open``, ``half_open``, ``paused``), 0 for the three others — so ``== 1`` selects it and
  ``max_over_time`` shows whether it was ever open.
* ``gradesync_destination_rate_limit{destination}``: the effective rate limit now, requests per minute
  (after the adaptive slow-down). **Absent** for a destination without any limit (unlimited): a missing
  series is how Prometheus says "no value"; NaN or +Inf would break ``min``/``avg`` over destinations.
* ``gradesync_destination_rate_lowered{destination}``: 1 while a 429 keeps the rate under its configured
  limit (or under unlimited), 0 otherwise; ``gradesync_destination_rate_restore_timestamp_seconds`` says
  when it is back (present only while lowered).
* ``gradesync_events_parked{destination}``: events parked while the destination is open or paused.
* ``gradesync_events_parked_oldest_age_seconds{destination}``: how long the oldest parked event has
  waited (0 when none): what the "parked for long" alert watches.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from worker.ops.flow_status import STATES, FlowStatus
from worker.ops.overview import OpsContext

NS = "gradesync"
#: flow hash fields of a destination that is (or was) not plainly closed: paused, throttled, a breaker, a rate
_NOT_PLAIN = ("paused", "throttled_until", "breaker", "rate_reason", "rate")


def flow_families(ctx: OpsContext, shown: set[str] | None = None) -> Iterator[Metric]:
    """``shown``: the destinations with series (None: all); one that is open, paused, half-open, has parked
    events or a lowered rate is shown whatever it says (what the alerts watch)."""
    def maybe_shown(name: str, fields: dict[str, str], parked: int) -> bool:
        """A cheap superset of what is shown (read before a destination's model is built)."""
        return shown is None or name in shown or bool(parked) or any(k in fields for k in _NOT_PLAIN)

    statuses = [s for s in FlowStatus(ctx.store.redis, ctx.keys, ctx.settings.destinations()).all(maybe_shown)
                if shown is None or s.name in shown or s.state != "closed" or s.parked or s.rate_reason]
    r = ctx.store.redis
    with r.pipeline(transaction=False) as pipe:
        for s in statuses:
            pipe.zrange(ctx.keys.parked(s.name), 0, 0, withscores=True)
        oldest = pipe.execute() if statuses else []
    now = time.time()

    state = GaugeMetricFamily(
        f"{NS}_destination_state",
        "flow-control state of the destination: 1 for the current one of closed, open, half_open, paused",
        labels=["destination", "state"])
    rate = GaugeMetricFamily(
        f"{NS}_destination_rate_limit",
        "effective rate limit of the destination now, requests per minute (absent when unlimited)",
        labels=["destination"])
    lowered = GaugeMetricFamily(
        f"{NS}_destination_rate_lowered",
        "1 while a vendor's 429 keeps the destination's rate lowered (it recovers in time), else 0",
        labels=["destination"])
    restore = GaugeMetricFamily(
        f"{NS}_destination_rate_restore_timestamp_seconds",
        "when a lowered rate is back (unlimited or the configured rate), unix time; absent when not lowered",
        labels=["destination"])
    parked = GaugeMetricFamily(
        f"{NS}_events_parked", "events parked while the destination is open or paused", labels=["destination"])
    parked_age = GaugeMetricFamily(
        f"{NS}_events_parked_oldest_age_seconds",
        "how long the oldest parked event of the destination has waited (0 when none)", labels=["destination"])
    for s, first in zip(statuses, oldest, strict=True):
        for name in STATES:
            state.add_metric([s.name, name], 1.0 if s.state == name else 0.0)
        if s.rate_per_minute is not None:
            rate.add_metric([s.name], s.rate_per_minute)
        lowered.add_metric([s.name], 1.0 if s.rate_reason else 0.0)
        if s.rate_until is not None:
            restore.add_metric([s.name], s.rate_until)
        parked.add_metric([s.name], s.parked)
        parked_age.add_metric([s.name], max(0.0, now - float(first[0][1])) if first else 0.0)
    yield from (state, rate, lowered, restore, parked, parked_age)
