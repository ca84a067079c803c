"""W4: events through a leader → follower pipeline, with tracking, in SQLite.

The leader registers dogs; the follower's policy issues one certificate (one
new event, in a new stream) per upstream event and records it together with
its tracking position.

- live: the leader registers the dogs, one command (one commit) at a time or
  50 per commit, while the runner processes; timed from the first command
  until the follower has tracked the last upstream event.
- catch-up: a backlog of upstream events is written first (not timed),
  then the runner processes it all: 20,000 events, five times (live: 5,000,
  three times).

Live is reported in two arrangements, like for like:

- *follower in the leader's process*: fes's :class:`~fes.edge.ThreadedRunner`
  (a thread); eventsourcing's ``SingleThreadedRunner`` (the leader's thread,
  right after each save); raw sqlite3 in a thread woken after each commit.
- *follower in its own process*: fes's :class:`~fes.edge.ProcessRunner`, as
  ``fes run`` deploys it beside a web process; eventsourcing's ``Registry``
  in a process of its own calling ``pull_and_process`` in a loop; raw
  sqlite3's follower in a process of its own.  The last two poll every
  millisecond when they find nothing new.

Catching up, fes runs a :class:`~fes.edge.SyncRunner`, eventsourcing
``pull_and_process``, raw its follower step in a loop.  fes keeps both apps'
tables in one file; eventsourcing one file per application (its SQLite
tables are not named per application).  Raw sqlite3 does fes's SQL by hand,
reading the log as many notifications at a time as fes (its default batch).

CPU time is ``time.process_time`` of the benchmark's process, plus, when the
follower has its own process, that process's user and system time read
from ``/proc`` (at the clock tick's resolution).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from eventsourcing.system import SingleThreadedRunner
from eventsourcing.system import System as EsSystem

from fes import Emit, Recorded
from fes.edge import Application, ProcessRunner, Runner, SyncRunner, ThreadedRunner
from fes.edge._follower import DEFAULT_BATCH_SIZE
from fes.edge.stores import open_database
from fes.examples.dogs import Registered, dogs, register, registered

from .common import ES, FES, RAW, Config, Report, profile_call, rotated, scratch
from .domains import (
    SCHOOL,
    SYSTEM,
    DogSchool,
    EsDog,
    Registry,
    issue_certificate,
    issued,
    sqlite_env,
)
from .raw import RawStore, connect, new_stream_id, now_micros

__all__ = ["run"]

Timed = tuple[float, float]  # wall seconds, CPU seconds
_SPAWN = multiprocessing.get_context("spawn")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_of(pid: int) -> float:
    """Seconds of CPU (user and system) process ``pid`` has used, from /proc; 0 elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


class Clock:
    """Wall and CPU time from ``start()``: this process's, plus given child processes'."""

    def __init__(self, pids: Callable[[], list[int]] = list) -> None:
        self.pids = pids

    def start(self) -> None:
        # The garbage of the set-up (the backlog written, the other contenders'
        # runs) is collected now, not in whichever timed window it would fall.
        gc.collect()
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.children = sum(cpu_of(pid) for pid in self.pids())

    def stop(self) -> Timed:
        cpu = time.process_time() - self.cpu
        cpu += sum(cpu_of(pid) for pid in self.pids()) - self.children
        return time.perf_counter() - self.wall, cpu

BACKLOG_CHUNK = 500
#: The backlog each contender catches up on, and how many times.
CATCH_UP_EVENTS, CATCH_UP_RUNS = 20_000, 7
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


def _fes_timed(
    leader: Application, runner: Runner, n: int, per_commit: int, clock: Clock
) -> Timed:
    """Times from the leader's first command until the follower tracked its last event."""
    follower = runner.app("registry").store
    clock.start()
    _fes_lead(leader, n, per_commit)
    last = leader.store.last_position()
    _until(lambda: follower.last_tracked("school") >= last or bool(runner.errors), "fes")
    elapsed = clock.stop()
    assert not runner.errors, runner.errors
    return elapsed


