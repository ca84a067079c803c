"""Helpers shared by the runner tests: feeding inputs and reading effects back."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest

from fes.edge import Application, Follower, ProcessRunner
from fes.edge.stores import Database
from fes.edge.stores._sqlite._connections import Connections
from fes.system import System
from system import domain


def serve(app: Application, counts: Sequence[int], *, prefix: str = "ball") -> None:
    """Serve one ball per count in ``left``, all in one transaction."""
    batch = app.batch()
    for index, count in enumerate(counts):
        batch.emit(domain.ball, f"{prefix}-{index}", [domain.Served(count)])
    app.commit(batch)


def send(app: Application, numbers: Iterable[int], *, poison: Iterable[int] = ()) -> None:
    """Send one message per number from ``source``, in one transaction."""
    bad = set(poison)
    batch = app.batch()
    for number in numbers:
        batch.emit(domain.messages, f"m-{number}", [domain.Sent(number, number in bad)])
    app.commit(batch)


def causes(app: Application) -> Counter[str]:
    """How many events of ``app`` each upstream event caused, by causation id."""
    return Counter(
        r.metadata.causation_id for r in app.log() if r.metadata.causation_id is not None
    )


def assert_exactly_once(follower: Application, leader: Application, *, expected: set[str]) -> None:
    """Each id in ``expected`` (``leader:stream@version``) caused exactly one event."""
    found = {c: n for c, n in causes(follower).items() if c.startswith(f"{leader.name}:")}
    duplicates = {c: n for c, n in found.items() if n > 1}
    assert not duplicates, f"upstream events with more than one effect: {duplicates}"
    missing = expected - set(found)
    assert not missing, f"upstream events with no effect: {sorted(missing)[:10]}"
    extra = set(found) - expected
    assert not extra, f"effects of unexpected events: {sorted(extra)[:10]}"


def dump(database: Database, system: System) -> dict[str, Any]:
    """What a system's store holds, as comparable data independent of interleaving.

    Per application and stream: the events' topics and payloads, and the
    causation ids, each as a sorted list; per follower, whether it tracked
    all of each leader's log; and each log's length.
    """
    result: dict[str, Any] = {}
    for app in system.apps:
        store = database.store(app.name)
        rows = store.read_log(0)
        streams: dict[str, list[Any]] = {}
        application = Application(app, store=database)
        for row in rows:
            recorded = application.recorded(row)
            entry = streams.setdefault(row.stream, [[], []])
            entry[0].append((row.topic, row.payload))
            entry[1].append(recorded.metadata.causation_id or "")
        result[app.name] = {
            "events": len(rows),
            "streams": {k: (sorted(v[0]), sorted(v[1])) for k, v in sorted(streams.items())},
            "caught up": {
                leader: store.last_tracked(leader) == database.store(leader).last_position()
                for leader in system.leaders(app.name)
            },
        }
    return result


def kill_while_flowing(
    url: str, *, share: int, kills: int, mid_flight: int, chunk: int, seed: int,
    max_kills: int, time_limit: float,
) -> tuple[int, int]:
    """Kill the sink's worker while events flow until enough kills land mid-flight; drain; check.

    Kills go on until there were at least ``kills`` and at least
    ``mid_flight`` of them landed while the worker still had work in hand:
    how often a kill at a random moment finds work in hand depends on the
    machine's load, so a fixed number of kills would prove less on a busy
    machine.  More than ``max_kills`` kills or ``time_limit`` seconds fail
    the test.  The writer may run ``share`` events ahead per kill, so events
    keep flowing through every one.  Then every event sent must have had
    exactly one effect.  Returns (kills made, kills that landed mid-flight).
    """
    chance = random.Random(seed)
    with ProcessRunner("system.domain:fixed_pipeline", url, batch_size=7,
                       poll_interval=0.05) as runner:
        source = runner.app("source")
        sink_store = runner.app("sink").store
        budget = threading.Condition()
        allowed = [share]
        finished = [False]
        sent = [0]

        def write() -> None:
            first = 0
            while True:
                with budget:
                    budget.wait_for(lambda start=first: allowed[0] > start or finished[0])
                    if allowed[0] <= first:
                        break
                    last = min(first + chunk, allowed[0])
                send(source, range(first, last))
                first = sent[0] = last
                time.sleep(chance.uniform(0.0, 0.01))

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        made = landed = 0
        started = time.monotonic()
        while made < kills or landed < mid_flight:
            elapsed = time.monotonic() - started
            assert made < max_kills and elapsed < time_limit, (
                f"only {landed} of {made} kills in {elapsed:.0f} s landed while the worker "
                f"had work in hand, and the test needs {mid_flight}: without them it has not "
                "exercised a crash in the middle of the worker's work"
            )
            before = sink_store.last_tracked("source")
            deadline = time.monotonic() + 30
            # wait until the (restarted) worker makes progress, then kill it soon after
            while sink_store.last_tracked("source") == before:
                assert time.monotonic() < deadline, "the worker made no progress"
                time.sleep(0.002)
            time.sleep(chance.uniform(0.0, 0.005))
            # prefer a moment with work in hand (a fast worker often has none),
            # but kill within 50 ms whatever it is doing
            settle = time.monotonic() + 0.05
            while (
                sink_store.last_tracked("source") >= source.store.last_position()
                and time.monotonic() < settle
            ):
                time.sleep(0.0005)
            (pid,) = runner.pids().values()
            if sink_store.last_tracked("source") < source.store.last_position():
                landed += 1
            os.kill(pid, signal.SIGKILL)
            made += 1
            while runner.pids().get(("sink",)) == pid:
                time.sleep(0.002)
            with budget:
                allowed[0] += share
                budget.notify_all()
        with budget:
            finished[0] = True
            budget.notify_all()
        writer.join(60)
        assert not writer.is_alive()
        events = sent[0]
        assert runner.wait_until_quiet(timeout=60)
        assert runner.restarts == made
        assert_exactly_once(runner.app("sink"), source,
                            expected={f"source:m-{n}@1" for n in range(events)})
        assert len(runner.app("sink").log()) == events
    return made, landed


def own_log(app: Application) -> list[Any]:
    """An application's log without fes's own records (skips, stops)."""
    return [r for r in app.log() if not r.topic.startswith("fes.")]


# --- a follower queueing for SQLite's writer lock (see test_runner_late.py) ---------


def queued_for_writer(database: Connections, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set when a thread asks for the writer lock through ``hold``."""
    asked = threading.Event()
    real = database.hold

    def hold(timeout: float) -> Any:
        asked.set()
        return real(timeout)

    monkeypatch.setattr(database, "hold", hold)
    return asked


