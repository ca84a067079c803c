"""S: loading a very long stream with snapshots costs what a short stream costs.

A bank account (a state of bounded size: owner and balance) gets a stream of
100,050 events, appended 100 events per commit: fes's application has
``snapshot_every=100`` and so takes a snapshot after every commit (1,000 of
them); eventsourcing (with snapshotting enabled) takes one after every save
(``take_snapshot``).  The last 50 events come after the last snapshot (at
version 100,000), as they would between two snapshots.  A second account has
100 events and no snapshot.

Timed: loading the long stream (latest snapshot plus 50 events) and the
short one (100 events), **in a fresh process** (one per run) that opens the
files with new applications, as a reader deployed beside the writer would:
nothing the writer's process resolved or cached helps it.  For context, also
the long stream folded from its first event (an application without
snapshots, in the building process).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fes.edge import Application
from fes.edge.stores import open_database
from fes.examples.bank import AccountOpened, Deposited, accounts

from .common import ES, FES, Config, Report, interleaved_cpu, profile_call, rotated, scratch
from .domains import BANK, Bank, EsAccount, sqlite_env

__all__ = ["run"]

TAIL = 50
EVERY = 100
SMALL = 100

Loads = dict[str, Callable[[], object]]


def _fes_build(directory: Path, big: int) -> dict[str, str]:
    """Build fes's streams, one commit per snapshot interval; return their ids."""
    database = open_database(f"sqlite:///{directory}/fes.db")
    snapshotting = Application(BANK, store=database, snapshot_every=EVERY)
    plain = Application(BANK, store=database)
    long_id = snapshotting.new_id()
    version = 0
    while version < big:
        size = min(EVERY, big - version)
        events: list[Any] = [Deposited(1) for _ in range(size)]
        if version == 0:
            events[0] = AccountOpened("ann")
        batch = snapshotting.batch()
        batch.emit(accounts, long_id, events)
        snapshotting.commit(batch)
        version += size
    batch = snapshotting.batch()
    batch.emit(accounts, long_id, [Deposited(1) for _ in range(TAIL)])
    snapshotting.commit(batch)
    short_id = plain.new_id()
    batch = plain.batch()
    opened: list[Any] = [AccountOpened("bob")]
    batch.emit(accounts, short_id, opened + [Deposited(1) for _ in range(SMALL - 1)])
    plain.commit(batch)

    snapshot = snapshotting.store.load_snapshot(long_id)
    assert snapshot is not None and snapshot.version == big, snapshot
    earlier = snapshotting.store.load_snapshot(long_id, to_version=big - 1)
    assert earlier is not None and earlier.version == big - EVERY, earlier
    assert snapshotting.store.load_snapshot(short_id) is None
    database.close()
    return {"long": long_id, "short": short_id}


def _fes(directory: Path, ids: dict[str, str]) -> tuple[Loads, Callable[[], None]]:
    """Open fes's streams with new applications; return the loads and how to close."""
    database = open_database(f"sqlite:///{directory}/fes.db")
    snapshotting = Application(BANK, store=database, snapshot_every=EVERY)
    plain = Application(BANK, store=database)
    long_id, short_id = ids["long"], ids["short"]

    def close() -> None:
        database.close()

    return {
        "long, snapshots": lambda: snapshotting.get(accounts, long_id),
        "short, no snapshot": lambda: snapshotting.get(accounts, short_id),
        "long, no snapshots": lambda: plain.get(accounts, long_id),
    }, close


def _es_build(directory: Path, big: int) -> dict[str, str]:
    """Build eventsourcing's streams, a snapshot after every save of 100; return their ids."""
    path = str(directory / "es.db")
    snapshotting = Bank(env={**sqlite_env(Bank=path), "IS_SNAPSHOTTING_ENABLED": "y"})
    account = EsAccount("ann")
    while account.version < big:
        for _ in range(min(EVERY - account.version % EVERY, big - account.version)):
            account.deposit(1)
        snapshotting.save(account)
        snapshotting.take_snapshot(account.id)
    for _ in range(TAIL):
        account.deposit(1)
    snapshotting.save(account)
    short = EsAccount("bob")
    for _ in range(SMALL - 1):
        short.deposit(1)
    snapshotting.save(short)
    assert snapshotting.repository.get(account.id).balance == big - 1 + TAIL
    snapshotting.close()
    return {"long": str(account.id), "short": str(short.id)}


