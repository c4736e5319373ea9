"""`gradesync destinations`: each destination's flow-control state, and a manual pause / resume.

``gradesync destinations [list] [--json]`` shows per destination its state (``closed | open | half_open |
paused``), why and since when, its current / configured rate and how many events are parked.
``pause NAME --reason TEXT`` and ``resume NAME`` are audited like requeues (``gradesync dlq audit``), with
the operating-system user as the actor (``cli:<user>``). Every text shown is neutralised: a reason
comes from a vendor's answer or another operator and never reaches the terminal raw.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import click
import redis

from worker.ops.actions import cli_actor
from worker.ops.flow_status import MAX_REASON, STATES, DestinationStatus, FlowStatus
from worker.ops.lti_cli import lti_check_cmd
from worker.ops.registry_cli import apply_cmd, remove_cmd, show_cmd
from worker.ops.text import humanize_since, humanize_until
from worker.registry.service import current_destinations
from worker.registry.store import Registry
from worker.safetext import printable
from worker.settings import ConfigError, get_settings, without_credentials
from worker.store import Store

STATE_COLOURS = {"closed": "green", "half_open": "yellow", "open": "red", "paused": "magenta"}
assert set(STATE_COLOURS) == set(STATES)


def _flow() -> FlowStatus:
    """Flow status of what the workers deliver to: the run-time registry, else the file."""
    settings = get_settings()
    store = Store.connect(settings)
    try:
        destinations = current_destinations(settings, Registry(store.redis, store.keys))
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    return FlowStatus(store.redis, store.keys, destinations)


class _RedisCommand(click.Group):
    """Every sub-command reads Redis: say so plainly when it does not answer (no traceback)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (redis.RedisError, OSError) as exc:
            url = without_credentials(get_settings().redis_url)
            raise click.ClickException(f"Redis at {url} is unavailable ({type(exc).__name__})") from None


def rate_text(s: DestinationStatus) -> str:
    """``60/120`` (now / configured per minute), ``120`` when unchanged, ``90 (learnt)`` when only the
    vendor's 429s set it, ``unlimited`` when none."""
    def fmt(x: float) -> str:
        return f"{x:.1f}".rstrip("0").rstrip(".")

    if s.rate_per_minute is None:
        return "unlimited"
    if s.configured_rate_per_minute is None:
        return f"{fmt(s.rate_per_minute)} (learnt)"
    if abs(s.rate_per_minute - s.configured_rate_per_minute) < 0.05:
        return fmt(s.rate_per_minute)
    return f"{fmt(s.rate_per_minute)}/{fmt(s.configured_rate_per_minute)}"


def status_line(s: DestinationStatus, now: float) -> str:
    """The reason, plus when the next probe runs while open, and why the rate is lowered and until when."""
    reason = printable(s.reason)
    if s.state == "open" and s.probe_at is not None:
        reason = f"{reason} (next probe {humanize_until(s.probe_at, now=now)})"
    if s.rate_reason:
        back = "the configured rate" if s.configured_rate_per_minute is not None else "unlimited"
        lowered = f"rate lowered: {printable(s.rate_reason)}; {back} {humanize_until(s.rate_until, now=now)}"
        reason = f"{reason}; {lowered}" if reason else lowered
    return reason


def render_table(statuses: list[DestinationStatus], now: float, *, colour: bool) -> list[str]:
    headers = ("DESTINATION", "VENDOR", "STATE", "SINCE", "RATE/MIN", "PARKED", "REASON")
    rows = [(printable(s.name), s.vendor, s.state, humanize_since(s.since, now=now), rate_text(s), str(s.parked),
             status_line(s, now)) for s in statuses]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers[:-1])]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers[:-1], widths, strict=True)) + "  " + headers[-1]]
    for row, s in zip(rows, statuses, strict=True):
        cells = [c.rjust(w) if i == 5 else c.ljust(w) for i, (c, w) in enumerate(zip(row[:-1], widths, strict=True))]
        if colour:
            cells[2] = click.style(cells[2], fg=STATE_COLOURS.get(s.state), bold=s.state != "closed")
        lines.append("  ".join(cells) + "  " + row[-1])
    return lines


