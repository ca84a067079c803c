"""S: loading a very long stream with snapshots costs what a short stream costs.

A bank account (a state of bounded size: owner and balance) gets a stream of
100,050 events, appended in chunks of 10,000: fes's application has
``snapshot_every=100`` and so takes a snapshot at each chunk's end; for
eventsourcing (with snapshotting enabled) the benchmark takes one at each
chunk's end.  The last 50 events come after the last snapshot (at version
100,000), as they would between two snapshots.  A second account has 100
events and no snapshot.

Timed: loading the long stream (latest snapshot plus 50 events) and the
short one (100 events), by the same application; for context, also the long
stream folded from its first event (an application without snapshots).
The streams are built once per contender; the runs repeat the loads.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fes.edge import Application
from fes.edge.stores import open_database
from fes.examples.bank import AccountOpened, Deposited, accounts

from .common import ES, FES, Config, Report, interleaved, profile_call, rotated, scratch
from .domains import BANK, Bank, EsAccount, sqlite_env

__all__ = ["run"]

CHUNK = 10_000
TAIL = 50
EVERY = 100
SMALL = 100

Loads = dict[str, Callable[[], object]]


def _fes(directory: Path, big: int) -> tuple[Loads, Callable[[], None]]:
    """Build fes's streams; return the loads to time and how to close."""
    database = open_database(f"sqlite:///{directory}/fes.db")
    snapshotting = Application(BANK, store=database, snapshot_every=EVERY)
    plain = Application(BANK, store=database)
    long_id = snapshotting.new_id()
    version = 0
    while version < big:
        size = min(CHUNK, big - version)
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
    assert snapshotting.store.load_snapshot(short_id) is None
    account = snapshotting.get(accounts, long_id)
    assert account is not None and account.balance == big - 1 + TAIL

    def close() -> None:
        database.close()

    return {
        "long, snapshots": lambda: snapshotting.get(accounts, long_id),
        "short, no snapshot": lambda: snapshotting.get(accounts, short_id),
        "long, no snapshots": lambda: plain.get(accounts, long_id),
    }, close


def _es(directory: Path, big: int) -> tuple[Loads, Callable[[], None]]:
    path = str(directory / "es.db")
    snapshotting = Bank(env={**sqlite_env(Bank=path), "IS_SNAPSHOTTING_ENABLED": "y"})
    plain = Bank(env=sqlite_env(Bank=path))
    account = EsAccount("ann")
    while account.version < big:
        for _ in range(min(CHUNK, big - account.version)):
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
    long_id: uuid.UUID = account.id
    short_id: uuid.UUID = short.id
    assert snapshotting.repository.get(long_id).balance == big - 1 + TAIL

    def close() -> None:
        snapshotting.close()
        plain.close()

    return {
        "long, snapshots": lambda: snapshotting.repository.get(long_id),
        "short, no snapshot": lambda: snapshotting.repository.get(short_id),
        "long, no snapshots": lambda: plain.repository.get(long_id),
    }, close


def run(config: Config) -> Report:
    big = config.size(100_000, 10_000)
    loads = config.size(200, 50)
    runs = config.repeat(5, 3)
    report = Report(
        "S",
        f"load a {big + TAIL:,}-event stream with snapshots every {EVERY} "
        f"vs a {SMALL}-event stream (median of up to {loads} loads per run)",
    )
    builders = {FES: _fes, ES: _es}
    cases = ("long, snapshots", "short, no snapshot")
    series = {
        (name, case): report.add(f"{name}: {case}", "ms/load", higher_is_better=False)
        for name in builders
        for case in cases
    }
    full = {
        name: report.add(f"{name}: long, no snapshots (1 load)", "ms/load", higher_is_better=False)
        for name in builders
    }
    budget = 0.5 if config.quick else 2.0
    with scratch("s") as directory:
        built = {name: build(directory, big) for name, build in builders.items()}
        try:
            for number in range(runs):
                turns = {
                    (name, case): built[name][0][case]
                    for name in rotated(list(builders), number)
                    for case in cases
                }
                found = interleaved(turns, loads, budget=budget)
                for key, median in found.items():
                    series[key].values.append(median)
            for name in builders:
                # for context only, and slow: the long stream folded from its first event
                start = time.perf_counter()
                built[name][0]["long, no snapshots"]()
                full[name].values.append((time.perf_counter() - start) * 1000)
            if config.profile:
                report.profile = profile_call(
                    lambda: [built[FES][0]["long, snapshots"]() for _ in range(loads)]
                )
        finally:
            for _, close in built.values():
                close()
    for name in builders:
        long = series[(name, "long, snapshots")].median
        short = series[(name, "short, no snapshot")].median
        ratio = report.ratio(f"{name}: long with snapshots / short time", long / short)
        if name == FES:
            report.check("fes: long with snapshots / short time", ratio, 1.5, at_least=False)
    report.notes.append(
        f"streams built in chunks of {CHUNK:,} events; the long stream's last snapshot is at "
        f"version {big:,}, then {TAIL} events; 'about equal' is checked as a ratio <= 1.5"
    )
    return report
