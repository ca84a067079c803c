"""What every workload shares: settings, timing, scratch directories, reports.

The machine is noisy, so each workload runs its contenders side by side,
several times, in a rotating order, and reports medians and ratios of
medians rather than single times.
"""

from __future__ import annotations

import contextlib
import cProfile
import importlib.metadata
import io
import os
import platform
import pstats
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "ES",
    "FES",
    "RAW",
    "Check",
    "Config",
    "Report",
    "Series",
    "environment",
    "fsync_costs",
    "interleaved",
    "interleaved_cpu",
    "profile_call",
    "rotated",
    "scratch",
]

FES = "fes"
ES = "eventsourcing"
RAW = "raw sqlite3"

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Config:
    """How big and how often: ``quick`` shrinks every workload for a smoke run."""

    quick: bool = False
    runs: int | None = None
    profile: bool = False

    def size(self, full: int, quick: int) -> int:
        """The workload size for this mode."""
        return quick if self.quick else full

    def repeat(self, full: int, quick: int) -> int:
        """How many runs: ``--runs`` if given, else the workload's default for the mode."""
        if self.runs is not None:
            return self.runs
        return quick if self.quick else full


@dataclass
class Series:
    """One contender's measurements, one value per run."""

    label: str
    unit: str
    values: list[float] = field(default_factory=list)
    higher_is_better: bool = True

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")


@dataclass(frozen=True)
class Check:
    """A ratio compared with its target (``at_least``: the ratio must reach it)."""

    name: str
    value: float
    target: float
    at_least: bool

    @property
    def met(self) -> bool:
        return self.value >= self.target if self.at_least else self.value <= self.target

    def render(self) -> str:
        sign = ">=" if self.at_least else "<="
        verdict = "met" if self.met else "MISSED"
        return f"{self.name} = {self.value:.2f} (target {sign} {self.target:g}: {verdict})"


@dataclass
class Report:
    """A workload's outcome: series, ratios, targets and notes."""

    key: str
    title: str
    series: list[Series] = field(default_factory=list)
    ratios: list[tuple[str, float]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profile: str = ""
    seconds: float = 0.0

    def add(self, label: str, unit: str, *, higher_is_better: bool = True) -> Series:
        series = Series(label, unit, higher_is_better=higher_is_better)
        self.series.append(series)
        return series

    def get(self, label: str) -> Series:
        for series in self.series:
            if series.label == label:
                return series
        raise KeyError(label)

    def ratio(self, name: str, value: float) -> float:
        self.ratios.append((name, value))
        return value

    def check(self, name: str, value: float, target: float, *, at_least: bool) -> Check:
        found = Check(name, value, target, at_least)
        self.checks.append(found)
        return found

    def render(self) -> str:
        lines = [f"{self.key}  {self.title}"]
        width = max((len(s.label) for s in self.series), default=10)
        for s in self.series:
            runs = ", ".join(_number(v) for v in s.values)
            lines.append(
                f"    {s.label:<{width}}  {_number(s.median):>10} {s.unit:<10}  runs: [{runs}]"
            )
        for name, value in self.ratios:
            lines.append(f"    {name} = {value:.2f}")
        lines.extend(f"    {c.render()}" for c in self.checks)
        lines.extend(f"    note: {n}" for n in self.notes)
        lines.append(f"    ({self.seconds:.0f} s)")
        if self.profile:
            lines.append(self.profile)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "series": [
                {"label": s.label, "unit": s.unit, "median": s.median, "values": s.values}
                for s in self.series
            ],
            "ratios": dict(self.ratios),
            "checks": [
                {"name": c.name, "value": c.value, "target": c.target, "met": c.met}
                for c in self.checks
            ],
            "notes": self.notes,
            "seconds": self.seconds,
        }


def _number(value: float) -> str:
    if value != value:
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def interleaved(
    loads: dict[K, Callable[[], object]],
    count: int,
    *,
    budget: float,
    warm_up: int = 3,
    least: int = 10,
) -> dict[K, float]:
    """Median milliseconds (wall clock) per call of each of ``loads``, the calls taking turns.

    See :func:`interleaved_cpu`, which also measures CPU time.
    """
    found = interleaved_cpu(loads, count, budget=budget, warm_up=warm_up, least=least)
    return {name: wall for name, (wall, _cpu) in found.items()}