def fes_live(directory: Path, n: int, per_commit: int = 1) -> Timed:
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
        clock = Clock(lambda: list(runner.pids().values()))
        elapsed = _fes_timed(leader, runner, n, per_commit, clock)
        assert follower.last_position() == n + 1
        return elapsed


def fes_live_threads(directory: Path, n: int, per_commit: int = 1) -> Timed:
    """The follower in a thread of the leader's process (a ThreadedRunner)."""
    database = open_database(f"sqlite:///{directory}/fes.db")
    runner = ThreadedRunner(SYSTEM, store=database)
    try:
        leader = runner.app("school")
        follower = runner.app("registry").store
        runner.start()
        elapsed = _fes_timed(leader, runner, n, per_commit, Clock())
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


def fes_catch_up(directory: Path, n: int) -> Timed:
    url = fes_backlog(directory, n)
    with SyncRunner(SYSTEM, store=url) as runner:
        clock = Clock()
        clock.start()
        runner.run_until_quiet()
        elapsed = clock.stop()
        assert runner.app("registry").store.last_position() == n
        return elapsed


# --- eventsourcing ----------------------------------------------------------------


def _es_env(directory: Path) -> dict[str, str]:
    return sqlite_env(
        DogSchool=str(directory / "es-school.db"), Registry=str(directory / "es-registry.db")
    )


def es_live(directory: Path, n: int, per_commit: int = 1) -> Timed:
    runner = SingleThreadedRunner(ES_SYSTEM, env=_es_env(directory))  # type: ignore[var-annotated]
    runner.start()
    try:
        leader = runner.get(DogSchool)
        follower = runner.get(Registry)
        save = leader.save
        save(EsDog("Fido"))  # one untimed event, as fes's worker process gets
        clock = Clock()
        clock.start()
        for done in range(0, n, per_commit):
            save(*[EsDog("Fido") for _ in range(min(per_commit, n - done))])
        last = leader.recorder.max_notification_id()
        _until(lambda: follower.recorder.max_tracking_id("DogSchool") == last, "eventsourcing")
        return clock.stop()
    finally:
        runner.stop()


def _es_follow(env: dict[str, str], ready: Any, stop: Any) -> None:
    """In a process of its own: eventsourcing's Registry pulls and processes in a loop."""
    runner = SingleThreadedRunner(ES_SYSTEM, env=env)  # type: ignore[var-annotated]
    runner.start()
    try:
        follower = runner.get(Registry)
        ready.set()
        while not stop.is_set():
            before = follower.recorder.max_tracking_id("DogSchool")
            follower.pull_and_process("DogSchool")
            if follower.recorder.max_tracking_id("DogSchool") == before:
                time.sleep(0.001)
    finally:
        runner.stop()


def es_live_process(directory: Path, n: int, per_commit: int = 1) -> Timed:
    """eventsourcing's follower in a process of its own, polling the leader's log."""
    env = _es_env(directory)
    leader = DogSchool(env=env)
    leader.save(EsDog("Fido"))  # one untimed event, as fes's worker process gets
    ready, stop = _SPAWN.Event(), _SPAWN.Event()
    child = _SPAWN.Process(target=_es_follow, args=(env, ready, stop), daemon=True)
    child.start()
    tracker = Registry(env=env)
    try:
        if not ready.wait(60):
            raise RuntimeError("eventsourcing's follower process did not start")
        _until(lambda: tracker.recorder.max_tracking_id("DogSchool") == 1, "eventsourcing")
        assert child.pid is not None
        pid = child.pid
        clock = Clock(lambda: [pid])
        clock.start()
        for done in range(0, n, per_commit):
            leader.save(*[EsDog("Fido") for _ in range(min(per_commit, n - done))])
        last = leader.recorder.max_notification_id()
        _until(lambda: tracker.recorder.max_tracking_id("DogSchool") == last, "eventsourcing")
        return clock.stop()
    finally:
        stop.set()
        child.join(30)
        tracker.close()
        leader.close()