def _json(statuses: list[DestinationStatus], next_cursor: str | None = None, paged: bool = False) -> str:
    doc: dict[str, Any] = {"destinations": [s.as_dict() for s in statuses]}
    if paged:
        doc["next_cursor"] = next_cursor
    return json.dumps(doc, indent=2)


def _list(as_json: bool, limit: int | None = None, cursor: str | None = None) -> None:
    """Every destination (read a page at a time), or one page of ``limit`` after ``cursor``."""
    flow = _flow()
    names = sorted(n for n in flow.destinations if cursor is None or n > cursor)
    shown = names[:limit] if limit is not None else names
    next_cursor = shown[-1] if limit is not None and len(names) > limit else None
    statuses = [s for i in range(0, len(shown), PAGE) for s in flow.many(shown[i:i + PAGE])]
    if as_json:
        click.echo(_json(statuses, next_cursor, paged=limit is not None))
        return
    for line in render_table(statuses, time.time(), colour=True):
        click.echo(line)
    if next_cursor is not None:
        click.echo(f"(more: --cursor {printable(next_cursor)})")


#: destinations read per round trip by `destinations list`
PAGE = 1000
_LIMIT = click.option("--limit", type=click.IntRange(1, 10_000), default=None,
                      help="Show one page of at most this many destinations (in name order).")
_CURSOR = click.option("--cursor", default=None, help="Start after this destination name (the last of a page).")


@click.group("destinations", cls=_RedisCommand, invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_LIMIT
@_CURSOR
@click.pass_context
def destinations_group(ctx: click.Context, as_json: bool, limit: int | None, cursor: str | None) -> None:
    """Destinations: flow control (state, reason, since, rate, parked; pause, resume) and the run-time
    registry (apply, remove, show)."""
    if ctx.invoked_subcommand is None:
        _list(as_json, limit, cursor)


@destinations_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_LIMIT
@_CURSOR
def destinations_list(as_json: bool, limit: int | None, cursor: str | None) -> None:
    """Each destination's state (closed | open | half_open | paused), why, since when, rate and parked events."""
    _list(as_json, limit, cursor)


def _one(flow: FlowStatus, name: str, action: Callable[[], DestinationStatus]) -> DestinationStatus:
    try:
        status = action()
    except KeyError:
        known = ", ".join(sorted(flow.destinations)) or "none"
        raise click.ClickException(f"unknown destination {printable(name)!r} (configured: {known})") from None
    return status


@destinations_group.command("pause")
@click.argument("name")
@click.option("--reason", "-r", required=True, help=f"Why (shown to every operator; at most {MAX_REASON} characters).")
@click.option("--json", "as_json", is_flag=True, help="Print the new status as JSON.")
def destinations_pause(name: str, reason: str, as_json: bool) -> None:
    """Pause deliveries to NAME (e.g. a vendor's maintenance window): events park, no attempt is consumed."""
    flow = _flow()
    try:
        status = _one(flow, name, lambda: flow.pause(name, reason=reason, actor=cli_actor()))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--reason") from None
    if as_json:
        click.echo(json.dumps(status.as_dict(), indent=2))
        return
    click.echo(f"paused {printable(status.name)}: {printable(status.reason)} ({status.parked} parked)")


@destinations_group.command("resume")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the new status as JSON.")
def destinations_resume(name: str, as_json: bool) -> None:
    """Lift a manual pause of NAME: its parked events drain at the destination's rate limit."""
    flow = _flow()
    status = _one(flow, name, lambda: flow.resume(name, actor=cli_actor()))
    if as_json:
        click.echo(json.dumps(status.as_dict(), indent=2))
        return
    line = f"resumed {printable(status.name)}: now {status.state}"
    if status.state == "paused":  # a vendor's 429 (Retry-After) still holds it
        line += f" ({printable(status.reason)})"
    elif status.parked:
        line += f"; {status.parked} parked event(s) drain at the rate limit"
    click.echo(line)


destinations_group.add_command(lti_check_cmd)  # `gradesync destinations check NAME` (LTI 1.3)
destinations_group.add_command(apply_cmd)  # the run-time registry (worker.registry)
destinations_group.add_command(remove_cmd)
destinations_group.add_command(show_cmd)
