"""`gradesync serve`: the HTTP ingest, dead-letter API, dashboard, ``/metrics`` and ``/healthz`` in one
uvicorn process. Also :class:`ServerThread`, to run the same app inside another process (tests, demos)."""

from __future__ import annotations

import socket
import threading
import time

import click
import structlog
import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from worker.logs import configure
from worker.settings import ConfigError, get_settings

log = structlog.get_logger("gradesync.serve")


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="TCP port.")
def serve_cmd(host: str, port: int) -> None:
    """Serve the HTTP API, the dashboard, /metrics and /healthz.

    Requires GRADESYNC_API_TOKEN (the Bearer token of /v1 and the dashboard login) unless
    GRADESYNC_INSECURE_DEV=1.
    """
    from worker.ops.api import INSECURE_WARNING, create_app

    try:
        settings = get_settings()
    except ValidationError as exc:
        raise click.ClickException(f"settings: {exc}") from exc
    configure(settings.log_format, settings.log_level)
    try:
        app = create_app(settings)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if settings.api_token is None or not settings.api_token.get_secret_value():
        click.secho(f"\n  {INSECURE_WARNING}\n", fg="red", bold=True, err=True)
    log.info("serving", url=f"http://{host}:{port}", dashboard="/", api="/v1", metrics="/metrics",
             health="/healthz", openapi="/openapi.json")
    uvicorn.run(app, host=host, port=port, log_config=None, proxy_headers=False, server_header=False,
                timeout_graceful_shutdown=10)


class ServerThread:
    """Serve an ASGI app with uvicorn in a background thread of this process (port 0: a free one)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        config = uvicorn.Config(app, log_config=None, lifespan="on", server_header=False, proxy_headers=False)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]},
                                        name=f"ops-server-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the ops server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=15)
        self._socket.close()


if __name__ == "__main__":
    serve_cmd(prog_name="gradesync serve")
