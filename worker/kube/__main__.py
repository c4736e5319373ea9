"""``python -m worker.kube --cluster cluster.toml --destinations destinations.toml --out DIR``"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from worker.kube.plan import load_config, make_plan
from worker.kube.render import write
from worker.settings import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.kube", description=__doc__)
    parser.add_argument("--cluster", type=Path, required=True, help="the cluster file (see cluster.example.toml)")
    parser.add_argument("--destinations", type=Path, required=True, help="the destinations.toml the workers mount")
    parser.add_argument("--out", type=Path, required=True, help="directory to write the manifests to")
    args = parser.parse_args(argv)
    try:
        plan = make_plan(load_config(args.cluster), args.destinations.read_text(encoding="utf-8"),
                         source=str(args.destinations))
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in write(plan, args.out):
        print(path)
    for group in plan.groups:
        usable = ", ".join(f"{d}: {'unlimited' if u is None else u}" for d, u in group.usable.items())
        print(f"group {group.name}: replicas {group.min_replicas}..{group.max_replicas} "
              f"(processes each rate limit can use: {usable})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