def es_catch_up(directory: Path, n: int) -> Timed:
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
        clock = Clock()
        clock.start()
        follower.pull_and_process("DogSchool")
        elapsed = clock.stop()
        assert follower.recorder.max_tracking_id("DogSchool") == last
        return elapsed
    finally:
        runner.stop()


# --- raw sqlite3 ----------------------------------------------------------------


class RawFollower:
    """fes's follower step by hand: read a batch of the log, write, track.

    As fes's follower does, it asks the store for its tracked position once
    and then keeps the one its own commits leave, and it reads nothing of
    the streams it writes: every certificate's stream is new, and its
    version 1 is inserted as is (the unique (stream, version) would refuse
    a clash, and the transaction with it).
    """

    def __init__(self, path: Path, writer: threading.Lock | None = None) -> None:
        self.conn = connect(path)
        self.leader = RawStore(self.conn, "school")
        self.store = RawStore(self.conn, "registry", writer)
        self.previous: int | None = None

    def tracked(self) -> int:
        if self.previous is None:
            self.previous = self.store.last_tracked("school")
        return self.previous

    def step(self) -> int:
        store, dumps, loads = self.store, orjson.dumps, orjson.loads
        previous = self.tracked()
        rows = self.leader.read_log(previous, DEFAULT_BATCH_SIZE)
        if not rows:
            return 0
        moment = now_micros()
        new = []
        for _position, dog, version, _topic, payload, _timestamp, _meta in rows:
            loads(payload)
            cause = f"school:{dog}@{version}"
            meta = dumps({"correlation_id": cause, "causation_id": cause})
            new.append(
                (f"certificate-{dog}", 1, "certificate.Issued", dumps({"dog": dog}), moment, meta)
            )
        store.append(new, tracking=("school", rows[-1][0], previous))
        self.previous = rows[-1][0]
        return len(rows)

    def close(self) -> None:
        self.conn.close()


class DomainRawFollower(RawFollower):
    """The raw follower building the domain's objects by hand: a context floor.

    Each notification is decoded into its event (``Registered(**payload)``)
    in the envelope the policy takes (a :class:`fes.Recorded`), the
    benchmark's own policy is called, and each event it emits is folded by
    the aggregate's projector (``issued``) and encoded: what any library
    running this domain's policy must spend at least, with no checks and no
    dispatch.  The SQL is :class:`RawFollower`'s.
    """

    def step(self) -> int:
        store, dumps, loads = self.store, orjson.dumps, orjson.loads
        previous = self.tracked()
        rows = self.leader.read_log(previous, DEFAULT_BATCH_SIZE)
        if not rows:
            return 0
        moment = now_micros()
        plans = []
        for position, dog, version, topic, payload, timestamp, _meta in rows:
            event = Registered(**loads(payload))
            at = datetime.fromtimestamp(timestamp / 1e6, UTC)
            recorded = Recorded(event, dog, version, position, at, topic)
            plans.append((recorded, issue_certificate(recorded)))
        new = []
        for recorded, intents in plans:
            cause = f"school:{recorded.stream}@{recorded.version}"
            meta = dumps({"correlation_id": cause, "causation_id": cause})
            for intent in intents:
                assert isinstance(intent, Emit)
                state = None
                for issue in intent.events:
                    state = issued(state, issue)
                    payload = dumps({"dog": issue.dog})
                    new.append((intent.stream, 1, "certificate.Issued", payload, moment, meta))
        store.append(new, tracking=("school", rows[-1][0], previous))
        self.previous = rows[-1][0]
        return len(rows)


def _raw_leader(path: Path, writer: threading.Lock | None = None) -> tuple[RawStore, RawStore]:
    conn = connect(path)
    return RawStore(conn, "school", writer).create(), RawStore(conn, "registry").create()


