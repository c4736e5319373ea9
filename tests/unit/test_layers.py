"""The import direction between the two packages, and between the layers inside :mod:`worker`, pinned.

``producers`` (the backend's import path) sits on top of ``worker``: nothing in ``worker`` imports
``producers``, and ``producers`` has no lazy loader or import-order workaround left. Flow control's
status view is an ops module (it formats for operators), so the flow package does not reach up into ops.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _importers(package: str, pattern: str) -> list[str]:
    found = re.compile(rf"^\s*(from|import) {pattern}\b", re.MULTILINE)
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / package).rglob("*.py") if found.search(p.read_text()))


def test_nothing_in_worker_imports_producers() -> None:
    assert _importers("worker", "producers") == []


def test_the_flow_package_does_not_import_ops() -> None:
    assert _importers("worker/flow", r"worker\.ops") == []


def test_producers_is_the_backends_import_path_without_a_lazy_loader() -> None:
    source = (ROOT / "producers" / "__init__.py").read_text()
    assert "__getattr__" not in source and "importlib" not in source
    code = ("from producers import publish, publish_many, GradeEvent, Publisher, LtiaasTarget; "
            "import producers; print(sorted(set(producers.__all__) - set(dir(producers))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["[]"]


def test_the_registry_does_not_import_ops() -> None:
    """The run-time destination registry is below the operator surfaces (the CLI, the API use it)."""
    assert _importers("worker/registry", r"worker\.ops") == []