def interleaved_cpu(
    loads: dict[K, Callable[[], object]],
    count: int,
    *,
    budget: float,
    warm_up: int = 3,
    least: int = 10,
) -> dict[K, tuple[float, float]]:
    """Median milliseconds per call of each of ``loads``: (wall clock, CPU), taking turns.

    Round after round, each load is called once (in the given order), so a
    burst of load on the machine falls on all of them alike.  A load leaves
    the rounds after ``count`` calls, or once it has spent ``budget`` seconds
    with at least ``least`` calls (a slow contender stops early).  CPU time is
    ``time.process_time`` (this process, all its threads).
    """
    for load in loads.values():
        for _ in range(warm_up):
            load()
    times: dict[K, list[float]] = {name: [] for name in loads}
    cpu: dict[K, list[float]] = {name: [] for name in loads}
    spent = dict.fromkeys(loads, 0.0)
    active = list(loads)
    clock, cpu_clock = time.perf_counter, time.process_time
    while active:
        for name in list(active):
            start, start_cpu = clock(), cpu_clock()
            loads[name]()
            used = cpu_clock() - start_cpu
            elapsed = clock() - start
            times[name].append(elapsed)
            cpu[name].append(used)
            spent[name] += elapsed
            done = len(times[name])
            if done >= count or (spent[name] > budget and done >= least):
                active.remove(name)
    return {
        name: (statistics.median(found) * 1000, statistics.median(cpu[name]) * 1000)
        for name, found in times.items()
    }


def rotated(items: Sequence[T], run: int) -> list[T]:
    """``items`` rotated by ``run``: each contender takes each slot in turn across runs."""
    shift = run % len(items)
    return [*items[shift:], *items[:shift]]


@contextlib.contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A fresh temporary directory, deleted afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"fes-bench-{prefix}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def profile_call(fn: Callable[[], object], *, top: int = 18) -> str:
    """Run ``fn`` under cProfile; the ``top`` functions by own time, as text."""
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        fn()
    finally:
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    text = out.getvalue()
    start = text.find("   ncalls")
    body = text[start:] if start >= 0 else text
    return "    profile of the fes side (by own time):\n" + "\n".join(
        "      " + line for line in body.rstrip().splitlines()
    )


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def fsync_costs(samples: int = 100) -> dict[str, float]:
    """Milliseconds per ``os.fsync`` of a 4 KiB write, and per tiny SQLite commit."""
    found: dict[str, float] = {}
    with scratch("fsync") as directory:
        fd = os.open(directory / "probe", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            times = []
            for _ in range(samples):
                os.write(fd, b"x" * 4096)
                start = time.perf_counter()
                os.fsync(fd)
                times.append(time.perf_counter() - start)
            found["os.fsync of 4 KiB (ms)"] = _median_ms(times)
        finally:
            os.close(fd)
        for mode in ("FULL", "NORMAL"):
            conn = sqlite3.connect(directory / f"{mode}.db", isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {mode}")
            conn.execute("CREATE TABLE t (a INTEGER PRIMARY KEY AUTOINCREMENT, b BLOB)")
            times = []
            for _ in range(samples):
                start = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO t (b) VALUES (?)", (b"{}",))
                conn.execute("COMMIT")
                times.append(time.perf_counter() - start)
            conn.close()
            found[f"SQLite WAL commit, synchronous={mode} (ms)"] = _median_ms(times)
    return found


def environment() -> dict[str, str]:
    """The facts a reader needs to compare figures across machines."""
    facts = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
        "sqlite": sqlite3.sqlite_version,
        "fes": _version("fes-events"),
        "eventsourcing": _version("eventsourcing"),
        "orjson": _version("orjson"),
        "psycopg": _version("psycopg"),
        "scratch directory": tempfile.gettempdir(),
        "load average (1, 5, 15 min)": ", ".join(f"{v:.1f}" for v in os.getloadavg()),
    }
    facts.update({name: f"{value:.3f}" for name, value in fsync_costs().items()})
    return facts
