"""W3: load a stream of 1,000 events (no snapshot), many times.

fes: ``get(dogs, stream)`` (read the rows, decode each event, fold them into
a ``Dog``; also with a projector that does not use ``attrs.evolve``, to show
what the example domain's own code costs); eventsourcing:
``repository.get(dog_id)`` (read, decode, reconstruct the aggregate); raw
sqlite3: the same SELECT fes issues (version, topic and payload of each
event), then ``orjson.loads`` of every payload (read and decode, no domain
objects); for context, the same floor building the event objects by hand,
and folding them by hand with the example's projector functions (the least
any library can spend on this load).
Each run writes the stream with each contender's own W2 code into a fresh
file; after a warm-up the contenders take turns, one load each, round after
round; a run's figure is each contender's median load time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from fes.edge import Application
from fes.examples.dogs import Dog, Registered, TrickAdded, dogs, registered, trick_added

from .common import (
    ES,
    FES,
    RAW,
    Config,
    Report,
    interleaved_cpu,
    profile_call,
    rotated,
    scratch,
)
from .domains import (
    DIRECT_SCHOOL,
    SCHOOL,
    DogSchool,
    direct_dogs,
    direct_registered,
    direct_trick_added,
    sqlite_env,
)
from .raw import RawStore, connect
from .w2_append import es_append, fes_append, raw_append

__all__ = ["run"]

#: A contender stops timing loads after this many seconds (with at least 10 loads).
BUDGET = 4.0

Built = tuple[Callable[[], object], Callable[[], None]]


def _fes(directory: Path, n: int) -> Built:
    app = Application(SCHOOL, store=f"sqlite:///{directory}/fes.db")
    stream = fes_append(app, n)
    dog = app.get(dogs, stream)
    assert dog is not None and len(dog.tricks) == n - 1
    return (lambda: app.get(dogs, stream)), app.close


def _fes_direct(directory: Path, n: int) -> Built:
    url = f"sqlite:///{directory}/fes-direct.db"
    with Application(SCHOOL, store=url) as writer:
        stream = fes_append(writer, n)
    app = Application(DIRECT_SCHOOL, store=url)
    return (lambda: app.get(direct_dogs, stream)), app.close


def _es(directory: Path, n: int) -> Built:
    app = DogSchool(env=sqlite_env(DogSchool=str(directory / "es.db")))
    dog_id = es_append(app, n)
    assert len(app.repository.get(dog_id).tricks) == n - 1
    return (lambda: app.repository.get(dog_id)), app.close


def _raw(directory: Path, n: int) -> Built:
    conn = connect(directory / "raw.db")
    store = RawStore(conn, "school").create()
    stream = raw_append(store, n)
    loads = orjson.loads

    def load() -> list[object]:
        return [loads(row[2]) for row in store.read_payloads(stream)]

    assert len(load()) == n
    return load, conn.close


def _raw_events(directory: Path, n: int) -> Built:
    """The raw floor, decoding each payload into its event class by hand."""
    conn = connect(directory / "raw-events.db")
    store = RawStore(conn, "school").create()
    stream = raw_append(store, n)
    loads = orjson.loads
    kinds: dict[str, Callable[..., object]] = {
        "dog.Registered": Registered,
        "dog.TrickAdded": TrickAdded,
    }

    def load() -> list[object]:
        return [kinds[topic](**loads(payload)) for _, topic, payload in store.read_payloads(stream)]

    assert load()[-1] == TrickAdded(f"trick {n - 1}")
    return load, conn.close


def _raw_folded(
    registered: Callable[[Any, Registered], Dog], trick_added: Callable[[Dog, TrickAdded], Dog]
) -> Callable[[Path, int], Built]:
    """The raw floor with event objects, folded by hand by these projector functions.

    No library can load this ``Dog`` for less: the load reads the same rows,
    builds the same events and calls the same projectors, with no checks and
    no dispatch.
    """

    def build(directory: Path, n: int) -> Built:
        conn = connect(directory / f"raw-folded-{trick_added.__name__}.db")
        store = RawStore(conn, "school").create()
        stream = raw_append(store, n)
        loads = orjson.loads

        def load() -> object:
            dog: Any = None
            for _, topic, payload in store.read_payloads(stream):
                if topic == "dog.TrickAdded":
                    dog = trick_added(dog, TrickAdded(**loads(payload)))
                else:
                    dog = registered(dog, Registered(**loads(payload)))
            return dog

        events = [Registered("Fido"), *(TrickAdded(f"trick {i}") for i in range(1, n))]
        assert load() == dogs.fold(events)
        return load, conn.close

    return build


def run(config: Config) -> Report:
    n = 1_000
    loads = config.size(200, 50)
    budget = BUDGET if not config.quick else 1.0
    runs = config.repeat(5, 3)
    report = Report(
        "W3", f"load a {n:,}-event stream, no snapshot (median of up to {loads} loads per run)"
    )
    direct = "fes, projector without attrs.evolve"
    raw_events = "raw sqlite3, decoding into event objects"
    raw_folded = "raw sqlite3, event objects folded by the example's projectors"
    raw_direct = "raw sqlite3, event objects folded by projectors calling Dog(...)"
    builders: dict[str, Callable[[Path, int], Built]] = {
        FES: _fes,
        ES: _es,
        RAW: _raw,
        direct: _fes_direct,
        raw_events: _raw_events,
        raw_folded: _raw_folded(registered, trick_added),
        raw_direct: _raw_folded(direct_registered, direct_trick_added),
    }
    series = {
        name: report.add(f"{name} (wall clock)", "ms/load", higher_is_better=False)
        for name in builders
    }
    cpu = {
        name: report.add(f"{name} (CPU, process_time)", "ms/load", higher_is_better=False)
        for name in builders
    }
    for number in range(runs):
        with scratch("w3") as directory:
            built = {name: builders[name](directory, n) for name in rotated(list(builders), number)}
            try:
                found = interleaved_cpu(
                    {name: load for name, (load, _) in built.items()}, loads, budget=budget
                )
            finally:
                for _, close in built.values():
                    close()
        for name, (median, median_cpu) in found.items():
            series[name].values.append(median)
            cpu[name].values.append(median_cpu)
    raw = series[RAW].median
    fes_ratio = report.ratio("fes / raw time", series[FES].median / raw)
    report.ratio("eventsourcing / raw time", series[ES].median / raw)
    report.ratio("eventsourcing / fes time", series[ES].median / series[FES].median)
    report.check("fes / raw time", fes_ratio, 2.0, at_least=False)
    report.ratio("CPU: fes / raw", cpu[FES].median / cpu[RAW].median)
    report.ratio("CPU: eventsourcing / raw", cpu[ES].median / cpu[RAW].median)
    report.check(
        f"CPU: fes / {raw_folded}",
        cpu[FES].median / cpu[raw_folded].median, 1.1, at_least=False,
    )
    report.ratio(f"{direct} / raw time", series[direct].median / raw)
    report.ratio(f"fes / {raw_events} time", series[FES].median / series[raw_events].median)
    report.ratio(
        f"{direct} / {raw_events} time", series[direct].median / series[raw_events].median
    )
    report.ratio(f"{raw_folded} / raw time", series[raw_folded].median / raw)
    report.ratio(f"fes / {raw_folded} time", series[FES].median / series[raw_folded].median)
    report.ratio(f"{raw_direct} / raw time", series[raw_direct].median / raw)
    report.ratio(f"{direct} / {raw_direct} time", series[direct].median / series[raw_direct].median)
    report.notes.append("raw sqlite3 reads and decodes (orjson.loads); it builds no domain object")
    report.notes.append(
        f"'{direct}': the same dog, events and rows, folded by projectors that call Dog(...) "
        "instead of attrs.evolve (fes/examples/dogs.py uses evolve)"
    )
    report.notes.append(
        f"'{raw_events}': the raw floor, then Registered(**payload) or TrickAdded(**payload) "
        "by topic, by hand (no checks); no target, context for fes's decoding"
    )
    report.notes.append(
        f"'{raw_folded}': those event objects passed to registered() and trick_added() of "
        "fes/examples/dogs.py by hand, no dispatch: what loading this Dog costs any library "
        "at least; where it is above 2 x raw, W3's target cannot be met with this domain"
    )
    report.notes.append(
        f"'{raw_direct}': the same, with the projectors of '{direct}': the least any library "
        "can spend with a projector that does not call attrs.evolve"
    )
    if config.profile:
        with scratch("w3-profile") as directory, Application(
            SCHOOL, store=f"sqlite:///{directory}/fes.db"
        ) as app:
            stream = fes_append(app, n)

            def many() -> None:
                for _ in range(loads):
                    app.get(dogs, stream)

            report.profile = profile_call(many)
    return report
