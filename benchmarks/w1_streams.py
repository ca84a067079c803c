"""W1: many new streams, one command and one commit each, in an SQLite file.

Each stream is a new dog: fes runs ``execute(dogs, app.new_id(), register,
"Fido")`` (a stream id it minted and nothing used: decide on the initial
state, append version 1, with no read); eventsourcing saves a new ``Dog``;
raw sqlite3 mints its uuid and inserts one row in ``BEGIN IMMEDIATE …
COMMIT``, with no read either: the unique (stream, version) refuses a
version 1 for a stream that has events, for raw sqlite3 as for fes.  Every
commit is durable (WAL, ``synchronous=FULL``), so the rate is bound by the
disk's flush; the ratios show what each library adds to it.  Context rows
(durable, and CPU only) add to the raw floor what any library must do with
this domain: call ``register`` and the ``registered`` projector by hand.
Another runs fes on ``memory://`` after 1,000 and after 100,000 streams: its
cost per command must not grow with the streams held.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Protocol

import orjson

from fes.edge import Application
from fes.examples.dogs import dogs, register, registered

from .common import ES, FES, RAW, Config, Report, profile_call, rotated, scratch
from .domains import SCHOOL, DogSchool, EsDog, sqlite_env
from .raw import RawStore, connect, new_stream_id, now_micros, same_schema

__all__ = ["run"]

def pragmas(conn: sqlite3.Connection) -> str:
    """The journal mode and synchronous setting a connection really uses."""
    journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    sync = conn.execute("PRAGMA synchronous").fetchone()[0]
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    return f"journal_mode={journal}, synchronous={sync} ({names.get(sync, '?')})"


def es_pragmas(app: DogSchool) -> str:
    """The pragmas of a connection from eventsourcing's own pool."""
    datastore = app.recorder.datastore  # type: ignore[attr-defined]
    with datastore.get_connection(commit=False) as conn:
        return pragmas(conn._sqlite_conn)


class Contender(Protocol):
    """Creates streams in chunks, so that the contenders can take turns."""

    settings: str

    def create(self, n: int) -> None: ...

    def close(self) -> None: ...


class FesStreams:
    def __init__(self, directory: Path, synchronous: str = "FULL") -> None:
        url = f"sqlite:///{directory}/fes.db?synchronous={synchronous}"
        self.app = Application(SCHOOL, store=url)
        self.settings = pragmas(self.app.database.connection())  # type: ignore[attr-defined]

    def create(self, n: int) -> None:
        execute, new_id = self.app.execute, self.app.new_id
        for _ in range(n):
            execute(dogs, new_id(), register, "Fido")

    def close(self) -> None:
        self.app.close()


class EsStreams:
    def __init__(self, directory: Path) -> None:
        self.app = DogSchool(env=sqlite_env(DogSchool=str(directory / "es.db")))
        self.settings = es_pragmas(self.app)

    def create(self, n: int) -> None:
        save = self.app.save
        for _ in range(n):
            save(EsDog("Fido"))

    def close(self) -> None:
        self.app.close()


class RawStreams:
    """The floor: a minted uuid, its row inserted as version 1 with no read."""

    #: Each contender writes a file of its own.
    file = "raw.db"

    def __init__(self, directory: Path, synchronous: str = "FULL") -> None:
        self.conn = connect(directory / self.file, synchronous)
        self.store = RawStore(self.conn, "school").create()
        self.settings = pragmas(self.conn)

    def create(self, n: int) -> None:
        store, dumps, mint = self.store, orjson.dumps, new_stream_id
        for _ in range(n):
            stream = mint()
            payload = dumps({"name": "Fido"})
            store.append([(stream, 1, "dog.Registered", payload, now_micros(), None)])

    def close(self) -> None:
        self.conn.close()


class RawDomainStreams(RawStreams):
    """The floor plus the domain's own functions, called by hand (context, no target).

    ``register`` decides on no state, ``registered`` folds its event into the
    ``Dog``: what any library spends on this domain at the least, with no
    dispatch, checks or envelope.
    """

    file = "hand.db"

    def create(self, n: int) -> None:
        store, dumps, mint = self.store, orjson.dumps, new_stream_id
        for _ in range(n):
            stream = mint()
            (event,) = register(None, "Fido")
            registered(None, event)
            payload = dumps({"name": event.name})
            store.append([(stream, 1, "dog.Registered", payload, now_micros(), None)])


