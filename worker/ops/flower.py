"""`gradesync flower`: Flower with its ``/metrics`` behind the same authentication as the rest of it.

Flower 2.x protects its pages and API with ``@tornado.web.authenticated`` (``--basic-auth`` or OAuth
``--auth``), but its ``Metrics`` handler (``flower/views/monitor.py``) has no such decorator, so with
basic auth on, ``/metrics`` — worker names, task names and rates — is still public (its docs say
``/metrics`` and ``/healthcheck`` skip auth). No Flower option changes that. This command swaps that one
route of Flower's URL table for :class:`AuthenticatedMetrics` (the same handler, authenticated) and then
runs Flower exactly as ``celery -A worker.celery_app flower`` would, with every Flower option passed through.
``/healthcheck`` stays public: it answers only "OK".

It also refuses to start without authentication (``--basic-auth``/``FLOWER_BASIC_AUTH`` or
``--auth``/``FLOWER_AUTH``) unless ``GRADESYNC_INSECURE_DEV=1``. Prometheus scrapes with basic auth
(``deploy/prometheus.yml``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import click

from worker.settings import get_settings

AUTH_OPTIONS = ("--basic-auth", "--basic_auth", "--auth")
AUTH_ENV = ("FLOWER_BASIC_AUTH", "FLOWER_AUTH")


def has_auth(args: Sequence[str], environ: dict[str, str] | os._Environ[str]) -> bool:
    given = any(a.split("=", 1)[0] in AUTH_OPTIONS for a in args)
    return given or any(environ.get(name, "").strip() for name in AUTH_ENV)


def protect_metrics() -> type[Any]:
    """Replace Flower's ``/metrics`` handler by an authenticated one (idempotent); returns it."""
    import tornado.web
    from flower import urls
    from flower.views.monitor import Metrics

    class AuthenticatedMetrics(Metrics):  # type: ignore[misc]
        """Flower's metrics, for authenticated clients only (401 + Basic challenge otherwise)."""

        @tornado.web.authenticated
        async def get(self) -> None:
            await super().get()

    for i, handler in enumerate(urls.handlers):
        if isinstance(handler, tuple) and handler[0] == r"/metrics":
            if getattr(handler[1], "__name__", "") != "AuthenticatedMetrics":
                urls.handlers[i] = (r"/metrics", AuthenticatedMetrics, *handler[2:])
            return AuthenticatedMetrics
    raise RuntimeError("Flower has no /metrics route to protect: check the Flower version")


@click.command("flower", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                            "help_option_names": []})
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower_cmd(flower_args: tuple[str, ...]) -> None:
    """Run Flower (all Flower options pass through) with /metrics authenticated too.

    Requires --basic-auth=user:password (or FLOWER_BASIC_AUTH) or OAuth --auth, unless
    GRADESYNC_INSECURE_DEV=1.
    """
    if not has_auth(flower_args, os.environ) and not get_settings().insecure_dev:
        raise click.ClickException(
            "Flower needs authentication: pass --basic-auth=user:password (or set FLOWER_BASIC_AUTH), or OAuth "
            "--auth; set GRADESYNC_INSECURE_DEV=1 to run it open on a development machine")
    protect_metrics()
    from worker.celery_app import app

    app.start(["flower", *flower_args])
