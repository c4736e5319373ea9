"""`python -m worker.kube` as an operator runs it: renders the example, prints the replica caps, and
refuses a bad cluster file with a message naming the problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker.kube", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, check=False)


def test_renders_the_committed_example(tmp_path: Path) -> None:
    out = _run("--cluster", str(KUBE / "cluster.example.toml"),
               "--destinations", str(ROOT / "deploy" / "destinations.example.toml"), "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "group thoughtindustries: replicas 0..1 (processes each rate limit can use: acme-ti: 1)" in out.stdout
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in (KUBE / "example").iterdir())
    for name in written:
        assert (tmp_path / name).read_text() == (KUBE / "example" / name).read_text(), name


def test_a_bad_cluster_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "cluster.toml"
    bad.write_text('image = "x"\n[groups.ti]\ndestinations = ["no-such-destination"]\n')
    out = _run("--cluster", str(bad), "--destinations", str(ROOT / "deploy" / "destinations.example.toml"),
               "--out", str(tmp_path / "out"))
    assert out.returncode == 1
    assert "group 'ti' names unknown destination 'no-such-destination'" in out.stderr
    assert not (tmp_path / "out").exists()
