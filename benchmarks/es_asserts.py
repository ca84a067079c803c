"""What eventsourcing's W3 load spends on one ``assert``: ``python -m benchmarks.es_asserts``.

eventsourcing's ``project_aggregate`` asserts ``isinstance(event,
CanMutateProtocol)`` for every event it folds.  ``CanMutateProtocol`` is a
runtime-checkable ``Protocol``, and on Python 3.11 such an ``isinstance``
walks the protocol's attributes on every call.  This loads W3's 1,000-event
eventsourcing stream in this interpreter, then again in a child interpreter
started with ``-O`` (which skips asserts), and prints both medians: context
for W3's eventsourcing figure, not a workload of its own.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

from .common import scratch
from .domains import DogSchool, sqlite_env
from .w2_append import es_append

__all__ = ["main"]


def median_load(events: int, loads: int) -> float:
    """Milliseconds per ``repository.get`` of an ``events``-event stream (median)."""
    with scratch("es-asserts") as directory:
        app = DogSchool(env=sqlite_env(DogSchool=str(directory / "es.db")))
        try:
            dog_id = es_append(app, events)
            app.repository.get(dog_id)  # warm up
            times = []
            for _ in range(loads):
                start = time.perf_counter()
                app.repository.get(dog_id)
                times.append(time.perf_counter() - start)
        finally:
            app.close()
    return statistics.median(times) * 1e3


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.es_asserts")
    parser.add_argument("--loads", type=int, default=40, help="loads per interpreter")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    found = median_load(1_000, args.loads)
    if args.child:
        print(found)
        return 0
    child = subprocess.run(
        [sys.executable, "-O", "-m", "benchmarks.es_asserts", "--child", f"--loads={args.loads}"],
        check=True, capture_output=True, text=True,
    )
    optimized = float(child.stdout.strip())
    print(f"Python {sys.version.split()[0]}; eventsourcing, 1,000-event load, median of "
          f"{args.loads}:")
    print(f"  python    {found:8.2f} ms")
    print(f"  python -O {optimized:8.2f} ms  (asserts skipped: {optimized / found:.2f} x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
