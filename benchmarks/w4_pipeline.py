"""W4: events through a leader → follower pipeline, with tracking, in SQLite.

The leader registers dogs; the follower's policy issues one certificate (one
new event, in a new stream) per upstream event and records it together with
its tracking position.

- live: the leader registers the dogs, one command (one commit) at a time or
  50 per commit, while the runner processes; timed from the first command
  until the follower has tracked the last upstream event.
- catch-up: a backlog of upstream events is written first (not timed),
  then the runner processes it all.

Contenders: fes (both apps' tables in one file, as fes keeps them) live with
a :class:`~fes.edge.ProcessRunner` running the follower in a
worker process of its own, as ``fes run`` deploys it beside the process that
takes commands, and catching up with a :class:`~fes.edge.SyncRunner`;
a context row runs the follower in a thread of the leader's process
(:class:`~fes.edge.ThreadedRunner`).  eventsourcing's
``SingleThreadedRunner`` with a ``ProcessApplication`` (one file per
application, as its SQLite tables are not named per application; the runner
processes each upstream event in its own transaction, in the leader's
thread, right after the leader's save, and catches up by
``pull_and_process``).  Raw sqlite3 doing fes's SQL by hand, a follower
thread reading the log as many notifications at a time as fes (its default batch).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import orjson
from eventsourcing.system import SingleThreadedRunner
from eventsourcing.system import System as EsSystem

from fes.edge import Application, ProcessRunner, Runner, SyncRunner, ThreadedRunner
from fes.edge._follower import DEFAULT_BATCH_SIZE
from fes.edge.stores import open_database
from fes.examples.dogs import dogs, register

from .common import ES, FES, RAW, Config, Report, profile_call, rotated, scratch
from .domains import SCHOOL, SYSTEM, DogSchool, EsDog, Registry, sqlite_env
from .raw import RawStore, connect, now_micros

__all__ = ["run"]

BACKLOG_CHUNK = 500
DEADLINE = 600.0
ES_SYSTEM = EsSystem(pipes=[[DogSchool, Registry]])
#: The system, named for the worker processes that import it.
SYSTEM_SPEC = "benchmarks.domains:SYSTEM"


def _until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not finish in {DEADLINE} s")
        time.sleep(0.001)


# --- fes ------------------------------------------------------------------------


def _fes_lead(leader: Application, n: int, per_commit: int) -> None:
    """Register ``n`` dogs, ``per_commit`` per commit."""
    new_id = leader.new_id
    if per_commit == 1:
        for _ in range(n):
            leader.execute(dogs, new_id(), register, "Fido")
        return
    for done in range(0, n, per_commit):
        batch = leader.batch()
        ids = [new_id() for _ in range(min(per_commit, n - done))]
        batch.prefetch(ids)  # the new streams are known to be empty in one query
        for stream in ids:
            batch.execute(dogs, stream, register, "Fido")
        leader.commit(batch)


def _fes_timed(leader: Application, runner: Runner, n: int, per_commit: int) -> float:
    """Seconds from the leader's first command until the follower tracked its last event."""
    follower = runner.app("registry").store
    start = time.perf_counter()
    _fes_lead(leader, n, per_commit)
    last = leader.store.last_position()
    _until(lambda: follower.last_tracked("school") >= last or bool(runner.errors), "fes")
    elapsed = time.perf_counter() - start
    assert not runner.errors, runner.errors
    return elapsed


def fes_live(directory: Path, n: int, per_commit: int = 1) -> float:
    """The follower in a worker process of its own, as ``fes run`` deploys it."""
    url = f"sqlite:///{directory}/fes.db"
    with (
        Application(SCHOOL, store=url) as leader,
        ProcessRunner(SYSTEM_SPEC, url, apps=["registry"]) as runner,
    ):
        follower = runner.app("registry").store
        # one untimed event: the worker process has started and follows
        leader.execute(dogs, leader.new_id(), register, "Fido")
        _until(lambda: follower.last_tracked("school") >= 1 or bool(runner.errors), "fes")
        elapsed = _fes_timed(leader, runner, n, per_commit)
        assert follower.last_position() == n + 1
        return elapsed


def fes_live_threads(directory: Path, n: int, per_commit: int = 1) -> float:
    """The follower in a thread of the leader's process (a ThreadedRunner)."""
    database = open_database(f"sqlite:///{directory}/fes.db")
    runner = ThreadedRunner(SYSTEM, store=database)
    try:
        leader = runner.app("school")
        follower = runner.app("registry").store
        runner.start()
        elapsed = _fes_timed(leader, runner, n, per_commit)
        assert follower.last_position() == n
        return elapsed
    finally:
        runner.close()
        database.close()


