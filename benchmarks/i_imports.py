"""I: start-up cost, ``import fes.edge`` beside ``import eventsourcing.application``.

Each import runs in a fresh interpreter (``python -c "import …"``), the
contenders taking turns, round after round.  Wall time is measured around
the child process; CPU time is the child's user and system time
(``resource.getrusage(RUSAGE_CHILDREN)``).  An empty interpreter (``python
-c pass``) takes turns too, and its medians are subtracted: what is left is
what the import itself costs.  ``fes --help`` is timed the same way, for
context, and so is loading the whole core (``import fes`` defines its
classes on first use, so ``import fes`` alone does not).

Every child may write bytecode (``PYTHONDONTWRITEBYTECODE`` is removed from
its environment), and the first round, which writes it, is not counted: an
editable install of fes would otherwise be compiled from source on every
run, while eventsourcing's installed ``.pyc`` files are read.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time

from .common import Config, Report

__all__ = ["run"]

EMPTY = "python (empty interpreter)"
IMPORTS = {
    EMPTY: "pass",
    "import fes": "import fes",
    "import fes.edge": "import fes.edge",
    "the whole core (import fes; fes.System, …)": "import fes\n"
    "fes.Aggregate, fes.System, fes.View, fes.on, fes.take, fes.Recorded",
    "import eventsourcing.application": "import eventsourcing.application",
    "fes --help": "import sys; sys.argv = ['fes', '--help']\n"
    "from fes.edge._cli import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass",
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


#: The children's environment: bytecode is written and read, as an installed package's is.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def one(code: str) -> tuple[float, float]:
    """Wall and CPU seconds of one fresh interpreter running ``code``."""
    cpu = _children_cpu()
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL, env=_ENV,
    )
    return time.perf_counter() - start, _children_cpu() - cpu


def run(config: Config) -> Report:
    rounds = config.repeat(15, 5)
    report = Report(
        "I", f"start-up: imports in a fresh interpreter ({rounds} rounds, taking turns)"
    )
    walls: dict[str, list[float]] = {name: [] for name in IMPORTS}
    cpus: dict[str, list[float]] = {name: [] for name in IMPORTS}
    names = list(IMPORTS)
    for number in range(rounds + 1):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu = one(IMPORTS[name])
            if number:  # the first round warms the file cache
                walls[name].append(wall)
                cpus[name].append(cpu)
    base_wall, base_cpu = statistics.median(walls[EMPTY]), statistics.median(cpus[EMPTY])
    wall_series = {
        name: report.add(f"{name}: wall clock, minus an empty interpreter", "ms",
                         higher_is_better=False)
        for name in names if name != EMPTY
    }
    cpu_series = {
        name: report.add(f"{name}: CPU, minus an empty interpreter", "ms",
                         higher_is_better=False)
        for name in names if name != EMPTY
    }
    empty = report.add(f"{EMPTY}: wall clock", "ms", higher_is_better=False)
    empty.values = [v * 1000 for v in walls[EMPTY]]
    for name in wall_series:
        wall_series[name].values = [(v - base_wall) * 1000 for v in walls[name]]
        cpu_series[name].values = [(v - base_cpu) * 1000 for v in cpus[name]]
    es = "import eventsourcing.application"
    wall_ratio = report.ratio(
        "wall: import fes.edge / import eventsourcing.application",
        wall_series["import fes.edge"].median / wall_series[es].median,
    )
    cpu_ratio = report.ratio(
        "CPU: import fes.edge / import eventsourcing.application",
        cpu_series["import fes.edge"].median / cpu_series[es].median,
    )
    report.ratio(
        "CPU: fes --help / import eventsourcing.application",
        cpu_series["fes --help"].median / cpu_series[es].median,
    )
    report.ratio(
        "CPU: the whole core / import eventsourcing.application",
        cpu_series["the whole core (import fes; fes.System, …)"].median / cpu_series[es].median,
    )
    report.check("CPU: import fes.edge / import eventsourcing.application", cpu_ratio, 1.0,
                 at_least=False)
    report.check("wall: import fes.edge / import eventsourcing.application", wall_ratio, 1.0,
                 at_least=False)
    report.notes.append(
        "each figure is a median over fresh interpreters minus the median of an empty one "
        f"({base_wall * 1000:.1f} ms wall, {base_cpu * 1000:.1f} ms CPU)"
    )
    return report
