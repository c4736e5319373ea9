"""`gradesync audit`: read delivered grades back from the gradebooks and report drift.

``gradesync audit [DESTINATION...] [--since 7d] [--json] [--resync missing|drifted]``. The audit is a job
in Redis (:mod:`worker.audit.jobs`) run by this process; if the command is stopped, ``--resume ID`` (or a
restarted ``gradesync serve``) carries it on from its checkpoint.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from worker import errors
from worker.audit.compare import VERDICTS
from worker.audit.engine import AuditRunner
from worker.audit.jobs import JobView
from worker.audit.resync import RESYNCABLE
from worker.known_secrets import register_destinations
from worker.logs import configure
from worker.ops import actions
from worker.publish import Publisher
from worker.redact import redact
from worker.safetext import printable
from worker.settings import Settings, get_settings
from worker.store import Store

#: the keys of one cell in ``--json`` output, in order
CELL_KEYS = ("destination", "learner_id", "target", "event_id", "delivered", "found", "verdict", "reason")


def cell_json(cell: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = redact({k: cell.get(k) for k in CELL_KEYS})
    return out


def table(view: JobView) -> str:
    header = ("DESTINATION", *(v.upper() for v in VERDICTS))
    rows = [(d, *(str(view.counts.get(d, {}).get(v, 0)) for v in VERDICTS)) for d in view.destinations]
    rows.append(("total", *(str(view.summary[v]) for v in VERDICTS)))
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                                    strict=True)))
                     for r in (header, *rows))


def _follow(runner: AuditRunner, job_id: str, thread: threading.Thread) -> JobView:
    with Progress(TextColumn("audit"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True,
                  disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task("audit", total=None)
        while thread.is_alive():
            thread.join(0.5)
            view = runner.jobs.get(job_id)
            if view is not None:
                progress.update(task, completed=view.done, total=view.total or None)
        final = runner.jobs.get(job_id)
        # another process runs it (the server, another --resume): follow it to its end
        while final is not None and final.state in ("pending", "running") and runner.jobs.held(job_id):
            time.sleep(0.5)
            final = runner.jobs.get(job_id)
            progress.update(task, completed=final.done if final else 0, total=(final.total if final else 0) or None)
    if final is None:
        raise click.ClickException(f"audit {job_id} vanished from Redis")
    return final


@click.command("audit")
@click.argument("destinations", nargs=-1)
@click.option("--since", "since", default="7d", show_default=True,
              help="Cells whose latest event succeeded since (7d, 2h, ISO 8601, epoch).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per cell, then a summary line.")
@click.option("--resync", "resync_verdicts", multiple=True, type=click.Choice(RESYNCABLE),
              help="Republish the last event of the missing (or, explicitly, drifted) cells.")
@click.option("--resume", "resume", metavar="ID", help="Carry on an interrupted audit job.")
def audit_cmd(destinations: tuple[str, ...], since: str, as_json: bool, resync_verdicts: tuple[str, ...],
              resume: str | None) -> None:
    """Read delivered grades back and compare: match, drifted, missing, unreadable, error."""
    settings: Settings = get_settings()
    configure(settings.log_format, settings.log_level)  # logs to stderr: stdout is the report
    register_destinations(settings)  # their credentials are masked by value in everything shown
    store = Store.connect(settings)
    publisher = Publisher(settings)
    try:
        _audit(settings, AuditRunner(settings, store, publisher=publisher), destinations, since, as_json,
               resync_verdicts, resume)
    finally:
        publisher.close()


def _audit(settings: Settings, runner: AuditRunner, destinations: tuple[str, ...], since: str, as_json: bool,
           resync_verdicts: tuple[str, ...], resume: str | None) -> None:
    if resume:
        job_id = printable(resume)
        if runner.jobs.get(job_id) is None:
            raise click.ClickException(f"no audit {job_id}")
    else:
        try:
            start = actions.parse_since(since)
        except ValueError as exc:
            raise click.BadParameter(str(exc).removeprefix("since: "), param_hint="--since") from None
        try:
            job_id = runner.create(list(destinations) or None, start or 0.0, actor=actions.cli_actor(),
                                   resync=resync_verdicts)
        except errors.ConfigurationError as exc:
            raise click.ClickException(exc.message) from None
    if not as_json:
        click.echo(f"audit {job_id}", err=True)
    view = _follow(runner, job_id, runner.start(job_id))
    if view.state != "done":
        raise click.ClickException(f"audit {job_id} {view.state}: {view.error or 'not finished'} "
                                   f"(resume with --resume {job_id})")
    report = view.resync_report
    if as_json:
        for cell in runner.jobs.results(job_id):
            click.echo(json.dumps(cell_json(cell)))
        last: dict[str, Any] = {"summary": view.summary}
        if report is not None:
            last["resync"] = report
        click.echo(json.dumps(last))
        return
    click.echo(table(view))
    for cell in runner.jobs.results(job_id, verdicts=("drifted", "missing", "error")):
        click.echo(f"{cell['verdict']:8}  {cell['destination']}  {cell.get('learner_id')}  {cell.get('event_id')}  "
                   f"{printable(str(cell.get('reason') or ''))}")
    if report is not None:
        click.echo(f"resynced {len(report['republished'])} cell(s) ({', '.join(report['verdicts'])}); "
                   f"skipped {len(report['skipped'])}")