def fes_backlog(directory: Path, n: int) -> str:
    """Write ``n`` upstream events, many per commit; returns the database URL."""
    url = f"sqlite:///{directory}/fes.db"
    with Application(SCHOOL, store=url) as leader:
        done = 0
        while done < n:
            batch = leader.batch()
            for _ in range(min(BACKLOG_CHUNK, n - done)):
                batch.execute(dogs, leader.new_id(), register, "Fido")
            leader.commit(batch)
            done += BACKLOG_CHUNK
    return url


def fes_catch_up(directory: Path, n: int) -> float:
    url = fes_backlog(directory, n)
    with SyncRunner(SYSTEM, store=url) as runner:
        start = time.perf_counter()
        runner.run_until_quiet()
        elapsed = time.perf_counter() - start
        assert runner.app("registry").store.last_position() == n
        return elapsed


# --- eventsourcing ----------------------------------------------------------------


def _es_env(directory: Path) -> dict[str, str]:
    return sqlite_env(
        DogSchool=str(directory / "es-school.db"), Registry=str(directory / "es-registry.db")
    )


def es_live(directory: Path, n: int, per_commit: int = 1) -> float:
    runner = SingleThreadedRunner(ES_SYSTEM, env=_es_env(directory))  # type: ignore[var-annotated]
    runner.start()
    try:
        leader = runner.get(DogSchool)
        follower = runner.get(Registry)
        save = leader.save
        save(EsDog("Fido"))  # one untimed event, as fes's worker process gets
        start = time.perf_counter()
        for done in range(0, n, per_commit):
            save(*[EsDog("Fido") for _ in range(min(per_commit, n - done))])
        last = leader.recorder.max_notification_id()
        _until(lambda: follower.recorder.max_tracking_id("DogSchool") == last, "eventsourcing")
        return time.perf_counter() - start
    finally:
        runner.stop()


def es_catch_up(directory: Path, n: int) -> float:
    env = _es_env(directory)
    leader = DogSchool(env=env)
    done = 0
    while done < n:
        leader.save(*[EsDog("Fido") for _ in range(min(BACKLOG_CHUNK, n - done))])
        done += BACKLOG_CHUNK
    last = leader.recorder.max_notification_id()
    leader.close()
    runner = SingleThreadedRunner(ES_SYSTEM, env=env)  # type: ignore[var-annotated]
    runner.start()
    try:
        follower = runner.get(Registry)
        start = time.perf_counter()
        follower.pull_and_process("DogSchool")
        elapsed = time.perf_counter() - start
        assert follower.recorder.max_tracking_id("DogSchool") == last
        return elapsed
    finally:
        runner.stop()


# --- raw sqlite3 ----------------------------------------------------------------


class RawFollower:
    """fes's follower step by hand: read a batch of the log, write, track."""

    def __init__(self, path: Path) -> None:
        self.conn = connect(path)
        self.leader = RawStore(self.conn, "school")
        self.store = RawStore(self.conn, "registry")

    def step(self) -> int:
        store, dumps, loads = self.store, orjson.dumps, orjson.loads
        previous = store.last_tracked("school")
        rows = self.leader.read_log(previous, DEFAULT_BATCH_SIZE)
        if not rows:
            return 0
        moment = now_micros()
        new = []
        # as fes does: the policy's streams' versions in one query, then a read of
        # each stream that has events (none, here: every certificate is new)
        existing = store.stream_versions([f"certificate-{row[1]}" for row in rows])
        for _position, dog, version, _topic, payload, _timestamp, _meta in rows:
            loads(payload)
            stream = f"certificate-{dog}"
            if stream in existing:
                store.read_payloads(stream)
            cause = f"school:{dog}@{version}"
            meta = dumps({"correlation_id": cause, "causation_id": cause})
            new.append((stream, 1, "certificate.Issued", dumps({"dog": dog}), moment, meta))
        store.append(new, tracking=("school", rows[-1][0], previous))
        return len(rows)

    def close(self) -> None:
        self.conn.close()


def _raw_leader(path: Path) -> tuple[RawStore, RawStore]:
    conn = connect(path)
    return RawStore(conn, "school").create(), RawStore(conn, "registry").create()