class MemoryStreams:
    """fes on ``memory://``, with ``held`` streams created first (not timed)."""

    settings = "memory://"

    def __init__(self, held: int) -> None:
        self.app = Application(SCHOOL, store="memory://")
        self.create(held)

    def create(self, n: int) -> None:
        execute, new_id = self.app.execute, self.app.new_id
        for _ in range(n):
            execute(dogs, new_id(), register, "Fido")

    def close(self) -> None:
        self.app.close()


#: What any library must do durably with this domain, at the least (context, no target).
RAW_DOMAIN_DURABLE = f"{RAW} calling register() and registered() by hand"

FACTORIES: dict[str, Callable[[Path], Contender]] = {
    FES: FesStreams,
    ES: EsStreams,
    RAW: RawStreams,
    RAW_DOMAIN_DURABLE: RawDomainStreams,
}


RAW_DOMAIN = f"{RAW} calling register() and registered() by hand, synchronous=NORMAL"

#: Without the flush (not durable against power loss): what each side costs in CPU.
CPU_ONLY: dict[str, Callable[[Path], Contender]] = {
    f"{FES}, synchronous=NORMAL": partial(FesStreams, synchronous="NORMAL"),
    f"{RAW}, synchronous=NORMAL": partial(RawStreams, synchronous="NORMAL"),
    RAW_DOMAIN: partial(RawDomainStreams, synchronous="NORMAL"),
}

#: The memory store after this many streams: its cost per command must stay flat.
MEMORY_HELD = (1_000, 100_000)


def one_run(
    directory: Path,
    n: int,
    chunk: int,
    number: int,
    factories: dict[str, Callable[[Path], Contender]] = FACTORIES,
) -> dict[str, tuple[float, float, str]]:
    """Each contender creates ``n`` streams, taking turns ``chunk`` streams at a time.

    Turns spread the disk's slow and fast moments over all contenders alike.
    Returns each contender's wall seconds, CPU seconds (``time.process_time``:
    this process, all its threads) and settings.
    """
    order = rotated(list(factories), number)
    contenders = {name: factories[name](directory) for name in order}
    spent = dict.fromkeys(order, 0.0)
    cpu = dict.fromkeys(order, 0.0)
    try:
        done = 0
        while done < n:
            size = min(chunk, n - done)
            for name in order:
                start, start_cpu = time.perf_counter(), time.process_time()
                contenders[name].create(size)
                cpu[name] += time.process_time() - start_cpu
                spent[name] += time.perf_counter() - start
            done += size
            order = order[1:] + order[:1]
    finally:
        for contender in contenders.values():
            contender.close()
    return {name: (spent[name], cpu[name], contenders[name].settings) for name in spent}


def schema_note() -> str:
    with scratch("schema") as directory:
        Application(SCHOOL, store=f"sqlite:///{directory}/fes.db").close()
        conn = connect(directory / "raw.db")
        RawStore(conn, "school").create()
        conn.close()
        return same_schema(directory / "fes.db", directory / "raw.db", "school")


def memory_run(config: Config, report: Report) -> None:
    """fes on memory:// holding few and many streams, taking turns: CPU per command."""
    held = (1_000, 20_000) if config.quick else MEMORY_HELD
    n, chunk = config.size(5_000, 1_000), 250
    series = {
        count: report.add(
            f"fes, memory://, after {count:,} streams: CPU per command (process_time)",
            "us", higher_is_better=False,
        )
        for count in held
    }
    for number in range(config.repeat(3, 1)):
        contenders = {count: MemoryStreams(count) for count in held}
        cpu = dict.fromkeys(held, 0.0)
        order = rotated(list(held), number)
        try:
            for _ in range(0, n, chunk):
                for count in order:
                    start = time.process_time()
                    contenders[count].create(chunk)
                    cpu[count] += time.process_time() - start
                order = order[1:] + order[:1]
        finally:
            for contender in contenders.values():
                contender.close()
        for count in held:
            series[count].values.append(cpu[count] / n * 1e6)
    few, many = held
    report.check(
        f"memory://: CPU per command after {many:,} / after {few:,} streams",
        series[many].median / series[few].median, 1.25, at_least=False,
    )
    report.notes.append(
        f"memory:// rows: {n:,} more commands on an application already holding that many "
        f"streams, the two taking turns {chunk} commands at a time; flat means the ratio "
        "stays within the runs' noise (the check allows 1.25)"
    )


