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
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from typing import Any

import pytest

from fes.edge.stores import NewEvent, StoredEvent
from fes.edge.stores._postgres import PostgresDatabase
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
        _CONTEXT.set_forkserver_preload(["fes.edge.stores._postgres", __name__])
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
    """What ``process`` sent as its result, once it has exited cleanly."""
    outcome, result = receive(receiver)
    assert outcome == "ok", f"the process failed:\n{result}"
    process.join(30)
    assert process.exitcode == 0
    return result


def report(pipe: Connection, work: Callable[[], Any]) -> None:
    """Send ``("ok", work())``, or ``("error", traceback)`` if ``work`` raises."""
    try:
        result = work()
    except BaseException:
        pipe.send(("error", traceback.format_exc()))
        raise
    pipe.send(("ok", result))


def guarded(errors: list[str], work: Callable[..., None]) -> Callable[..., None]:
    """``work``, recording the traceback of anything it raises in ``errors``."""

    def run(*args: Any) -> None:
        try:
            work(*args)
        except BaseException:
            errors.append(traceback.format_exc())

    return run


LIMIT = 50


class Follower:
    """Reads the log as a runner would, until the writers are done and it is caught up.

    Besides the events, it keeps, for each read that returned events, whether
    ``done`` was still unset when the read returned, how many events it
    returned, and the last position among them.
    """

    def __init__(self, database: PostgresDatabase, done: threading.Event) -> None:
        self.store = database.store(APP)
        self.done = done
        self.seen: list[StoredEvent] = []
        self.reads: list[tuple[bool, int, int]] = []

    def __call__(self) -> None:
        after = 0
        while True:
            finished = self.done.is_set()
            batch = self.store.read_log(after, limit=LIMIT)
            if batch:
                self.reads.append((not self.done.is_set(), len(batch), batch[-1].position))
                assert batch[0].position > after
                self.seen.extend(batch)
                after = batch[-1].position
            elif finished:
                return
            else:
                self.store.wait(after, 0.05)

    def reads_while_writing(self, last: int) -> list[int]:
        """The last positions of reads that saw the whole log, before it reached ``last``.

        A read that returned fewer than LIMIT events saw every event committed
        then; if it ended below the final ``last``, some writer had yet to commit.
        """
        return [p for live, n, p in self.reads if live and n < LIMIT and p < last]


def sizes(name: str, appends: int) -> list[int]:
    """The sizes of the batches that writer ``name`` appends, one per stream."""
    rng = random.Random(name)
    return [rng.randint(1, 3) for _ in range(appends)]


def test_threads_and_processes_append_while_a_reader_follows(pg_url: str) -> None:
    """Three threads and three processes append all their batches; a follower reading as they
    write sees each event once, in order."""
    appends = 60
    errors: list[str] = []
    with PostgresDatabase(pg_url, pool_size=4) as database:
        store = database.store(APP)
        done = threading.Event()
        follower = Follower(database, done)
        reader = threading.Thread(target=guarded(errors, follower))
        reader.start()
        processes = [spawn(_append_main, pg_url, f"p{n}", appends) for n in range(3)]
        positions: list[int] = []
        lock = threading.Lock()

        def write(name: str) -> None:
            for i, size in enumerate(sizes(name, appends)):
                got = store.append([event(f"{name}-{i}", v) for v in range(1, size + 1)])
                with lock:
                    positions.extend(got)

        threads = [
            threading.Thread(target=guarded(errors, write), args=(f"t{n}",)) for n in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for process, queue in processes:
            positions.extend(finish(process, queue))
        done.set()
        reader.join(60)
        assert not any(t.is_alive() for t in [*threads, reader])
        assert errors == []

        log = store.read_log()
        last = store.last_position()
    expected = {
        f"{name}-{i}": size
        for name in ("p0", "p1", "p2", "t0", "t1", "t2")
        for i, size in enumerate(sizes(name, appends))
    }
    assert len(log) == len(positions) == sum(expected.values())
    assert Counter(e.stream for e in log) == expected
    followed = [e.position for e in follower.seen]
    assert all(a < b for a, b in itertools.pairwise(followed))
    assert followed == [e.position for e in log] == sorted(positions)
    assert last == log[-1].position
    assert len(set(positions)) == len(positions)
    assert len({(e.stream, e.version) for e in log}) == len(log)
    during = follower.reads_while_writing(last)
    assert len(during) >= 2, f"the follower read only after the writers: {follower.reads}"


def test_optimistic_race_across_processes_has_one_winner_per_version(pg_url: str) -> None:
    """Threads and processes racing on one stream all finish; each version is won exactly once,
    and each loss is a ConcurrencyError naming the stream and versions."""
    target = 40
    start = time.time() + 0.5  # processes need a moment to connect
    processes = [spawn(_race_main, pg_url, f"p{n}", target, start) for n in range(2)]
    wins: dict[str, list[int]] = {}
    conflicts: list[int] = []
    errors: list[str] = []
    with PostgresDatabase(pg_url) as database:
        store = database.store(APP)

        def race(worker: str) -> None:
            won, lost = race_for(store, worker, target, start)
            wins[worker] = won
            conflicts.append(lost)

        threads = [
            threading.Thread(target=guarded(errors, race), args=(f"t{n}",)) for n in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(t.is_alive() for t in threads)
        for n, (process, queue) in enumerate(processes):
            won, lost = finish(process, queue)
            wins[f"p{n}"] = won
            conflicts.append(lost)
        stream = store.read_stream("hot")
    assert errors == []
    assert sorted(wins) == ["p0", "p1", "t0", "t1", "t2"]
    assert len(conflicts) == 5
    assert sum(len(won) for won in wins.values()) == target
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
    from fes.edge.stores._postgres import PostgresStore

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
    def work() -> list[int]:
        positions: list[int] = []
        with PostgresDatabase(url, pool_size=1) as database:
            store = database.store(APP)
            for i, size in enumerate(sizes(name, appends)):
                positions += store.append([event(f"{name}-{i}", v) for v in range(1, size + 1)])
        return positions

    report(pipe, work)


def _race_main(pipe: Connection, url: str, name: str, target: int, start: float) -> None:
    def work() -> tuple[list[int], int]:
        with PostgresDatabase(url, pool_size=1) as database:
            return race_for(database.store(APP), name, target, start)

    report(pipe, work)


def _forever_main(
    pipe: Connection, url: str, name: str, streams: int, per_stream: int, hold: bool
) -> None:
    """Append batches of interleaved streams until killed; say 'ready' after the first.

    With ``hold``, the second batch stops between its INSERT and its COMMIT
    and says 'holding'.  That replaces the store's private ``_commit``: the
    kill must land before COMMIT is sent, in the client, and a server-side
    pause (a trigger) would run only after COMMIT was sent, when the server
    goes on to commit whatever becomes of the client.
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
