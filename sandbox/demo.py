"""`gradesync demo`: the whole system on one machine, as real processes.

Finds a Redis (``GRADESYNC_REDIS_URL``, else one on localhost, else an embedded real redis-server in the
data folder), starts the vendor sandbox, a worker and the ops web app, publishes a sample of grade events to
all five vendors — including a transient outage, a permanent refusal and a stale event — and shows them
flowing until each one settles. Then LearningStudio goes down for ~30 s while more grades arrive: the
live table shows its circuit breaker open, the events park (no attempt used), a probe close it and the
parked events drain. Everything keeps running for you to explore until Ctrl-C, which stops it all cleanly.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from sandbox import DEMO_CREDENTIALS, simulator
from sandbox import destinations_toml as sandbox_destinations_toml
from sandbox.control import SandboxClient
from sandbox.localredis import EmbeddedRedis, find_or_start, free_port
from sandbox.lti_demo import demo_key
from sandbox.rehearsal import RehearsalError, start_outage
from sandbox.rig import Processes, write_destinations
from worker.crypto import generate_key
from worker.ops.flow_status import FlowStatus
from worker.publish import Publisher
from worker.safetext import printable
from worker.settings import Settings, environ_value, reset_settings
from worker.store import Store
from worker.store.ledger import RUNNABLE
from worker.vendors import VENDORS
from worker.vendors.learningstudio import LearningStudioDestination

#: each vendor's demo destination, and the environment variable holding its secret
DEST = {v: simulator(v).DEMO_DESTINATION for v in VENDORS}
SECRET_VAR = {v: f"DEMO_{v.upper()}_SECRET" for v in VENDORS}
SECRET_ENV = {SECRET_VAR[v]: simulator(v).demo_secret() for v in VENDORS}
STYLE = {"queued": "white", "in_progress": "cyan", "retrying": "yellow", "succeeded": "green",
         "superseded": "blue", "dead_lettered": "red", "parked": "magenta"}
FLOW_STYLE = {"closed": "green", "half_open": "yellow", "open": "bold red", "paused": "magenta"}
#: the vendor whose outage the demo rehearses, and its breaker knobs (short, so the demo stays short)
OUTAGE_VENDOR = "learningstudio"
BREAKER = {"breaker_failures": "3", "breaker_cooldown": "5.0", "breaker_max_cooldown": "15.0"}


def dev_secret_key(data_dir: Path) -> str:
    """``GRADESYNC_SECRET_KEY`` when set, else the demo's own key, generated once into ``secret.key``
    (mode 0600) so a restarted demo still reads the events it stored."""
    explicit = environ_value("GRADESYNC_SECRET_KEY")
    if explicit:
        return explicit
    path = data_dir / "secret.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(generate_key() + "\n")
    return path.read_text().strip()


def destinations_toml(ports: dict[str, int]) -> str:
    text = "# written by `gradesync demo`: the five sandbox vendors\n" + sandbox_destinations_toml(
        {v: f"http://127.0.0.1:{ports[v]}" for v in VENDORS}, DEST, SECRET_VAR,
        timeout=5.0, max_attempts=4, retry_base_delay=1.0, retry_max_delay=10.0, lti_kid=demo_key().kid,
    )
    # short breaker cool-downs for the outage phase (only the knobs this version's settings know)
    knobs = "".join(f"{k} = {v}\n" for k, v in BREAKER.items() if k in LearningStudioDestination.model_fields)
    header = f"[destinations.{DEST[OUTAGE_VENDOR]}]\n"
    return text.replace(header, header + knobs, 1)


def sample_events(n: int, lti_url: str = "http://127.0.0.1:8805") -> list[dict[str, Any]]:
    """``n`` ordinary events per vendor, plus one permanent refusal and one stale pair."""
    now = datetime.now(UTC)
    events: list[dict[str, Any]] = []
    lt_key = DEMO_CREDENTIALS["ltiaas"]["service_key"]
    for i in range(n):
        for vendor in VENDORS:
            events.append({"destination": DEST[vendor], **simulator(vendor).demo_event(i, {"lti_ags": lti_url})})
    # a line item the LMS does not know: refused for good, lands in the dead-letter queue
    events.append({"destination": DEST["ltiaas"], "learner_id": "lti-user-gone", "score_given": 5,
                   "score_maximum": 10, "target": {"line_item_id": "https://lms.example/line_items/unknown-42",
                                                   "service_key": lt_key}})
    # the same learner and item twice: the older event (last; the demo sends it once the newer one
    # is applied) is superseded
    stale = {"destination": DEST["ltiaas"], "learner_id": "lti-user-0", "score_maximum": 100,
             "target": {"line_item_id": "https://lms.example/api/lti/courses/7/line_items/2", "service_key": lt_key}}
    events.append({**stale, "score_given": 90, "occurred_at": now.isoformat()})
    events.append({**stale, "score_given": 40, "occurred_at": (now - timedelta(hours=1)).isoformat()})
    return events


def outage_events(n: int) -> list[dict[str, Any]]:
    """Grades for the destination whose vendor goes down (distinct learners, one gradebook item)."""
    return [{"destination": DEST[OUTAGE_VENDOR], "learner_id": f"{38456671 + i}", "score_given": 50 + i,
             "score_maximum": 100, "target": {"course_id": "31388494", "item_id": "100561235546"}}
            for i in range(n)]


def flow_table(flow: FlowStatus) -> Table:
    """Each destination's flow-control state, as the dashboard's badges show it."""
    table = Table(title="destinations", expand=False)
    for col, width in (("destination", 13), ("state", 10), ("parked", 6), ("rate/min", 9), ("why", 70)):
        table.add_column(col, no_wrap=True, overflow="ellipsis", max_width=width,
                         justify="right" if col in ("parked", "rate/min") else "left")
    for s in flow.all():
        rate = "unlimited" if s.rate_per_minute is None else f"{s.rate_per_minute:g}"
        table.add_row(s.name, f"[{FLOW_STYLE.get(s.state, 'white')}]{s.state}[/]", str(s.parked), rate,
                      escape(printable(s.reason)))
    return table


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=2.0)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise click.ClickException(f"{url} does not answer") from None
            time.sleep(0.1)


class Demo:
    def __init__(self, data_dir: Path, console: Console) -> None:
        self.data_dir = data_dir
        self.console = console
        self.procs = Processes(data_dir, fail=click.ClickException)
        self.redis: EmbeddedRedis | None = None

    def stop(self) -> None:
        self.procs.stop()
        if self.redis is not None:
            self.redis.stop()

    def table(self, store: Store, ids: list[str]) -> tuple[Table, bool]:
        records = store.ledger.load_many(ids)
        table = Table(title="grade events", expand=False)
        for col, width in (("destination", 13), ("learner", 14), ("state", 14), ("tries", 5), ("last outcome", 60)):
            table.add_column(col, no_wrap=True, overflow="ellipsis", min_width=min(width, 5), max_width=width)
        settled = True
        for rec in records:
            if rec is None:
                continue
            settled &= rec.state in ("succeeded", "superseded", "dead_lettered")
            err = rec.json_field("last_error") or rec.json_field("final_error") or {}
            note = rec.fields.get("reason") or (f"HTTP {err.get('status')} {err.get('error_class')}" if err else "")
            table.add_row(escape(printable(rec.destination)), escape(printable(rec.fields.get("learner_id", ""))),
                          f"[{STYLE.get(rec.state, 'white')}]{rec.state}[/]", str(rec.attempts),
                          escape(printable(note[:70])))  # vendor text: no terminal escapes, no rich markup
        return table, settled

    def watch(self, store: Store, flow: FlowStatus, ids: list[str], timeout: float) -> None:
        """Show the destinations and ``ids`` live until every event has settled; then count the states."""
        def view() -> tuple[Group, bool]:
            table, settled = self.table(store, ids)
            return Group(flow_table(flow), table), settled

        with Live(view()[0], console=self.console, refresh_per_second=4) as live:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                shown, settled = view()
                live.update(shown)
                if settled:
                    break
                time.sleep(0.25)
        counts: dict[str, int] = {}
        for rec in store.ledger.load_many(ids):
            if rec is not None:
                counts[rec.state] = counts.get(rec.state, 0) + 1
        self.console.print("[bold]settled:[/] " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))

    def outage_phase(self, store: Store, flow: FlowStatus, publisher: Publisher, ports: dict[str, int],
                     per_vendor: int, seconds: float) -> list[str]:
        """The vendor of one destination answers 503 to everything for ``seconds`` while grades arrive:
        its breaker opens, the events park, a probe closes it and they drain."""
        dest = DEST[OUTAGE_VENDOR]
        try:
            start_outage(f"http://127.0.0.1:{ports[OUTAGE_VENDOR]}", seconds)
        except RehearsalError as exc:
            self.console.print(f"[yellow]skipping the outage phase[/]: {escape(str(exc))}")
            return []
        self.console.print(f"\n[bold]outage[/]: {OUTAGE_VENDOR} answers 503 to everything for {seconds:g}s; "
                           f"watch {dest}'s breaker open, its events park (no attempt used) and drain after a probe")
        ids = publisher.publish_many(outage_events(3 * per_vendor))
        self.watch(store, flow, ids, timeout=seconds + 150)
        return ids

    def run(self, per_vendor: int, web_port: int, outage_seconds: float = 30.0) -> None:
        explicit = environ_value("GRADESYNC_REDIS_URL")
        url, self.redis = find_or_start(explicit, self.data_dir / "redis")
        where = "embedded redis-server" if self.redis else "Redis"
        self.console.print(f"[bold]Redis[/]: {where} at {url}")
        ports = {v: free_port() for v in VENDORS}
        dest_file = write_destinations(self.data_dir / "destinations.toml", destinations_toml(ports))
        token = secrets.token_urlsafe(24)
        key = dev_secret_key(self.data_dir)
        env = {**os.environ, **SECRET_ENV, "GRADESYNC_REDIS_URL": url, "GRADESYNC_DESTINATIONS": str(dest_file),
               "GRADESYNC_LOG_FORMAT": "json", "GRADESYNC_API_TOKEN": token, "GRADESYNC_SECRET_KEY": key}
        env.pop("GRADESYNC_BROKER_URL", None)
        jwks_url = f"http://127.0.0.1:{web_port}/.well-known/jwks.json"  # the platform fetches the tool's keys
        self.procs.spawn("sandbox", ["sandbox", *[a for v in VENDORS for a in (f"--{v}-port", str(ports[v]))],
                               "--lti-ags-jwks-url", jwks_url], env)
        self.procs.wait_log("sandbox", "thoughtindustries")
        for port in ports.values():  # listening, not just announced
            wait_http(f"http://127.0.0.1:{port}/_sandbox/state")
        worker = self.procs.start_worker("worker", env, concurrency=8, hostname="demo@%h")
        web = self.procs.spawn("web", ["serve", "--port", str(web_port)], env)
        try:  # it serves the JWKS the LTI platform reads the tool's key from
            wait_http(f"http://127.0.0.1:{web_port}/healthz")
        except click.ClickException:
            self.console.print("[yellow]the dashboard did not start: LTI AGS events will be refused[/]")
        self.console.print(f"[bold]sandbox[/]: ports {ports}; [bold]worker[/]: pid {worker.pid}")

        os.environ.update({**SECRET_ENV, "GRADESYNC_SECRET_KEY": key})
        reset_settings()
        settings = Settings(redis_url=url, destinations_file=dest_file)
        # a transient outage at Thought Industries: the first two requests fail, retries deliver
        SandboxClient(f"http://127.0.0.1:{ports['thoughtindustries']}").fault(status=503, times=2)
        publisher = Publisher(settings)
        events = sample_events(per_vendor, f"http://127.0.0.1:{ports['lti_ags']}")
        older = events.pop()  # the stale one: sent once its newer twin is applied, so it is superseded
        ids = publisher.publish_many(events)
        self.console.print(f"published {len(ids)} events with one publish_many() call")
        store = Store.connect(settings)
        newer = ids[-1]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            record = store.ledger.load(newer)
            if record is None or record.state not in RUNNABLE:
                break
            time.sleep(0.1)
        ids += publisher.publish_many([older])
        self.console.print("published an older grade for the same learner and item (it will be superseded)")
        flow = FlowStatus(store.redis, store.keys, settings.destinations())
        self.watch(store, flow, ids, timeout=120)
        if outage_seconds > 0:
            ids += self.outage_phase(store, flow, publisher, ports, per_vendor, outage_seconds)
        if web.poll() is None:
            self.console.print(f"[bold]dashboard[/]: http://127.0.0.1:{web_port}/  (API token: {token})")
        self.console.print(
            "Explore from another shell with the same settings:\n"
            f"  export GRADESYNC_REDIS_URL={url}\n  export GRADESYNC_DESTINATIONS={dest_file}\n"
            f"  export GRADESYNC_SECRET_KEY=$(cat {self.data_dir}/secret.key)\n"
            f"  .venv/bin/gradesync status {ids[0]}\n  .venv/bin/gradesync dlq list\n"
            "  .venv/bin/gradesync destinations\n"
            f"Logs: {self.data_dir}/*.log.  Ctrl-C stops everything."
        )


@click.command("demo")
@click.option("--events", "per_vendor", default=5, show_default=True, help="Ordinary events per vendor.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path(".gradesync"), show_default=True,
              help="Where the embedded Redis, logs and the demo destinations file live.")
@click.option("--web-port", default=8000, show_default=True, help="Port of the dashboard / HTTP API.")
@click.option("--exit-when-settled", is_flag=True, help="Stop once every event has settled (for scripts).")
@click.option("--outage-seconds", default=30.0, show_default=True, type=click.FloatRange(min=0),
              help="How long the vendor outage of the second phase lasts (0: no outage phase).")
def demo_cmd(per_vendor: int, data_dir: Path, web_port: int, exit_when_settled: bool, outage_seconds: float) -> None:
    """Run Redis (found or embedded), the vendor sandbox, a worker and the dashboard; publish sample events
    to all five vendors and show them flowing. Ctrl-C stops everything."""
    data_dir.mkdir(parents=True, exist_ok=True)
    console = Console(width=None if sys.stdout.isatty() else 120)
    demo = Demo(data_dir.resolve(), console)
    try:
        demo.run(per_vendor, web_port, outage_seconds)
        if not exit_when_settled:
            signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
            while True:
                time.sleep(1)
    except KeyboardInterrupt:
        console.print("\nstopping…")
    finally:
        demo.stop()
        console.print("stopped.")