def step_while_queued(
    database: Connections,
    monkeypatch: pytest.MonkeyPatch,
    follower: Follower,
    meanwhile: Callable[[], object],
) -> int:
    """One step of ``follower`` that queues for the writer while ``meanwhile`` runs."""
    held = database.hold(10)
    assert held is not None
    asked = queued_for_writer(database, monkeypatch)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(follower.step("source")))
    thread.start()
    try:
        assert asked.wait(10), "the follower did not queue for the writer lock"
        meanwhile()
    finally:
        database.unhold(held)
        thread.join(10)
    assert not thread.is_alive()
    return result[0]


def run_until_stopped(
    url: str, system: str, app: str, *options: str, linger: float = 0.0,
    path: Sequence[str] = (), before_signal: Callable[[], object] | None = None,
) -> tuple[int, str]:
    """Start `fes run SYSTEM`, wait for a stop record in ``app``'s store, SIGTERM it.

    The record must come within 30 s, with the process still serving (it
    goes on after a stop).  ``linger`` seconds pass between the record and
    the signal (time for retries, were the stop retried), then
    ``before_signal`` is called.  Returns the exit code and stderr.  The
    process imports this fes, first, the tests' systems, then ``path``.
    """
    import subprocess
    import sys
    from pathlib import Path

    import fes
    from fes.edge import open_database
    from fes.edge._skips import STOPS_STREAM

    here = str(Path(fes.__file__).resolve().parents[1])
    tests = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([here, tests, *path])}
    process = subprocess.Popen(
        [sys.executable, "-m", "fes.edge._cli", "run", system,
         "--store", url, "--poll-interval", "0.05", *options],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        with open_database(url) as database:
            store = database.store(app)
            deadline = time.monotonic() + 30
            while store.stream_version(STOPS_STREAM) == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert store.stream_version(STOPS_STREAM) > 0, "no stop was recorded within 30 s"
        assert process.poll() is None, "fes run ended at the stop; it should go on serving"
        time.sleep(linger)
        if before_signal is not None:
            before_signal()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return process.returncode, err
