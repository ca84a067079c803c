"""W2: many events appended to one new stream in one call (one commit).

fes builds the events (a ``Registered`` and ``TrickAdded`` events), emits
them into a batch (which folds them, checking they apply) and commits;
eventsourcing creates a ``Dog`` and calls ``add_trick`` for each trick (its
way of producing events: each is applied as it is made), then saves once;
raw sqlite3 encodes the same payloads with orjson, reads the empty stream and
inserts every row with ``executemany`` in one ``BEGIN IMMEDIATE … COMMIT``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson

from fes.edge import Application
from fes.examples.dogs import Registered, TrickAdded, dogs

from .common import ES, FES, RAW, Config, Report, profile_call, rotated, scratch
from .domains import SCHOOL, DogSchool, EsDog, sqlite_env
from .raw import RawStore, connect, now_micros

__all__ = ["es_append", "fes_append", "raw_append", "run"]


def fes_append(app: Application, n: int) -> str:
    """Append a new stream of ``n`` dog events in one commit; returns its id."""
    stream = app.new_id()
    events = [Registered("Fido"), *[TrickAdded(f"trick {i}") for i in range(1, n)]]
    batch = app.batch()
    batch.emit(dogs, stream, events)
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


def _fes(directory: Path, n: int) -> float:
    with Application(SCHOOL, store=f"sqlite:///{directory}/fes.db") as app:
        start = time.perf_counter()
        fes_append(app, n)
        return time.perf_counter() - start


def _es(directory: Path, n: int) -> float:
    app = DogSchool(env=sqlite_env(DogSchool=str(directory / "es.db")))
    try:
        start = time.perf_counter()
        es_append(app, n)
        return time.perf_counter() - start
    finally:
        app.close()


def _raw(directory: Path, n: int) -> float:
    conn = connect(directory / "raw.db")
    try:
        store = RawStore(conn, "school").create()
        start = time.perf_counter()
        raw_append(store, n)
        return time.perf_counter() - start
    finally:
        conn.close()


def run(config: Config) -> Report:
    n = config.size(10_000, 2_000)
    runs = config.repeat(7, 3)
    report = Report("W2", f"{n:,} events appended to one stream in one call (SQLite file)")
    contenders: dict[str, Callable[[Path, int], float]] = {FES: _fes, ES: _es, RAW: _raw}
    series = {name: report.add(name, "events/s") for name in contenders}
    for number in range(runs):
        for name in rotated(list(contenders), number):
            with scratch("w2") as directory:
                series[name].values.append(n / contenders[name](directory, n))
    raw = series[RAW].median
    fes_ratio = report.ratio("fes / raw rate", series[FES].median / raw)
    report.ratio("eventsourcing / raw rate", series[ES].median / raw)
    report.ratio("fes / eventsourcing rate", series[FES].median / series[ES].median)
    report.check("fes / raw rate", fes_ratio, 0.5, at_least=True)
    if config.profile:
        with scratch("w2-profile") as directory, Application(
            SCHOOL, store=f"sqlite:///{directory}/fes.db"
        ) as app:
            report.profile = profile_call(lambda: fes_append(app, n))
    return report