def _es(directory: Path, ids: dict[str, str]) -> tuple[Loads, Callable[[], None]]:
    path = str(directory / "es.db")
    snapshotting = Bank(env={**sqlite_env(Bank=path), "IS_SNAPSHOTTING_ENABLED": "y"})
    plain = Bank(env=sqlite_env(Bank=path))
    long_id, short_id = uuid.UUID(ids["long"]), uuid.UUID(ids["short"])

    def close() -> None:
        snapshotting.close()
        plain.close()

    return {
        "long, snapshots": lambda: snapshotting.repository.get(long_id),
        "short, no snapshot": lambda: snapshotting.repository.get(short_id),
        "long, no snapshots": lambda: plain.repository.get(long_id),
    }, close


OPENERS: dict[str, Callable[[Path, dict[str, str]], tuple[Loads, Callable[[], None]]]] = {
    FES: _fes,
    ES: _es,
}
CASES = ("long, snapshots", "short, no snapshot")


def fresh_loads(directory: Path, loads: int, budget: float, number: int) -> dict[str, Any]:
    """Time the loads in a new interpreter; medians in ms, (wall, CPU) per contender and case."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.s_snapshots", str(directory), str(loads),
         str(budget), str(number)],
        check=True, capture_output=True, text=True,
    )
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def _child(directory: Path, loads: int, budget: float, number: int) -> None:
    """In the fresh process: open every contender's files, take turns loading, print JSON."""
    ids = json.loads((directory / "ids.json").read_text())
    opened = {name: OPENERS[name](directory, ids[name]) for name in OPENERS}
    try:
        turns = {
            f"{name}: {case}": opened[name][0][case]
            for name in rotated(list(OPENERS), number)
            for case in CASES
        }
        found = interleaved_cpu(turns, loads, budget=budget)
    finally:
        for _, close in opened.values():
            close()
    print(json.dumps(found))


def run(config: Config) -> Report:
    big = config.size(100_000, 10_000)
    loads = config.size(200, 50)
    runs = config.repeat(5, 3)
    report = Report(
        "S",
        f"load a {big + TAIL:,}-event stream with snapshots every {EVERY} "
        f"vs a {SMALL}-event stream, in a fresh process (median of up to {loads} loads per run)",
    )
    builders = {FES: _fes_build, ES: _es_build}
    series = {
        (name, case): report.add(f"{name}: {case} (wall clock)", "ms/load", higher_is_better=False)
        for name in builders
        for case in CASES
    }
    cpu = {
        (name, case): report.add(
            f"{name}: {case} (CPU, process_time)", "ms/load", higher_is_better=False
        )
        for name in builders
        for case in CASES
    }
    full = {
        name: report.add(f"{name}: long, no snapshots (1 load)", "ms/load", higher_is_better=False)
        for name in builders
    }
    budget = 0.5 if config.quick else 2.0
    with scratch("s") as directory:
        started = time.perf_counter()
        ids = {name: build(directory, big) for name, build in builders.items()}
        built_in = time.perf_counter() - started
        (directory / "ids.json").write_text(json.dumps(ids))
        for number in range(runs):
            found = fresh_loads(directory, loads, budget, number)
            for name in builders:
                for case in CASES:
                    wall, used = found[f"{name}: {case}"]
                    series[(name, case)].values.append(wall)
                    cpu[(name, case)].values.append(used)
        opened = {name: OPENERS[name](directory, ids[name]) for name in OPENERS}
        try:
            for name in builders:
                # for context only, and slow: the long stream folded from its first event
                start = time.perf_counter()
                opened[name][0]["long, no snapshots"]()
                full[name].values.append((time.perf_counter() - start) * 1000)
            if config.profile:
                report.profile = profile_call(
                    lambda: [opened[FES][0]["long, snapshots"]() for _ in range(loads)]
                )
        finally:
            for _, close in opened.values():
                close()
    for name in builders:
        long = series[(name, "long, snapshots")].median
        short = series[(name, "short, no snapshot")].median
        ratio = report.ratio(f"{name}: long with snapshots / short, wall clock", long / short)
        cpu_ratio = report.ratio(
            f"{name}: long with snapshots / short, CPU",
            cpu[(name, "long, snapshots")].median / cpu[(name, "short, no snapshot")].median,
        )
        if name == FES:
            report.check("fes: long with snapshots / short, wall clock", ratio, 1.5, at_least=False)
            report.check("fes: long with snapshots / short, CPU", cpu_ratio, 1.5, at_least=False)
    report.notes.append(
        f"streams built {EVERY} events per commit, a snapshot after each ({big // EVERY:,} "
        f"per contender, {built_in:.0f} s for both); the last at version {big:,}, then {TAIL} "
        "events; loads timed in a fresh process per run; 'about equal' is a ratio <= 1.5"
    )
    return report


if __name__ == "__main__":
    _child(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))