def _register(store: RawStore, count: int, domain: bool = False) -> None:
    """Register ``count`` dogs in one commit (with ``domain``, calling the domain by hand).

    ``domain`` adds what W1's by-hand floor adds: the ``register`` command
    and the ``registered`` projector called directly, the payload encoded
    from the event they made.
    """
    rows = []
    streams = [new_stream_id() for _ in range(count)]
    # as fes: a command on an id new_id() minted reads nothing (the unique (stream,
    # version) refuses a clash); a batch of them asks for their versions once
    existing = store.stream_versions(streams) if count > 1 else {}
    for stream in streams:
        if stream in existing:
            store.read_payloads(stream)
        if domain:
            (event,) = register(None, "Fido")
            registered(None, event)
            payload = orjson.dumps({"name": event.name})
        else:
            payload = orjson.dumps({"name": "Fido"})
        rows.append((stream, 1, "dog.Registered", payload, now_micros(), None))
    store.append(rows)


def raw_live(
    directory: Path, n: int, per_commit: int = 1, *, shared_lock: bool = True,
    domain: bool = False,
) -> Timed:
    """The follower in a thread; the two threads' writes queue on one lock, as fes's do.

    Without ``shared_lock`` (a context row) they queue on SQLite's busy
    handler, which sleeps 1, 2, 5 ms… between tries: the leader's thread,
    holding the GIL, nearly always wins, and the follower commits a handful
    of batches of hundreds of events.  With ``domain`` (a context row) the
    leader and the follower call the domain's functions by hand
    (:func:`_register`, :class:`DomainRawFollower`).
    """
    path = directory / "raw.db"
    writer = threading.Lock() if shared_lock else None
    leader, _ = _raw_leader(path, writer)
    follower = (DomainRawFollower if domain else RawFollower)(path, writer)
    wake = threading.Condition()
    commits = [0]  # the leader's commits, counted under ``wake``
    stop = threading.Event()
    failures: list[BaseException] = []

    def follow() -> None:
        # as fes's wait: sleep only if the leader committed nothing since the step
        # looked, or a commit between the look and the sleep would wake nobody
        try:
            while not stop.is_set():
                seen = commits[0]
                if not follower.step():
                    with wake:
                        if commits[0] == seen and not stop.is_set():
                            wake.wait(1.0)
        except BaseException as error:
            failures.append(error)

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    try:
        clock = Clock()
        clock.start()
        for done in range(0, n, per_commit):
            _register(leader, min(per_commit, n - done), domain)
            with wake:
                commits[0] += 1
                wake.notify_all()
        last = leader.last_position()
        tracker = RawStore(connect(path), "registry")
        _until(lambda: tracker.last_tracked("school") >= last or bool(failures), "raw")
        elapsed = clock.stop()
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


def _raw_follow(path: Path, ready: Any, stop: Any, domain: bool = False) -> None:
    """In a process of its own: raw sqlite3's follower steps, polling every millisecond."""
    follower = (DomainRawFollower if domain else RawFollower)(path)
    try:
        ready.set()
        while not stop.is_set():
            if not follower.step():
                time.sleep(0.001)
    finally:
        follower.close()


def raw_live_process(
    directory: Path, n: int, per_commit: int = 1, *, domain: bool = False
) -> Timed:
    """Raw sqlite3's follower in a process of its own (``domain``: see :func:`raw_live`)."""
    path = directory / "raw.db"
    leader, _ = _raw_leader(path)
    ready, stop = _SPAWN.Event(), _SPAWN.Event()
    child = _SPAWN.Process(target=_raw_follow, args=(path, ready, stop, domain), daemon=True)
    child.start()
    tracker = RawStore(connect(path), "registry")
    try:
        if not ready.wait(60):
            raise RuntimeError("raw follower process did not start")
        _register(leader, 1)  # one untimed event, as fes's worker process gets
        _until(lambda: tracker.last_tracked("school") >= 1 or not child.is_alive(), "raw")
        assert child.pid is not None
        pid = child.pid
        clock = Clock(lambda: [pid])
        clock.start()
        for done in range(0, n, per_commit):
            _register(leader, min(per_commit, n - done), domain)
        last = leader.last_position()
        _until(lambda: tracker.last_tracked("school") >= last or not child.is_alive(), "raw")
        elapsed = clock.stop()
        assert child.is_alive(), "the raw follower process died"
        return elapsed
    finally:
        stop.set()
        child.join(30)
        tracker.conn.close()
        leader.conn.close()


