"""W2: many events appended to one new stream in one call (one commit).

The like-for-like row runs one command per event on both sides, then one
commit: fes ``batch.execute(dogs, stream, register, "Fido")`` and
``batch.execute(dogs, stream, add_trick, …)`` for each trick, then
``app.commit(batch)``; eventsourcing ``Dog("Fido")``, ``add_trick`` for each
trick, one ``save``.  The context row (fes's fastest call, no commands)
builds the events (a ``Registered`` and ``TrickAdded`` events), emits
them into a batch (which folds them, checking they apply) and commits;
eventsourcing creates a ``Dog`` and calls ``add_trick`` for each trick (its
way of producing events: each is applied as it is made), then saves once;
raw sqlite3 encodes the same payloads with orjson, reads the empty stream and
inserts every row with ``executemany`` in one ``BEGIN IMMEDIATE … COMMIT``.
A second context row is that floor plus what any library must do with this
domain on the command path: call ``register`` and ``teach`` and fold each
event with the example's ``registered`` and ``trick_added``, by hand (no
dispatch, no checks, no envelope).
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import attrs
import orjson

import fes
from fes.edge import Application
from fes.examples.dogs import (
    Dog,
    Registered,
    TrickAdded,
    dogs,
    register,
    registered,
    trick_added,
)

from .common import ES, FES, RAW, Config, Report, profile_call, rotated, scratch
from .domains import SCHOOL, DogSchool, EsDog, sqlite_env
from .raw import RawStore, connect, now_micros

__all__ = ["es_append", "fes_append", "fes_commands", "raw_append", "raw_commands", "run"]

FES_EMIT = f"{FES}, emit (context)"
RAW_DOMAIN = f"{RAW} calling the commands and projectors by hand (context)"


def fes_append(app: Application, n: int) -> str:
    """Append a new stream of ``n`` dog events in one commit; returns its id."""
    stream = app.new_id()
    events = [Registered("Fido"), *[TrickAdded(f"trick {i}") for i in range(1, n)]]
    batch = app.batch()
    batch.emit(dogs, stream, events)
    app.commit(batch)
    return stream


def teach(dog: Dog, trick: str) -> list[TrickAdded]:
    """The command eventsourcing's ``add_trick`` is: no check that the dog knows it already.

    (The example's ``add_trick`` looks the trick up in the dog's tricks, a scan
    that grows with them: a domain's cost, not a library's.)
    """
    return [TrickAdded(trick)]


#: The example's dogs with ``teach`` declared as a command, as eventsourcing's
#: ``add_trick`` is declared on its aggregate (fes resolves a declared
#: command's annotations once, an undeclared one's on every call).
TEACHING = attrs.evolve(dogs, commands=[register, teach])
TEACHING_SCHOOL = fes.App("school", aggregates=(TEACHING,))


def fes_commands(app: Application, n: int) -> str:
    """One command per event into one batch, one commit; returns the stream's id."""
    stream = app.new_id()
    batch = app.batch()
    execute = batch.execute
    execute(TEACHING, stream, register, "Fido")
    for i in range(1, n):
        execute(TEACHING, stream, teach, f"trick {i}")
    app.commit(batch)
    return stream


def es_append(app: DogSchool, n: int) -> uuid.UUID:
    dog = EsDog("Fido")
    for i in range(1, n):
        dog.add_trick(f"trick {i}")
    app.save(dog)
    return dog.id


def raw_append(store: RawStore, n: int) -> str:
    dumps = orjson.dumps
    stream = str(uuid.uuid4())
    store.read_payloads(stream)
    moment = now_micros()
    rows = [(stream, 1, "dog.Registered", dumps({"name": "Fido"}), moment, None)]
    rows.extend(
        (stream, i + 1, "dog.TrickAdded", dumps({"trick": f"trick {i}"}), moment, None)
        for i in range(1, n)
    )
    store.append(rows)
    return stream


def raw_commands(store: RawStore, n: int) -> str:
    """The raw floor with the domain's commands and projectors called by hand."""
    dumps = orjson.dumps
    stream = str(uuid.uuid4())
    store.read_payloads(stream)
    moment = now_micros()
    (first,) = register(None, "Fido")
    dog = registered(None, first)
    rows = [(stream, 1, "dog.Registered", dumps({"name": first.name}), moment, None)]
    append = rows.append
    for i in range(1, n):
        (event,) = teach(dog, f"trick {i}")
        dog = trick_added(dog, event)
        append((stream, i + 1, "dog.TrickAdded", dumps({"trick": event.trick}), moment, None))
    store.append(rows)
    return stream