def run(config: Config) -> Report:
    n = config.size(10_000, 300)
    # five runs: a run's durable rates swing by up to a sixth with the disk's
    # moods (raw's three last ones: 4,135, 4,673 and 4,848 streams/s), and
    # fes sits within 2-5 % of the floor that calls the domain by hand
    runs = config.repeat(5, 1)
    chunk = 250 if n >= 2_000 else max(n // 4, 1)
    report = Report("W1", f"{n:,} new streams, one command and one commit each (SQLite file)")
    series = {name: report.add(f"{name}: wall-clock rate", "streams/s") for name in FACTORIES}
    cpu_full = {
        name: report.add(f"{name}: CPU per command (process_time)", "us", higher_is_better=False)
        for name in FACTORIES
    }
    settings: dict[str, str] = {}
    for number in range(runs):
        with scratch("w1") as directory:
            found = one_run(directory, n, chunk, number)
            for name, (seconds, cpu_seconds, settings[name]) in found.items():
                series[name].values.append(n / seconds)
                cpu_full[name].values.append(cpu_seconds / n * 1e6)
    rate = {name: report.add(f"{name}: wall-clock rate", "streams/s") for name in CPU_ONLY}
    cpu = {
        name: report.add(f"{name}: CPU per command (process_time)", "us", higher_is_better=False)
        for name in CPU_ONLY
    }
    for number in range(runs):
        with scratch("w1-cpu") as directory:
            found = one_run(directory, n, chunk, number, CPU_ONLY)
            for name, (seconds, cpu_seconds, _) in found.items():
                rate[name].values.append(n / seconds)
                cpu[name].values.append(cpu_seconds / n * 1e6)
    raw = series[RAW].median
    fes_ratio = report.ratio("durable: fes / raw wall-clock rate", series[FES].median / raw)
    report.ratio("durable: eventsourcing / raw wall-clock rate", series[ES].median / raw)
    report.ratio(
        "durable: fes / eventsourcing wall-clock rate", series[FES].median / series[ES].median
    )
    report.ratio(
        "durable: fes / raw CPU per command", cpu_full[FES].median / cpu_full[RAW].median
    )
    report.ratio(
        "durable: eventsourcing / raw CPU per command", cpu_full[ES].median / cpu_full[RAW].median
    )
    report.check("durable: fes / raw wall-clock rate", fes_ratio, 0.95, at_least=True)
    by_hand = series[RAW_DOMAIN_DURABLE].median
    report.ratio("context: durable: raw calling the domain by hand / raw wall-clock rate",
                 by_hand / raw)
    report.ratio("context: durable: fes / raw calling the domain by hand wall-clock rate",
                 series[FES].median / by_hand)
    fes_name, raw_name = list(CPU_ONLY)[:2]
    fes_cpu, raw_cpu = cpu[fes_name].median, cpu[raw_name].median
    report.ratio(
        "synchronous=NORMAL: fes / raw wall-clock rate",
        rate[fes_name].median / rate[raw_name].median,
    )
    report.check(
        "synchronous=NORMAL: fes / raw CPU per command", fes_cpu / raw_cpu, 1.25, at_least=False
    )
    report.ratio(
        "context: synchronous=NORMAL: fes / raw calling the domain by hand, CPU per command",
        fes_cpu / cpu[RAW_DOMAIN].median,
    )
    report.ratio(
        "context: raw calling the domain by hand / raw, CPU per command",
        cpu[RAW_DOMAIN].median / raw_cpu,
    )
    memory_run(config, report)
    report.notes.append(
        "CPU rows are time.process_time of this process over the commands, divided by their "
        "number; rates are wall-clock. synchronous=NORMAL rows are not durable against power "
        "loss: they show each side without the flush"
    )
    report.notes.append(f"the contenders take turns, {chunk} streams at a time, each on its file")
    report.notes.append(
        "raw sqlite3 mints its stream ids and inserts version 1 without reading, as fes does "
        "for an id its new_id() gave (the unique (stream, version) refuses a clash on either)"
    )
    report.notes.extend(f"{name}: {value}" for name, value in settings.items())
    report.notes.append(schema_note())
    if config.profile:
        with scratch("w1-profile") as directory:
            contender = FesStreams(directory)
            try:
                report.profile = profile_call(lambda: contender.create(min(n, 2_000)))
            finally:
                contender.close()
    return report