def _register(store: RawStore, count: int) -> None:
    rows = []
    streams = [str(uuid.uuid4()) for _ in range(count)]
    # as fes: one command reads its stream; a batch of them asks for their versions once
    existing = store.stream_versions(streams) if count > 1 else dict.fromkeys(streams)
    for stream in streams:
        if stream in existing:
            store.read_payloads(stream)
        payload = orjson.dumps({"name": "Fido"})
        rows.append((stream, 1, "dog.Registered", payload, now_micros(), None))
    store.append(rows)


def raw_live(directory: Path, n: int, per_commit: int = 1) -> float:
    path = directory / "raw.db"
    leader, _ = _raw_leader(path)
    follower = RawFollower(path)
    wake = threading.Condition()
    stop = threading.Event()
    failures: list[BaseException] = []

    def follow() -> None:
        try:
            while not stop.is_set():
                if not follower.step():
                    with wake:
                        wake.wait(1.0)
        except BaseException as error:
            failures.append(error)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        start = time.perf_counter()
        for done in range(0, n, per_commit):
            _register(leader, min(per_commit, n - done))
            with wake:
                wake.notify_all()
        last = leader.last_position()
        tracker = RawStore(connect(path), "registry")
        _until(lambda: tracker.last_tracked("school") >= last or bool(failures), "raw")
        elapsed = time.perf_counter() - start
        assert not failures, failures
        tracker.conn.close()
        return elapsed
    finally:
        stop.set()
        with wake:
            wake.notify_all()
        thread.join()
        follower.close()
        leader.conn.close()


def raw_catch_up(directory: Path, n: int) -> float:
    path = directory / "raw.db"
    leader, _ = _raw_leader(path)
    done = 0
    while done < n:
        _register(leader, min(BACKLOG_CHUNK, n - done))
        done += BACKLOG_CHUNK
    leader.conn.close()
    follower = RawFollower(path)
    try:
        start = time.perf_counter()
        while follower.step():
            pass
        return time.perf_counter() - start
    finally:
        follower.close()


def run(config: Config) -> Report:
    n = config.size(5_000, 200)
    runs = config.repeat(3, 1)
    report = Report("W4", f"{n:,} events through leader -> follower, with tracking (SQLite file)")
    per_commit = 50
    batched = f"live, {per_commit} events/commit"
    modes: dict[str, dict[str, Callable[[Path, int], float]]] = {
        "live, 1 event/commit": {FES: fes_live, ES: es_live, RAW: raw_live},
        batched: {
            FES: partial(fes_live, per_commit=per_commit),
            ES: partial(es_live, per_commit=per_commit),
            RAW: partial(raw_live, per_commit=per_commit),
        },
        "catch-up": {FES: fes_catch_up, ES: es_catch_up, RAW: raw_catch_up},
        # context: fes's follower in a thread of the leader's process
        f"{batched}, follower in a thread": {
            FES: partial(fes_live_threads, per_commit=per_commit)
        },
    }
    series = {
        (mode, name): report.add(f"{mode}: {name}", "events/s")
        for mode, contenders in modes.items()
        for name in contenders
    }
    for number in range(runs):
        for mode, contenders in modes.items():
            for name in rotated(list(contenders), number):
                with scratch("w4") as directory:
                    seconds = contenders[name](directory, n)
                series[(mode, name)].values.append(n / seconds)
    for mode in modes:
        if ES not in modes[mode]:
            continue
        fes_rate = series[(mode, FES)].median
        es_rate = series[(mode, ES)].median
        es_ratio = report.ratio(f"{mode}: fes / eventsourcing rate", fes_rate / es_rate)
        report.ratio(f"{mode}: fes / raw rate", fes_rate / series[(mode, RAW)].median)
        report.check(f"{mode}: fes / eventsourcing rate", es_ratio, 10.0, at_least=True)
    report.notes.append(
        "live, 1 event/commit: every upstream event is its own durable commit, so the "
        "leader alone is bound by the disk's flush (W1's rate): no runner can pass it"
    )
    report.notes.append(
        f"live, {per_commit} events/commit: the leader commits {per_commit} registrations "
        "at a time while the runner processes"
    )
    report.notes.append(
        "live: fes's follower runs in a worker process (ProcessRunner); each contender "
        "first handles one untimed event, so that fes's worker has started"
    )
    if config.profile:
        with scratch("w4-profile") as directory:
            url = fes_backlog(directory, n)
            with SyncRunner(SYSTEM, store=url) as runner:
                report.profile = profile_call(runner.run_until_quiet)
    return report