Timed = tuple[float, float]  # wall seconds, CPU seconds (process_time)


def _timed(fn: Callable[[], object]) -> Timed:
    gc.collect()  # the set-up's and the other contenders' garbage: not in this window
    start, start_cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - start_cpu


def _fes(directory: Path, n: int) -> Timed:
    with Application(TEACHING_SCHOOL, store=f"sqlite:///{directory}/fes.db") as app:
        return _timed(lambda: fes_commands(app, n))


def _fes_emit(directory: Path, n: int) -> Timed:
    with Application(SCHOOL, store=f"sqlite:///{directory}/fes.db") as app:
        return _timed(lambda: fes_append(app, n))


def _es(directory: Path, n: int) -> Timed:
    app = DogSchool(env=sqlite_env(DogSchool=str(directory / "es.db")))
    try:
        return _timed(lambda: es_append(app, n))
    finally:
        app.close()


def _raw(directory: Path, n: int, append: Callable[[RawStore, int], object] = raw_append) -> Timed:
    conn = connect(directory / "raw.db")
    try:
        store = RawStore(conn, "school").create()
        return _timed(lambda: append(store, n))
    finally:
        conn.close()


def _raw_domain(directory: Path, n: int) -> Timed:
    return _raw(directory, n, raw_commands)


def run(config: Config) -> Report:
    n = config.size(10_000, 2_000)
    runs = config.repeat(11, 3)  # each window 0.1-0.3 s: one hiccup swings it
    report = Report("W2", f"{n:,} events appended to one stream in one commit (SQLite file)")
    contenders: dict[str, Callable[[Path, int], Timed]] = {
        FES: _fes, ES: _es, RAW: _raw, FES_EMIT: _fes_emit, RAW_DOMAIN: _raw_domain,
    }
    rate = {name: report.add(f"{name}: wall-clock rate", "events/s") for name in contenders}
    cpu = {
        name: report.add(f"{name}: CPU per event (process_time)", "us", higher_is_better=False)
        for name in contenders
    }
    for number in range(runs):
        for name in rotated(list(contenders), number):
            with scratch("w2") as directory:
                wall, used = contenders[name](directory, n)
                rate[name].values.append(n / wall)
                cpu[name].values.append(used / n * 1e6)
    raw = rate[RAW].median
    fes_ratio = report.ratio("one command per event: fes / raw rate", rate[FES].median / raw)
    report.ratio("one command per event: eventsourcing / raw rate", rate[ES].median / raw)
    report.ratio(
        "one command per event: fes / eventsourcing rate", rate[FES].median / rate[ES].median
    )
    report.ratio("CPU: fes / raw", cpu[FES].median / cpu[RAW].median)
    report.ratio("CPU: eventsourcing / raw", cpu[ES].median / cpu[RAW].median)
    report.ratio("context, emit: fes / raw rate", rate[FES_EMIT].median / raw)
    report.ratio("context, emit: CPU fes / raw", cpu[FES_EMIT].median / cpu[RAW].median)
    by_hand = rate[RAW_DOMAIN].median
    report.ratio("context: fes / raw calling the domain by hand, rate", rate[FES].median / by_hand)
    report.ratio(
        "context: CPU fes / raw calling the domain by hand",
        cpu[FES].median / cpu[RAW_DOMAIN].median,
    )
    report.ratio(
        "context: raw calling the domain by hand / raw, rate", rate[RAW_DOMAIN].median / raw
    )
    report.check("one command per event: fes / raw rate", fes_ratio, 0.6, at_least=True)
    report.notes.append(
        "fes and eventsourcing: one command per event, one commit; emit (context) appends "
        "events fes is handed, folding them; raw: orjson payloads, executemany, one commit"
    )
    if config.profile:
        with scratch("w2-profile") as directory, Application(
            TEACHING_SCHOOL, store=f"sqlite:///{directory}/fes.db"
        ) as app:
            report.profile = profile_call(lambda: fes_commands(app, n))
    return report
