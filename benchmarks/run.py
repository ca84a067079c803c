"""Run the benchmarks: ``python -m benchmarks.run [--quick] [--only W1,W3] [--runs 5]``.

Prints the environment (versions, the cost of one durable commit), then per
workload the median of several runs for each contender, the ratios of the
medians and whether fes meets its targets.  See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections.abc import Sequence
from types import ModuleType

from .common import Config, Report, environment, fsync_costs

__all__ = ["WORKLOADS", "main"]

#: Workload keys and the modules that run them, in the order they run.
WORKLOADS: dict[str, str] = {
    "W1": "benchmarks.w1_streams",
    "W2": "benchmarks.w2_append",
    "W3": "benchmarks.w3_load",
    "S": "benchmarks.s_snapshots",
    "W4": "benchmarks.w4_pipeline",
    "W5": "benchmarks.w5_postgres",
    "W6": "benchmarks.w6_spread",
    "W7": "benchmarks.w7_http",
    "I": "benchmarks.i_imports",
}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="fes beside eventsourcing 9.5.6 and raw sqlite3/psycopg (medians, ratios).",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--only", default="", help=f"comma-separated workloads ({','.join(WORKLOADS)})"
    )
    parser.add_argument("--runs", type=int, default=None, help="runs per workload")
    parser.add_argument(
        "--profile", action="store_true", help="also profile the fes side (cProfile)"
    )
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    chosen = [k.strip().upper() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in chosen if k not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    args.chosen = chosen or list(WORKLOADS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    config = Config(quick=args.quick, runs=args.runs, profile=args.profile)
    began = time.perf_counter()
    facts = environment()
    print("environment")
    for name, value in facts.items():
        print(f"    {name}: {value}")
    print(f"    mode: {'quick' if config.quick else 'full'}")
    print(flush=True)
    reports: list[Report] = []
    for key in args.chosen:
        module: ModuleType = importlib.import_module(WORKLOADS[key])
        start = time.perf_counter()
        report: Report = module.run(config)
        report.seconds = time.perf_counter() - start
        reports.append(report)
        print(report.render(), flush=True)
        print(flush=True)
    total = time.perf_counter() - began
    # the disk's flush cost drifts: show it again, with the load, beside the first look
    after = {name: f"{value:.3f}" for name, value in fsync_costs().items()}
    after["load average (1, 5, 15 min)"] = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print("environment at the end")
    for name, value in after.items():
        print(f"    {name}: {value}")
    print("targets")
    for report in reports:
        for check in report.checks:
            print(f"    {report.key}: {check.render()}")
    print(f"total time: {total:.0f} s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "environment": facts,
                    "environment at the end": after,
                    "mode": "quick" if config.quick else "full",
                    "seconds": total,
                    "workloads": [r.as_dict() for r in reports],
                },
                out,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
