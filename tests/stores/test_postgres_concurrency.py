"""PostgreSQL under many writers: threads and OS processes, races, and killed writers.

Writer processes come from a fork server that has already imported the
store, so they start in milliseconds; each opens its own PostgresDatabase and
shares nothing with the test process but the database.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from typing import Any

import pytest

from fes.edge.stores.base import NewEvent, StoredEvent
from fes.edge.stores.postgres import PostgresDatabase
from fes.errors import ConcurrencyError

pytestmark = pytest.mark.postgres

APP = "ledger"


def event(stream: str, version: int, payload: bytes = b"") -> NewEvent:
    return NewEvent(stream, version, "Happened", payload, 0)


_CONTEXT: ForkServerContext | None = None


def context() -> ForkServerContext:
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["fes.edge.stores.postgres", __name__])
    return _CONTEXT


def spawn(target: Callable[..., None], *args: Any) -> tuple[BaseProcess, Connection]:
    """Start ``target(pipe, *args)`` in a new process; return it and the pipe's other end.

    A pipe, not a Queue: a Queue's writers share a lock that a killed writer
    may hold forever, and send through a thread that may lag.
    """
    receiver, sender = context().Pipe(duplex=False)
    process = context().Process(target=target, args=(sender, *args), daemon=True)
    process.start()
    sender.close()
    return process, receiver


def receive(receiver: Connection) -> Any:
    assert receiver.poll(60), "the process said nothing"
    return receiver.recv()


def finish(process: BaseProcess, receiver: Connection) -> Any:
    result = receive(receiver)
    process.join(30)
    assert process.exitcode == 0
    return result


def follow(database: PostgresDatabase, done: threading.Event, seen: list[StoredEvent]) -> None:
    """Read the log as a runner would, until the writers are done and it is caught up."""
    store = database.store(APP)
    after = 0
    while True:
        finished = done.is_set()
        batch = store.read_log(after, limit=50)
        if batch:
            assert batch[0].position > after
            seen.extend(batch)
            after = batch[-1].position
        elif finished:
            return
        else:
            store.wait(after, 0.05)


def test_threads_and_processes_append_while_a_reader_follows(pg_url: str) -> None:
    """Three threads and three processes append; a follower sees each event once, in order."""
    appends = 60
    with PostgresDatabase(pg_url, pool_size=4) as database:
        store = database.store(APP)
        seen: list[StoredEvent] = []
        done = threading.Event()
        reader = threading.Thread(target=follow, args=(database, done, seen))
        reader.start()
        processes = [spawn(_append_main, pg_url, f"p{n}", appends) for n in range(3)]
        positions: list[int] = []
        lock = threading.Lock()

        def write(name: str) -> None:
            rng = random.Random(name)
            for i in range(appends):
                size = rng.randint(1, 3)
                got = store.append([event(f"{name}-{i}", v) for v in range(1, size + 1)])
                with lock:
                    positions.extend(got)

        threads = [threading.Thread(target=write, args=(f"t{n}",)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for process, queue in processes:
            positions.extend(finish(process, queue))
        done.set()
        reader.join(60)
        assert not reader.is_alive()

        log = store.read_log()
    followed = [e.position for e in seen]
    assert all(a < b for a, b in itertools.pairwise(followed))
    assert followed == [e.position for e in log] == sorted(positions)
    assert len(set(positions)) == len(positions)
    assert len({(e.stream, e.version) for e in log}) == len(log)
    assert {e.stream.split("-")[0] for e in log} == {"p0", "p1", "p2", "t0", "t1", "t2"}


def test_optimistic_race_across_processes_has_one_winner_per_version(pg_url: str) -> None:
    """Threads and processes racing on one stream: each version is won exactly once."""
    target = 40
    start = time.time() + 0.5  # processes need a moment to connect
    processes = [spawn(_race_main, pg_url, f"p{n}", target, start) for n in range(2)]
    wins: dict[str, list[int]] = {}
    conflicts: list[int] = []
    with PostgresDatabase(pg_url) as database:
        store = database.store(APP)

        def race(worker: str) -> None:
            won, lost = race_for(store, worker, target, start)
            wins[worker] = won
            conflicts.append(lost)

        threads = [threading.Thread(target=race, args=(f"t{n}",)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for n, (process, queue) in enumerate(processes):
            won, lost = finish(process, queue)
            wins[f"p{n}"] = won
            conflicts.append(lost)
        stream = store.read_stream("hot")
    claimed = sorted(v for won in wins.values() for v in won)
    assert claimed == list(range(1, target + 1))
    assert [e.version for e in stream] == claimed
    for e in stream:
        assert e.version in wins[e.payload.decode()]
    assert sum(conflicts) > 0, "the workers never raced"


def race_for(
    store: object, worker: str, target: int, start: float
) -> tuple[list[int], int]:
    """Append the next version of 'hot' until it reaches target; return wins and losses."""
    from fes.edge.stores.postgres import PostgresStore

    assert isinstance(store, PostgresStore)
    time.sleep(max(0.0, start - time.time()))
    won: list[int] = []
    lost = 0
    while (version := store.stream_version("hot")) < target:
        try:
            store.append([event("hot", version + 1, worker.encode())])
            won.append(version + 1)
        except ConcurrencyError as error:
            assert (error.stream, error.expected) == ("hot", version)
            assert error.actual > version
            lost += 1
    return won, lost


@pytest.mark.slow
def test_sigkilled_writers_never_leave_part_of_a_batch(pg_url: str) -> None:
    """Fifteen writers SIGKILLed mid-append, six surely between INSERT and COMMIT: no part-batch."""
    rng = random.Random(2024)
    streams, per_stream = 4, 60
    size = streams * per_stream
    # Nine writers killed at random moments, three at a time, while all append.
    for round_ in range(3):
        writers = [
            spawn(_forever_main, pg_url, f"r{round_}w{n}", streams, per_stream, False)
            for n in range(3)
        ]
        for _, pipe in writers:
            assert receive(pipe) == "ready"
        for writer, _ in writers:
            time.sleep(rng.uniform(0.01, 0.1))
            writer.kill()
        for writer, _ in writers:
            writer.join(30)
            assert writer.exitcode == -signal.SIGKILL
    # Six writers killed while their second batch is inserted but not committed:
    # each in turn takes the lock, inserts, says so, and waits to be killed.
    held = {
        f"h{n}": spawn(_forever_main, pg_url, f"h{n}", streams, per_stream, True)
        for n in range(6)
    }
    by_pipe = {pipe: name for name, (_, pipe) in held.items()}
    killed: list[str] = []
    while len(killed) < len(held):
        ready = wait([p for p, name in by_pipe.items() if name not in killed], timeout=60)
        assert ready, "no writer reached its COMMIT"
        for pipe in ready:
            assert isinstance(pipe, Connection)
            if receive(pipe) == "holding":
                writer = held[by_pipe[pipe]][0]
                writer.kill()
                writer.join(30)
                assert writer.exitcode == -signal.SIGKILL
                killed.append(by_pipe[pipe])

    with PostgresDatabase(pg_url, lock_timeout="5s") as database:
        store = database.store(APP)
        # No dead writer still holds the log lock: a new append goes through.
        (last,) = store.append([event("after-the-kills", 1)])
        log = store.read_log()
        for name in held:
            assert store.stream_version(f"{name}b0/s0") == per_stream
            assert store.stream_version(f"{name}b1/s0") == 0
    batches: dict[str, Counter[str]] = defaultdict(Counter)
    for e in log[:-1]:
        batch, _, stream = e.stream.rpartition("/")
        batches[batch][stream] += 1
    for batch, counts in batches.items():
        assert counts == {f"s{k}": per_stream for k in range(streams)}, batch
    # The held batches drew positions that no committed event has.
    assert last - len(log) >= len(held) * size


# Writer processes --------------------------------------------------------------------------


def _append_main(pipe: Connection, url: str, name: str, appends: int) -> None:
    rng = random.Random(name)
    positions: list[int] = []
    with PostgresDatabase(url, pool_size=1) as database:
        store = database.store(APP)
        for i in range(appends):
            size = rng.randint(1, 3)
            positions += store.append([event(f"{name}-{i}", v) for v in range(1, size + 1)])
    pipe.send(positions)


def _race_main(pipe: Connection, url: str, name: str, target: int, start: float) -> None:
    with PostgresDatabase(url, pool_size=1) as database:
        pipe.send(race_for(database.store(APP), name, target, start))


def _forever_main(
    pipe: Connection, url: str, name: str, streams: int, per_stream: int, hold: bool
) -> None:
    """Append batches of interleaved streams until killed; say 'ready' after the first.

    With ``hold``, the second batch stops between its INSERT and its COMMIT
    and says 'holding'.
    """
    with PostgresDatabase(url, pool_size=1, lock_timeout="60s") as database:
        store = database.store(APP)
        for n in range(10**9):
            batch = [
                event(f"{name}b{n}/s{k}", v, os.urandom(200))
                for v in range(1, per_stream + 1)
                for k in range(streams)
            ]
            if hold and n == 1:

                def wait_for_the_kill(conn: Any) -> None:
                    pipe.send("holding")
                    time.sleep(600)

                store._commit = wait_for_the_kill  # type: ignore[method-assign]
            store.append(batch)
            if n == 0:
                pipe.send("ready")
