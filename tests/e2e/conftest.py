"""Fixtures of the end-to-end tests: the integration harness (Redis, sandboxes, worker processes), the ops
server on a free port, and a real headless Chromium (Debian's, installed by scripts/ensure-chromium)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright
from pydantic import SecretStr

from tests.integration.conftest import Cluster, cluster, sandbox, vendors  # noqa: F401 - fixtures
from worker.ops.api import create_app
from worker.ops.serve import ServerThread

ROOT = Path(__file__).resolve().parents[2]
E2E_TOKEN = "e2e-dashboard-token-9d2f4b6c8e1a3f5d"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _installed_chromium() -> str | None:
    for candidate in (os.environ.get("GRADESYNC_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
                      shutil.which("chromium")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium; installed on demand when missing. In CI a missing browser fails the tests."""
    path = _installed_chromium()
    if path is None:
        result = subprocess.run(["bash", str(ROOT / "scripts" / "ensure-chromium")], capture_output=True,
                                text=True, timeout=900, check=False)
        path = _installed_chromium() if result.returncode == 0 else None
        if path is None:
            message = f"no Chromium and scripts/ensure-chromium could not install it:\n{result.stderr[-2000:]}"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
    return path


@pytest.fixture
def ops_server(cluster: Cluster) -> Iterator[ServerThread]:  # noqa: F811 - the fixture imported above
    settings = cluster.settings.model_copy(update={"api_token": SecretStr(E2E_TOKEN)})
    server = ServerThread(create_app(settings)).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser(chromium_path: str) -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield b
        b.close()
