"""`gradesync destinations apply | remove | show`: destinations registered at run time (worker.registry).

``apply FILE.toml`` upserts every destination of a file in the ``destinations.toml`` schema, validated by
the same rules, all or nothing (else each problem by destination and key); a secret may be given
directly there (``api_key = "…"``: stored encrypted with ``GRADESYNC_SECRET_KEY``, never shown again) or
as ``*_env`` as in the file. ``remove NAME`` is refused while events of it are pending unless ``--force``
(which dead-letters them with a reason). ``show NAME`` prints its table, secrets masked. Every running
worker and ``gradesync serve`` sees a change within 10 s. Each change is audited (``gradesync dlq audit``).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from worker.ops.actions import cli_actor
from worker.registry.codec import masked
from worker.registry.pending import dead_letter_pending, pending_events
from worker.registry.service import apply_file
from worker.registry.store import Registry
from worker.safetext import printable
from worker.settings import ConfigError, get_settings
from worker.store import Store


def _store() -> tuple[Store, Registry]:
    store = Store.connect(get_settings())
    return store, Registry(store.redis, store.keys)


@click.command("apply")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def apply_cmd(path: Path, as_json: bool) -> None:
    """Register (or update) every destination of FILE (the destinations.toml schema), all or nothing."""
    settings = get_settings()
    _, registry = _store()
    try:
        result = apply_file(settings, registry, path, actor=cli_actor())
    except ConfigError as exc:
        raise click.ClickException(f"nothing was applied:\n{exc}") from None
    if as_json:
        click.echo(json.dumps({"applied": result}, indent=2))
        return
    count = {k: sum(1 for v in result.values() if v == k) for k in ("created", "updated", "unchanged")}
    click.echo(f"applied {len(result)} destination(s): {count['created']} created, {count['updated']} updated, "
               f"{count['unchanged']} unchanged (every worker and server sees them within 10 s)")


@click.command("remove")
@click.argument("name")
@click.option("--force", is_flag=True, help="Remove even with events pending: they are dead-lettered.")
@click.option("--reason", "-r", default="", help="Why (in the audit and the dead letters' reason).")
def remove_cmd(name: str, force: bool, reason: str) -> None:
    """Stop delivering to NAME and forget it (refused while its events are pending, unless --force)."""
    store, registry = _store()
    if registry.get(name) is None:
        raise click.ClickException(f"no destination {printable(name)!r} is registered")
    pending = pending_events(store, name)
    if pending and not force:
        raise click.ClickException(
            f"{len(pending)} event(s) of {printable(name)!r} are pending (queued, retrying, parked or in progress); "
            "wait for them, or --force to dead-letter them")
    actor = cli_actor()
    registry.delete(name, actor=actor, reason=printable(reason))
    dead = 0
    if pending:
        why = f"destination {name} was removed by {actor}" + (f": {printable(reason)}" if reason else "")
        dead = dead_letter_pending(store, name, why)
    click.echo(f"removed {printable(name)}" + (f"; {dead} pending event(s) dead-lettered" if dead else ""))


@click.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_cmd(name: str, as_json: bool) -> None:
    """NAME's registered table (secrets given directly shown as **********)."""
    _, registry = _store()
    stored = registry.get(name)
    if stored is None:
        raise click.ClickException(f"no destination {printable(name)!r} is registered")
    view = masked(stored)
    if as_json:
        click.echo(json.dumps({"name": name, "config": view}, indent=2))
        return
    click.echo(f"[destinations.{printable(name)}]")
    for key, value in view.items():
        click.echo(f"{key} = {printable(json.dumps(value))}")
