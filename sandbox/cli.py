"""``gradesync sandbox``: the vendor simulators as a command (development and drills only).

The runtime CLI (:mod:`worker.cli`) loads this module only when the command is run, so a production
install, which has no ``sandbox`` package, still has every other command.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable
from typing import Any

import click

from sandbox import serve_all
from sandbox.rehearsal import rehearse
from worker.vendors import TABLE


def _port_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--<vendor>-port`` for each row of the vendor table (``-`` for ``_``; the ``_`` spelling too)."""
    for row in reversed(TABLE):
        dashed = row.name.replace("_", "-")
        flags = [f"--{dashed}-port", *([f"--{row.name}-port"] if dashed != row.name else [])]
        command = click.option(*flags, f"{row.name}_port", default=row.sandbox_port, show_default=True)(command)
    return command


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@_port_options
@click.option("--lti-ags-jwks-url", default=None, help="The tool's JWKS URL the LTI platform fetches keys from.")
@click.option("--lti-ags-jwks-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A JWK Set file of the tool's public keys (instead of a URL).")
@click.option("--rate-limit", "rate_limits", multiple=True, metavar="VENDOR=PER_MIN[:BURST]",
              help="Answer 429 + Retry-After beyond this rate (repeatable), e.g. thoughtindustries=600:100.")
@click.option("--outage", "outages", multiple=True, metavar="VENDOR=SECONDS[@DELAY]",
              help="Answer 503 to everything for SECONDS from DELAY seconds on (repeatable), e.g. ltiaas=60@30.")
def sandbox_cmd(host: str, lti_ags_jwks_url: str | None, lti_ags_jwks_file: str | None,
                rate_limits: tuple[str, ...], outages: tuple[str, ...], **ports: int) -> None:
    """Serve simulators of the vendor APIs (one port each) until Ctrl-C."""
    running = serve_all(host, {row.name: ports[f"{row.name}_port"] for row in TABLE})
    platform = running["lti_ags"].app
    if lti_ags_jwks_file:
        with open(lti_ags_jwks_file, encoding="utf-8") as f:
            platform.configure({"jwks": json.load(f)})
    if lti_ags_jwks_url:
        platform.configure({"jwks_url": lti_ags_jwks_url})
    for vendor, r in running.items():
        click.echo(f"{vendor:<18} {r.url}")
    try:
        for line in rehearse({v: r.url for v, r in running.items()}, rate_limits, outages):
            click.echo(line)
    except ValueError as exc:
        for r in running.values():
            r.stop()
        raise click.BadParameter(str(exc)) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        for r in running.values():
            r.stop()
