"""W5: PostgreSQL — 4 writer processes and a follower process, sustained.

A throwaway PostgreSQL server (``tests/pgserver.py``'s ``PgServer``) holds a
fresh database per contender and run.  Four writer processes register dogs
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
LISTEN/NOTIFY) running the ``Registry`` process application.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import statistics
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any, Protocol

from .common import ES, FES, Config, Report

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


def _pg_server() -> _Server:
    """tests/pgserver.py's PgServer, imported by path (tests/ is not a package to import)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "pgserver.py"
    spec = importlib.util.spec_from_file_location("fes_bench_pgserver", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server: _Server = module.PgServer()
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
    url: str, ready: Any, go: EventType, seconds: float, counts: Any, index: int
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
        while time.monotonic() < deadline:
            app.execute(dogs, app.new_id(), register, "Fido")
            done += 1
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
    env: dict[str, str], ready: Any, go: EventType, seconds: float, counts: Any, index: int
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
        while time.monotonic() < deadline:
            app.save(EsDog("Fido"))
            done += 1
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


def one_run(side: Side, seconds: float) -> dict[str, float]:
    """Run the writers for ``seconds`` beside the follower; measure rate, lag and drain."""
    context = multiprocessing.get_context("spawn")
    ready, stop, go = context.Event(), context.Event(), context.Event()
    connected = context.Value("i", 0)
    counts = context.Array("q", WRITERS)
    follow, follow_args = side.follower()
    follower = context.Process(target=follow, args=(*follow_args, ready, stop), daemon=True)
    write, write_args = side.writer()
    writers = [
        context.Process(
            target=write, args=(*write_args, connected, go, seconds, counts, i), daemon=True
        )
        for i in range(WRITERS)
    ]
    follower.start()
    for process in writers:
        process.start()
    try:
        _wait_for(lambda: ready.is_set(), [follower], "the follower to start")
        # every writer has connected and written its first event
        _wait_for(lambda: connected.value == WRITERS, writers, "the writers to connect")
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
        total = sum(int(counts[i]) for i in range(WRITERS))
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
        for process in [follower, *writers]:
            if process.is_alive():
                process.kill()
    return {
        "written": total,
        "write rate": total / (written_at - start),
        "end-to-end rate": total / (drained_at - start),
        "median lag": statistics.median(lags) if lags else 0.0,
        "max lag": float(max(lags, default=0)),
        "drain": drained_at - written_at,
    }


def run(config: Config) -> Report:
    seconds = float(config.size(10, 2))
    runs = config.repeat(3, 1)
    report = Report(
        "W5",
        f"PostgreSQL: {WRITERS} writer processes ({seconds:g} s, one dog per transaction) "
        "and a follower process",
    )
    metrics = {
        "write rate": ("events/s", True),
        "end-to-end rate": ("events/s", True),
        "median lag": ("events", False),
        "max lag": ("events", False),
        "drain": ("s", False),
    }
    series = {
        (name, metric): report.add(f"{name}: {metric}", unit, higher_is_better=better)
        for name in (FES, ES)
        for metric, (unit, better) in metrics.items()
    }
    factories: dict[str, Callable[[_Server, str], Side]] = {FES: FesSide, ES: EsSide}
    server = _pg_server()
    server.start()
    try:
        for number in range(runs):
            order = [FES, ES] if number % 2 == 0 else [ES, FES]
            for name in order:
                side = factories[name](server, f"w5_{name.replace('eventsourcing', 'es')}_{number}")
                try:
                    found = one_run(side, seconds)
                finally:
                    side.close()
                for metric in metrics:
                    series[(name, metric)].values.append(found[metric])
    finally:
        server.stop()
    for metric in ("write rate", "end-to-end rate"):
        report.ratio(
            f"fes / eventsourcing {metric}",
            series[(FES, metric)].median / series[(ES, metric)].median,
        )
    report.notes.append(
        "lag = leader's last position - follower's tracked position, sampled every "
        f"{SAMPLE} s while the writers run; drain = time to catch up after they stop"
    )
    report.notes.append(
        "the throwaway server runs with fsync=off (as tests/pgserver.py starts it), "
        "for both contenders alike; a commit is not flushed to disk"
    )
    return report
