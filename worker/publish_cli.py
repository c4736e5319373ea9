"""`gradesync publish` and `gradesync schema`: the producer side of the command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import click
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from worker import safejson
from worker.events import GradeEvent, event_json_schema, format_errors
from worker.publish import Publisher, PublishError, duplicate_errors, validation_context
from worker.safetext import printable
from worker.settings import ConfigError, get_settings

BATCH = 500
PROGRESS_FROM = 1000  # events: smaller files publish without a bar


def read_records(stream: TextIO) -> Iterator[tuple[str, Any | Exception]]:
    """(label, parsed record or the parse error) for a JSON array or JSON Lines input.

    Parsed with :func:`worker.safejson.loads`: a hostile number or nesting is a per-record error,
    never a traceback.
    """
    text = stream.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            items = safejson.loads(stripped)
        except safejson.JSONInputError as exc:
            label = f"item {exc.index + 1}" if exc.index is not None else "input"
            yield label, exc
            return
        if not isinstance(items, list):
            yield "input", safejson.JSONInputError("not valid JSON: one array expected")
            return
        for i, item in enumerate(items, start=1):
            yield f"item {i}", item
        return
    for n, line in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 may sit in a string
        if not line.strip():
            continue
        try:
            yield f"line {n}", safejson.loads(line)
        except safejson.JSONInputError as exc:
            yield f"line {n}", exc


def _parse_error(exc: Exception) -> str:
    if isinstance(exc, safejson.JSONInputError) and exc.field not in ("(body)", ""):
        return f"{exc.field}: {exc}"
    return str(exc) if isinstance(exc, safejson.JSONInputError) else f"not valid JSON: {exc}"


@click.command("publish")
@click.argument("source", type=click.File("r", encoding="utf-8"))
@click.option("--skip-invalid", is_flag=True, help="Publish the valid records and report the invalid ones.")
@click.option("--json", "as_json", is_flag=True, help="Print the published event ids as a JSON array.")
def publish_cmd(source: TextIO, skip_invalid: bool, as_json: bool) -> None:
    """Publish grade events from FILE (JSON Lines or a JSON array; - for stdin).

    Every record is validated first. If any is invalid, each bad record's line number and reason are
    printed and nothing is published (unless --skip-invalid).
    """
    try:
        context = validation_context(get_settings())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    events: list[GradeEvent] = []
    pairs: list[tuple[int, Any, GradeEvent]] = []
    labels: list[str] = []
    bad: list[tuple[str, list[str]]] = []
    for label, record in read_records(source):
        if isinstance(record, Exception):
            bad.append((label, [_parse_error(record)]))
            continue
        if not isinstance(record, dict):
            bad.append((label, ["must be a JSON object"]))
            continue
        try:
            event = GradeEvent.model_validate(record, context=context)
        except ValidationError as exc:
            bad.append((label, format_errors(exc)))
            continue
        pairs.append((len(labels), record, event))
        labels.append(label)
        events.append(event)
    conflicts = duplicate_errors(pairs)
    bad.extend((labels[i], [reason]) for i, reason in conflicts.items())
    events = [e for i, e in enumerate(events) if i not in conflicts]  # never published, even with --skip-invalid
    for label, reasons in bad:
        for reason in reasons:
            click.echo(printable(f"{label}: {reason}"), err=True)
    if bad and not skip_invalid:
        click.echo(f"{len(bad)} invalid record(s); nothing published", err=True)
        sys.exit(1)
    publisher = Publisher(get_settings())
    ids: list[str] = []
    try:
        with Progress(TextColumn("publishing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      transient=True, disable=len(events) < PROGRESS_FROM or not sys.stderr.isatty(),
                      console=None) as progress:
            task = progress.add_task("publish", total=len(events))
            for start in range(0, len(events), BATCH):
                chunk = events[start : start + BATCH]
                ids.extend(publisher.publish_many(chunk))
                progress.advance(task, len(chunk))
    except PublishError as exc:
        if ids:
            click.echo(f"published {len(ids)} event(s) before the failure:", err=True)
            for eid in ids:
                click.echo(eid, err=True)
        click.echo(printable(f"error: {exc}"), err=True)
        sys.exit(3)
    finally:
        publisher.close()
    if as_json:
        click.echo(json.dumps(ids))
    else:
        skipped = f", skipped {len(bad)} invalid" if bad else ""
        click.echo(f"published {len(ids)} event(s){skipped}")


@click.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of the normalized grade event."""
    click.echo(json.dumps(event_json_schema(), indent=2))