def raw_catch_up(directory: Path, n: int, *, domain: bool = False) -> Timed:
    """Raw sqlite3 catching up (with ``domain``, :class:`DomainRawFollower`'s step)."""
    path = directory / "raw.db"
    leader, _ = _raw_leader(path)
    done = 0
    while done < n:
        _register(leader, min(BACKLOG_CHUNK, n - done))
        done += BACKLOG_CHUNK
    leader.conn.close()
    follower = DomainRawFollower(path) if domain else RawFollower(path)
    try:
        clock = Clock()
        clock.start()
        while follower.step():
            pass
        return clock.stop()
    finally:
        follower.close()


IN_PROCESS = "follower in the leader's process"
OWN_PROCESS = "follower in its own process"
#: The in-process raw follower as the benchmark had it before: its writes and the
#: leader's queue on SQLite's busy handler (a context row, not a floor).
RAW_BUSY = "raw sqlite3, busy handler (context)"
#: The raw follower building the domain's objects and calling its policy, and live,
#: the raw leader calling the domain's command and projector (a context row).
RAW_DOMAIN = "raw sqlite3, with the domain's objects (context)"


def follower_commits(directory: Path) -> int | None:
    """How many transactions the follower committed: one timestamp per commit (fes, raw)."""
    for name in ("fes.db", "raw.db"):
        path = directory / name
        if path.exists():
            conn = sqlite3.connect(path)
            try:
                row = conn.execute(
                    "SELECT count(DISTINCT timestamp) FROM registry_events"
                ).fetchone()
            finally:
                conn.close()
            return int(row[0])
    return None


