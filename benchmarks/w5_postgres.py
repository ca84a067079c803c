"""W5: PostgreSQL, durable — 1 to 8 writer processes and a follower process, sustained.

A throwaway PostgreSQL server (``tests/pgserver.py``'s ``PgServer``, started
with ``durable=True``: the server's defaults, ``fsync=on``) holds a fresh
database per contender and run.  Writer processes (1, 2, 4 and 8) register dogs
as fast as they can, one command (one transaction) per dog, for a fixed
time; a fifth process runs the follower (one certificate per dog, recorded
with its tracking position).  The main process samples the follower's lag
(the leader's last position minus the follower's tracked position) every
``SAMPLE`` seconds while the writers run, then times how long the follower
needs to drain what is left.

fes: writers use :class:`~fes.edge.Application` on a
``postgresql://`` URL; the follower is a
:class:`~fes.edge.ThreadedRunner` limited to the registry, woken by
LISTEN/NOTIFY.  eventsourcing: writers are ``DogSchool`` applications on
``eventsourcing.postgres``; the follower is an
``EventSourcedProjectionRunner`` (its PostgreSQL subscription, also
LISTEN/NOTIFY) running the ``Registry`` process application.  raw psycopg:
fes's transactions by hand (:mod:`benchmarks.w5_raw`), and for context the
same writers calling the domain's functions by hand (what any library must
spend on this domain at the least, as W1's context row) and the same
writers without fes's table lock, whose commits may share a flush.

CPU time: each writer's ``process_time`` over its timed loop, per command;
and the follower process's CPU (all its threads, ``getrusage``) from the
moment it is ready until it is stopped, per event written: it shares the
two cores with the writers and the server, so what it spends is the
writers' loss (the server's CPU is not counted).
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import resource
import statistics
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any, Protocol

from .common import ES, FES, Config, Report, rotated

__all__ = ["run"]

WRITERS = 4
SAMPLE = 0.1
DRAIN_LIMIT = 300.0


class _Server(Protocol):
    port: int
    host: str

    def start(self) -> Any: ...

    def stop(self) -> None: ...

    def create_database(self, name: str) -> str: ...


def _pg_server(*, durable: bool = False) -> _Server:
    """tests/pgserver.py's PgServer, imported by path (tests/ is not a package to import)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "pgserver.py"
    spec = importlib.util.spec_from_file_location("fes_bench_pgserver", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server: _Server = module.PgServer(durable=durable)
    return server


def _es_env(server: _Server, database: str) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": database,
        "POSTGRES_HOST": server.host,
        "POSTGRES_PORT": str(server.port),
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": "",
    }


# --- what runs in the child processes (module level: they are spawned) ----------


def fes_writer(
    url: str, ready: Any, go: EventType, seconds: float, counts: Any, cpu: Any, index: int
) -> None:
    from fes.edge import Application
    from fes.examples.dogs import dogs, register

    from .domains import SCHOOL

    with Application(SCHOOL, store=url) as app:
        app.execute(dogs, app.new_id(), register, "Fido")  # warm: connect, prepare
        with ready.get_lock():
            ready.value += 1
        go.wait()
        deadline = time.monotonic() + seconds
        done = 0
        start = time.process_time()
        while time.monotonic() < deadline:
            app.execute(dogs, app.new_id(), register, "Fido")
            done += 1
        cpu[index] = time.process_time() - start
        counts[index] = done


def fes_follower(url: str, ready: EventType, stop: EventType) -> None:
    from fes.edge import ThreadedRunner

    from .domains import SYSTEM

    runner = ThreadedRunner(SYSTEM, store=url, apps=["registry"])
    runner.start()
    ready.set()
    stop.wait()
    runner.close()


