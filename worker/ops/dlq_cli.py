"""`gradesync dlq`: list, show, requeue, purge and export dead letters; read the audit log."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from worker.dispatch.celery import CeleryDispatcher
from worker.known_secrets import register_destinations
from worker.ops import actions
from worker.ops.views import event_view, iso
from worker.redact import redact, redact_text
from worker.safetext import printable
from worker.settings import get_settings
from worker.store import Store
from worker.store.deadletters import DeadLetterQueue, DLQFilter


def parse_since(value: str | None, *, now: float | None = None) -> float | None:
    """``2h``/``30m``/``7d`` ago, an ISO 8601 time, or epoch seconds (see :func:`worker.ops.actions.parse_since`)."""
    try:
        return actions.parse_since(value, now=now)
    except ValueError as exc:
        raise click.BadParameter(str(exc).removeprefix("since: "), param_hint="--since") from None


def _filters(fn: Callable[..., Any]) -> Callable[..., Any]:
    for opt in reversed([
        click.option("--destination", "-d", help="Only this destination."),
        click.option("--vendor", "-v", help="Only this vendor."),
        click.option("--error", "-e", help="Only entries whose error contains TEXT (case-insensitive)."),
        click.option("--learner", "-l", help="Only this learner id."),
        click.option("--since", "-s", help="Dead-lettered since (2h, 30m, 7d, ISO 8601, epoch)."),
    ]):
        fn = opt(fn)
    return fn


def _flt(destination: str | None, vendor: str | None, error: str | None, learner: str | None,
         since: str | None) -> DLQFilter:
    return DLQFilter(destination=destination, vendor=vendor, error=error, learner=learner, since=parse_since(since))


def _dlq() -> DeadLetterQueue:
    settings = get_settings()
    register_destinations(settings)  # their credentials are masked by value in everything shown
    return DeadLetterQueue(Store.connect(settings), CeleryDispatcher(settings))


def _age(ts: float) -> str:
    secs = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


@click.group("dlq")
def dlq_group() -> None:
    """Inspect and act on dead-lettered events."""


@dlq_group.command("list")
@_filters
@click.option("--limit", default=100, show_default=True, help="At most this many entries.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def dlq_list(limit: int, as_json: bool, **f: Any) -> None:
    """List dead letters, newest first."""
    entries, total = _dlq().list(_flt(**f), limit=limit)
    if as_json:
        click.echo(json.dumps({"total": total, "items": [
            {**redact(e.__dict__), "dead_at": iso(e.dead_at)} for e in entries]}, indent=2))
        return
    if not entries:
        click.echo("no dead letters match")
        return
    click.echo(f"{'EVENT ID':<36}  {'DESTINATION':<14} {'VENDOR':<17} {'AGE':>5} {'TRIES':>5}  REASON")
    for e in entries:
        click.echo(printable(f"{e.event_id:<36}  {e.destination:<14} {e.vendor:<17} {_age(e.dead_at):>5} "
                             f"{e.attempts:>5}  {redact_text(e.reason)[:100]}"))
    if total > len(entries):
        click.echo(f"... {total - len(entries)} more (use --limit or filters)")


@dlq_group.command("show")
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def dlq_show(event_id: str, as_json: bool) -> None:
    """Show one dead letter: the event (secrets masked), the final error and every attempt."""
    dlq = _dlq()
    rec = dlq.get(event_id)
    if rec is None:
        click.echo(printable(f"{event_id} is not in the dead-letter queue"), err=True)
        sys.exit(1)
    view = event_view(dlq.store, rec)
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    click.echo(printable(f"{view['event_id']}  dead-lettered {view.get('dead_lettered_at')}  "
                         f"({view['destination']}, {view['vendor']})"))
    click.echo(printable(f"  reason: {view.get('reason')}"))
    for h in view.get("history", []):
        click.echo(printable(f"  attempt {h.get('n')} {h.get('started_at')}: {h.get('outcome')} HTTP "
                             f"{h.get('status') or '-'} {h.get('error_class', '')} "
                             f"{h.get('vendor_message') or h.get('message') or ''}"))
    click.echo("  event: " + json.dumps(view["event"]))


def _targets(event_ids: tuple[str, ...], all_: bool) -> list[str] | None:
    if bool(event_ids) == all_:
        raise click.UsageError("give EVENT_ID... or --all (with optional filters), not both or neither")
    return list(event_ids) if event_ids else None


@dlq_group.command("requeue")
@click.argument("event_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every dead letter matching the filters.")
@_filters
@click.option("--dry-run", is_flag=True, help="Only say what would be requeued.")
@click.option("--rate", type=float, default=None, help="Events per second (default: the destination's requeue_rate).")
def dlq_requeue(event_ids: tuple[str, ...], all_: bool, dry_run: bool, rate: float | None, **f: Any) -> None:
    """Requeue dead letters: attempts reset, original occurred_at kept, stale guard applied."""
    ids = _targets(event_ids, all_)
    flt = _flt(**f)
    dests = get_settings().destinations()
    if rate is None:
        chosen = [dests[flt.destination]] if flt.destination is not None and flt.destination in dests \
            else list(dests.values())
        rate = min((d.requeue_rate for d in chosen), default=10.0)
    dlq = _dlq()
    with Progress(TextColumn("requeue"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True,
                  disable=dry_run or not sys.stderr.isatty()) as progress:
        task = progress.add_task("requeue", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        report = dlq.requeue(ids, flt, dry_run=dry_run, rate=rate, actor=actions.cli_actor(), progress=advance)
    for eid, why in report.skipped.items():
        click.echo(printable(f"skipped {eid}: {why}"), err=True)
    if dry_run:
        for eid in report.event_ids:
            click.echo(eid)
        click.echo(f"dry run: {report.matched} dead letter(s) would be requeued")
    else:
        click.echo(f"requeued {report.done} of {report.matched} dead letter(s) at <= {rate:g}/s")
    if ids is not None and report.skipped:
        sys.exit(1)


@dlq_group.command("purge")
@click.argument("event_ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every dead letter matching the filters.")
@_filters
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(event_ids: tuple[str, ...], all_: bool, yes: bool, **f: Any) -> None:
    """Delete dead letters for good."""
    ids = _targets(event_ids, all_)
    flt = _flt(**f)
    dlq = _dlq()
    preview = dlq.purge(ids, flt, actor=actions.cli_actor(), dry_run=True, audit=False) if not yes else None
    if preview is not None:
        if preview.matched == 0:
            click.echo("nothing to purge")
            return
        click.confirm(f"Purge {preview.matched} dead letter(s) for good?", abort=True)
    report = dlq.purge(ids, flt, actor=actions.cli_actor())
    for eid, why in report.skipped.items():
        click.echo(printable(f"skipped {eid}: {why}"), err=True)
    click.echo(f"purged {report.done} dead letter(s)")


@dlq_group.command("export")
@_filters
def dlq_export(**f: Any) -> None:
    """Write matching dead letters as JSON Lines (event with secrets masked, error, attempts)."""
    dlq = _dlq()
    for rec in dlq.records(_flt(**f), newest_first=False):
        click.echo(json.dumps(event_view(dlq.store, rec)))


@dlq_group.command("audit")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def dlq_audit(limit: int, as_json: bool) -> None:
    """The operator actions taken on dead letters (newest first)."""
    entries = _dlq().audit(limit)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for e in entries:
        dry = " (dry run)" if e["dry_run"] else ""
        why = f"  reason: {e['reason']}" if e.get("reason") else ""
        click.echo(printable(f"{iso(e['at'])}  {e['actor']:<9} {e['action']:<8} {e['count']}/{e['matched']}{dry}  "
                             f"by {e['selection']} {json.dumps(e['filters']) if e['filters'] else ''}{why}"))