def run(config: Config) -> Report:
    n = config.size(5_000, 200)
    runs = config.repeat(5, 1)  # live: one run swings by up to a sixth
    # A follower catches up on 5,000 events in a tenth of a second, a window one
    # hiccup of the machine's can swing by half: catching up is timed on a longer
    # backlog, more times.
    backlog = config.size(CATCH_UP_EVENTS, 200)
    catch_up_runs = config.repeat(CATCH_UP_RUNS, 1)
    report = Report(
        "W4",
        f"{n:,} events through leader -> follower live, {backlog:,} caught up on, "
        "with tracking (SQLite file)",
    )
    per_commit = 50
    modes: dict[str, dict[str, Callable[[Path, int], Timed]]] = {}
    for size in (1, per_commit):
        label = "1 event/commit" if size == 1 else f"{size} events/commit"
        modes[f"live, {label}, {IN_PROCESS}"] = {
            FES: partial(fes_live_threads, per_commit=size),
            ES: partial(es_live, per_commit=size),
            RAW: partial(raw_live, per_commit=size),
            RAW_BUSY: partial(raw_live, per_commit=size, shared_lock=False),
            RAW_DOMAIN: partial(raw_live, per_commit=size, domain=True),
        }
        modes[f"live, {label}, {OWN_PROCESS}"] = {
            FES: partial(fes_live, per_commit=size),
            ES: partial(es_live_process, per_commit=size),
            RAW: partial(raw_live_process, per_commit=size),
            RAW_DOMAIN: partial(raw_live_process, per_commit=size, domain=True),
        }
    modes["catch-up"] = {
        FES: fes_catch_up, ES: es_catch_up, RAW: raw_catch_up,
        RAW_DOMAIN: partial(raw_catch_up, domain=True),
    }
    series = {
        (mode, name): report.add(f"{mode}: {name}, wall-clock rate", "events/s")
        for mode, contenders in modes.items()
        for name in contenders
    }
    cpu = {
        (mode, name): report.add(
            f"{mode}: {name}, CPU per event", "us", higher_is_better=False
        )
        for mode, contenders in modes.items()
        for name in contenders
    }
    commits = {
        (mode, name): report.add(
            f"{mode}: {name}, follower transactions", "commits", higher_is_better=False
        )
        for mode, contenders in modes.items()
        if mode.startswith("live")
        for name in contenders
        if name != ES
    }
    for number in range(max(runs, catch_up_runs)):
        for mode, contenders in modes.items():
            size = backlog if mode == "catch-up" else n
            if number >= (catch_up_runs if mode == "catch-up" else runs):
                continue
            for name in rotated(list(contenders), number):
                with scratch("w4") as directory:
                    seconds, cpu_seconds = contenders[name](directory, size)
                    if (mode, name) in commits:
                        count = follower_commits(directory)
                        assert count is not None, f"no follower table for {name}"
                        commits[(mode, name)].values.append(count)
                series[(mode, name)].values.append(size / seconds)
                cpu[(mode, name)].values.append(cpu_seconds / size * 1e6)
    for mode in modes:
        fes_rate = series[(mode, FES)].median
        es_rate = series[(mode, ES)].median
        raw_ratio = report.ratio(f"{mode}: fes / raw rate", fes_rate / series[(mode, RAW)].median)
        report.ratio(f"{mode}: fes / eventsourcing rate", fes_rate / es_rate)
        report.ratio(
            f"{mode}: CPU per event, fes / raw",
            cpu[(mode, FES)].median / cpu[(mode, RAW)].median,
        )
        report.ratio(
            f"{mode}: CPU per event, eventsourcing / raw",
            cpu[(mode, ES)].median / cpu[(mode, RAW)].median,
        )
        if (mode, RAW_DOMAIN) in series:
            floor = series[(mode, RAW_DOMAIN)].median
            report.ratio(f"{mode}: {RAW_DOMAIN} / raw rate", floor / series[(mode, RAW)].median)
            report.ratio(f"{mode}: fes / {RAW_DOMAIN} rate", fes_rate / floor)
            report.ratio(
                f"{mode}: CPU per event, fes / {RAW_DOMAIN}",
                cpu[(mode, FES)].median / cpu[(mode, RAW_DOMAIN)].median,
            )
        if (mode, RAW_BUSY) in series:
            report.ratio(
                f"{mode}: fes / {RAW_BUSY} rate", fes_rate / series[(mode, RAW_BUSY)].median
            )
        report.check(
            f"{mode}: fes / raw rate", raw_ratio, 0.5 if mode == "catch-up" else 0.7,
            at_least=True,
        )
    report.notes.append(
        "live, 1 event/commit: every upstream event is its own durable commit, so the "
        "leader alone is bound by the disk's flush (W1's rate): no runner can pass it"
    )
    report.notes.append(
        f"live, {per_commit} events/commit: the leader commits {per_commit} registrations "
        "at a time while the runner processes"
    )
    report.notes.append(
        f"{IN_PROCESS}: fes ThreadedRunner (a thread), eventsourcing SingleThreadedRunner "
        f"(the leader's thread), raw a thread woken after each commit; {OWN_PROCESS}: fes "
        "ProcessRunner, eventsourcing and raw a spawned process polling every 1 ms when idle; "
        "each contender first handles one untimed event there, so that the process has started"
    )
    report.notes.append(
        f"{IN_PROCESS}: the raw leader's and follower's writes queue on one Python lock, as "
        "fes's queue on its database's writer lock; in the context row they queue on "
        "SQLite's busy handler, which starves the follower, then lets it commit hundreds "
        "at a time (see the follower transactions rows: one timestamp per commit)"
    )
    report.notes.append(
        f"live, {RAW_DOMAIN}: the raw leader also calls register() and registered() by "
        "hand (W1's floor) and the raw follower builds the domain's objects and calls the "
        "policy (catch-up's): the least any library spends on this pipeline, in each "
        "arrangement"
    )
    report.notes.append(
        "CPU per event: process_time of this process, plus the follower process's user and "
        "system time (/proc, clock ticks) when it has its own"
    )
    if config.profile:
        with scratch("w4-profile") as directory:
            url = fes_backlog(directory, n)
            with SyncRunner(SYSTEM, store=url) as runner:
                report.profile = profile_call(runner.run_until_quiet)
    return report