def es_writer(
    env: dict[str, str], ready: Any, go: EventType, seconds: float, counts: Any, cpu: Any,
    index: int,
) -> None:
    from .domains import DogSchool, EsDog

    app = DogSchool(env=env)
    try:
        app.save(EsDog("Fido"))  # warm: connect, prepare
        with ready.get_lock():
            ready.value += 1
        go.wait()
        deadline = time.monotonic() + seconds
        done = 0
        start = time.process_time()
        while time.monotonic() < deadline:
            app.save(EsDog("Fido"))
            done += 1
        cpu[index] = time.process_time() - start
        counts[index] = done
    finally:
        app.close()


def es_follower(env: dict[str, str], ready: EventType, stop: EventType) -> None:
    from eventsourcing.projection import EventSourcedProjectionRunner

    from .domains import DogSchool, Registry

    runner = EventSourcedProjectionRunner(
        application_class=DogSchool, projection_class=Registry, env=env
    )
    with runner:
        ready.set()
        while not stop.wait(0.2):
            runner.run_forever(timeout=0.01)  # re-raises an error of its thread


# --- the contenders as seen from the main process --------------------------------


class Side(Protocol):
    """One contender's database, its processes and how to read its progress."""

    def writer(self) -> tuple[Callable[..., None], tuple[Any, ...]]: ...

    def follower(self) -> tuple[Callable[..., None], tuple[Any, ...]]: ...

    def positions(self) -> tuple[int, int]: ...

    def close(self) -> None: ...


class FesSide:
    def __init__(self, server: _Server, database: str) -> None:
        from fes.edge import Application
        from fes.edge.stores import open_database

        from .domains import REGISTRY, SCHOOL

        self.url = server.create_database(database)
        self.database = open_database(self.url)
        for app in (SCHOOL, REGISTRY):  # create the tables before the processes start
            Application(app, store=self.database)
        self.school = self.database.store("school")
        self.registry = self.database.store("registry")

    def writer(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        return fes_writer, (self.url,)

    def follower(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        return fes_follower, (self.url,)

    def positions(self) -> tuple[int, int]:
        return self.school.last_position(), self.registry.last_tracked("school")

    def close(self) -> None:
        self.database.close()


class EsSide:
    def __init__(self, server: _Server, database: str) -> None:
        from .domains import DogSchool, Registry

        server.create_database(database)
        env = _es_env(server, database)
        self.school = DogSchool(env=env)  # creates the tables
        self.registry = Registry(env=env)
        # concurrent CREATE TABLE IF NOT EXISTS fails in PostgreSQL: the processes skip it
        self.env = {**env, "CREATE_TABLE": "false"}

    def writer(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        return es_writer, (self.env,)

    def follower(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        return es_follower, (self.env,)

    def positions(self) -> tuple[int, int]:
        last = self.school.recorder.max_notification_id() or 0
        tracked = self.registry.recorder.max_tracking_id("DogSchool") or 0
        return last, tracked

    def close(self) -> None:
        self.school.close()
        self.registry.close()


def _wait_for(
    done: Callable[[], bool], processes: list[Any], what: str, limit: float = 120.0
) -> None:
    deadline = time.monotonic() + limit
    while not done():
        if any(p.exitcode is not None for p in processes):
            raise RuntimeError(f"a process died while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up waiting for {what} after {limit} s")
        time.sleep(0.02)


def _process_cpu() -> float:
    """This process's CPU time so far, every thread's, user and system."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


class _Started:
    """The follower's ``ready``, which notes the process's CPU as it is set."""

    def __init__(self, ready: EventType, cpu: Any) -> None:
        self._ready = ready
        self._cpu = cpu

    def set(self) -> None:
        self._cpu.value = _process_cpu()
        self._ready.set()


def _timed_follower(
    follow: Callable[..., None], args: tuple[Any, ...], ready: EventType, stop: EventType,
    cpu: Any,
) -> None:
    """Run ``follow``; leave in ``cpu`` the CPU it spent from ready to stopped."""
    follow(*args, _Started(ready, cpu), stop)
    cpu.value = _process_cpu() - cpu.value


def one_run(side: Side, seconds: float, count: int = WRITERS) -> dict[str, float]:
    """Run ``count`` writers for ``seconds`` beside the follower; measure rate, lag and drain."""
    context = multiprocessing.get_context("spawn")
    ready, stop, go = context.Event(), context.Event(), context.Event()
    connected = context.Value("i", 0)
    counts = context.Array("q", count)
    cpu = context.Array("d", count)
    follower_cpu = context.Value("d", 0.0)
    follow, follow_args = side.follower()
    follower = context.Process(
        target=_timed_follower, args=(follow, follow_args, ready, stop, follower_cpu),
        daemon=True,
    )
    write, write_args = side.writer()
    writers = [
        context.Process(
            target=write, args=(*write_args, connected, go, seconds, counts, cpu, i), daemon=True
        )
        for i in range(count)
    ]
    follower.start()
    for process in writers:
        process.start()
    try:
        _wait_for(lambda: ready.is_set(), [follower], "the follower to start")
        # every writer has connected and written its first event
        _wait_for(lambda: connected.value == count, writers, "the writers to connect")
        go.set()
        lags: list[int] = []
        start = time.perf_counter()
        while any(p.is_alive() for p in writers):
            last, tracked = side.positions()
            lags.append(max(last - tracked, 0))
            time.sleep(SAMPLE)
        written_at = time.perf_counter()
        for process in writers:
            process.join()
            if process.exitcode != 0:
                raise RuntimeError(f"a writer failed (exit code {process.exitcode})")
        # the writers' warm-up events are not counted: only the follower sees them
        total = sum(int(counts[i]) for i in range(count))
        used = sum(float(cpu[i]) for i in range(count))
        last, tracked = side.positions()
        while tracked < last:
            if not follower.is_alive():
                raise RuntimeError("the follower died")
            if time.perf_counter() - written_at > DRAIN_LIMIT:
                raise RuntimeError(f"the follower did not drain in {DRAIN_LIMIT} s")
            time.sleep(0.01)
            last, tracked = side.positions()
        drained_at = time.perf_counter()
    finally:
        stop.set()
        follower.join(30)
        stopped = follower.exitcode == 0
        for process in [follower, *writers]:
            if process.is_alive():
                process.kill()
    # (a follower killed after the drain has no CPU to report)
    spent = follower_cpu.value if stopped else float("nan")
    return {
        "written": total,
        "write rate": total / (written_at - start),
        "end-to-end rate": total / (drained_at - start),
        "median lag": statistics.median(lags) if lags else 0.0,
        "max lag": float(max(lags, default=0)),
        "drain": drained_at - written_at,
        "writer CPU per command": used / total * 1e6 if total else float("nan"),
        "follower CPU per event": spent / total * 1e6 if total else float("nan"),
    }


RAW_PG = "raw psycopg"
RAW_PG_NO_LOCK = "raw psycopg, no table lock (context)"
#: What any library must do with this domain over PostgreSQL, at the least (context).
RAW_PG_HAND = "raw psycopg calling register() and registered() by hand (context)"
FULL_COUNTS = (1, 2, 4, 8)
QUICK_COUNTS = (1, WRITERS)


def run(config: Config) -> Report:
    from .w5_raw import RawPgSide

    counts = QUICK_COUNTS if config.quick else FULL_COUNTS
    seconds = float(config.size(5, 1))
    runs = config.repeat(5, 1)  # one run swings the 4-writer rate by up to a tenth
    report = Report(
        "W5",
        f"PostgreSQL, durable: {', '.join(map(str, counts))} writer processes ({seconds:g} s, "
        "one dog per transaction) and a follower process",
    )
    metrics = {
        "write rate": ("events/s", True),
        "end-to-end rate": ("events/s", True),
        "writer CPU per command": ("us", False),
        "follower CPU per event": ("us", False),
        "median lag": ("events", False),
        "max lag": ("events", False),
        "drain": ("s", False),
    }
    names = (FES, ES, RAW_PG, RAW_PG_HAND, RAW_PG_NO_LOCK)
    series = {
        (name, count, metric): report.add(
            f"{count} writer(s): {name}: {metric}", unit, higher_is_better=better
        )
        for count in counts
        for name in names
        for metric, (unit, better) in metrics.items()
    }
    factories: dict[str, Callable[[_Server, str], Side]] = {
        FES: FesSide,
        ES: EsSide,
        RAW_PG: RawPgSide,
        RAW_PG_HAND: lambda server, database: RawPgSide(server, database, hand=True),
        RAW_PG_NO_LOCK: lambda server, database: RawPgSide(server, database, lock=False),
    }
    short = {
        FES: "fes", ES: "es", RAW_PG: "raw", RAW_PG_HAND: "rawhand", RAW_PG_NO_LOCK: "rawnolock"
    }
    server = _pg_server(durable=True)
    server.start()
    try:
        for number in range(runs):
            for count in counts:
                for name in rotated(list(names), number + count):
                    side = factories[name](server, f"w5_{short[name]}_{count}_{number}")
                    try:
                        found = one_run(side, seconds, count)
                    finally:
                        side.close()
                    for metric in metrics:
                        series[(name, count, metric)].values.append(found[metric])
    finally:
        server.stop()

    def median(name: str, count: int, metric: str) -> float:
        return series[(name, count, metric)].median

    for count in counts:
        fes_raw = report.ratio(
            f"{count} writer(s): fes / raw psycopg write rate",
            median(FES, count, "write rate") / median(RAW_PG, count, "write rate"),
        )
        fes_es = report.ratio(
            f"{count} writer(s): fes / eventsourcing write rate",
            median(FES, count, "write rate") / median(ES, count, "write rate"),
        )
        report.ratio(
            f"{count} writer(s): fes / eventsourcing end-to-end rate",
            median(FES, count, "end-to-end rate") / median(ES, count, "end-to-end rate"),
        )
        report.ratio(
            f"{count} writer(s): writer CPU per command, fes / raw psycopg",
            median(FES, count, "writer CPU per command")
            / median(RAW_PG, count, "writer CPU per command"),
        )
        report.ratio(
            f"{count} writer(s): follower CPU per event, fes / raw psycopg",
            median(FES, count, "follower CPU per event")
            / median(RAW_PG, count, "follower CPU per event"),
        )
        report.ratio(
            f"{count} writer(s): context: fes / raw psycopg calling the domain by hand "
            "write rate",
            median(FES, count, "write rate") / median(RAW_PG_HAND, count, "write rate"),
        )
        report.ratio(
            f"{count} writer(s): context: raw psycopg calling the domain by hand / raw "
            "psycopg write rate",
            median(RAW_PG_HAND, count, "write rate") / median(RAW_PG, count, "write rate"),
        )
        report.ratio(
            f"{count} writer(s): context: writer CPU per command, fes / raw psycopg "
            "calling the domain by hand",
            median(FES, count, "writer CPU per command")
            / median(RAW_PG_HAND, count, "writer CPU per command"),
        )
        if count == WRITERS:
            report.check(f"{count} writers: fes / raw psycopg write rate", fes_raw, 0.9,
                         at_least=True)
            report.check(f"{count} writers: fes / eventsourcing write rate", fes_es, 2.0,
                         at_least=True)
    for name in names:
        one = median(name, 1, "write rate")
        report.ratio(
            f"{name}: scaling, write rate at {counts[-1]} writers / at 1",
            float("nan") if not one else median(name, counts[-1], "write rate") / one,
        )
        report.notes.append(
            f"{name} write rate by writers: " + ", ".join(
                f"{c}: {median(name, c, 'write rate'):,.0f}" for c in counts
            ) + " events/s"
        )
    report.notes.append(
        "lag = leader's last position - follower's tracked position, sampled every "
        f"{SAMPLE} s while the writers run; drain = time to catch up after they stop"
    )
    report.notes.append(
        "the throwaway server runs durable: the server's defaults (fsync=on, "
        "synchronous_commit=on), for every contender alike"
    )
    report.notes.append(
        "raw psycopg does fes's transactions by hand (benchmarks/w5_raw.py); the no-lock "
        "context row takes no table lock, so concurrent commits can share a flush"
    )
    return report
