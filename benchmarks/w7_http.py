"""W7: the W4 pipeline with the leader behind the HTTP log (``fes serve``).

The leader registers dogs; the follower issues one certificate per upstream
event, recorded with its tracking position.  The follower runs in a process
of its own in every arrangement, and steps as a runner does (``step``, then
``wait`` on the leader's store for up to 1 s when there is nothing new):

- *one database*: leader and follower in one SQLite file; the follower
  reads the leader's log from that file (the W4 layout);
- *two files*: the follower in a file of its own, reading the leader's file
  directly (context: what the second database costs alone);
- *HTTP*: the follower in a file of its own, reading the leader's log from
  ``fes serve`` (a subprocess, bearer token, loopback) with long polls.

Live: the leader registers ``n`` dogs, 1 or 50 per commit, timed from the
first command until the follower has tracked the last event; each live
event's lag is the follower's event's recorded timestamp minus the upstream
event's (both taken from the wall clock just before their commits, in one
machine).  Catch-up: a backlog of 20,000 events first (5,000 drain in a
quarter of a second, too short to time well), then the follower, already
started and connected, is let go and timed until it has tracked the last.

CPU time is this process's ``process_time`` plus the follower's process,
plus, over HTTP, the ``fes serve`` process (user and system time from
``/proc``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from fes.edge import Application
from fes.edge._follower import Follower
from fes.edge.stores import open_database
from fes.errors import FesError
from fes.examples.dogs import dogs, register

from .common import Config, Report, rotated, scratch
from .domains import REGISTRY, SCHOOL
from .w4_pipeline import Clock

__all__ = ["run"]

ONE = "one database"
TWO = "two files"
HTTP = "HTTP leader"
_SPAWN = multiprocessing.get_context("spawn")
_TOKEN = "w7-benchmark-token"
DEADLINE = 600.0

Timed = tuple[float, float, list[float]]  # wall s, CPU s, lags in ms


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _follow(leader_url: str, follower_url: str, ready: Any, go: Any, stop: Any) -> None:
    """In a process of its own: the registry follows the school, as a runner's thread does."""
    sink = Application(REGISTRY, store=follower_url)
    if leader_url == follower_url:
        reader = Application(SCHOOL, store=sink.database)  # one database, shared
    elif leader_url.startswith("http"):
        reader = Application(SCHOOL, store=open_database(leader_url, token=_TOKEN))
    else:
        reader = Application(SCHOOL, store=leader_url)
    follower = Follower(sink, {"school": reader})
    ready.set()
    go.wait()
    backoff = 0.0
    while not stop.is_set():
        try:
            if not follower.step("school"):
                reader.store.wait(follower.positions["school"], 1.0)
            backoff = 0.0
        except FesError:
            # as a runner does: a store that failed (SQLite's write lock held past its
            # busy timeout, a leader away) is tried again after a growing pause
            backoff = min(max(backoff * 2, 0.05), 5.0)
            stop.wait(backoff)


class Serving:
    """``fes serve`` of the school's log, in a subprocess."""

    def __init__(self, leader_url: str) -> None:
        port = _free_port()
        env = {**os.environ, "FES_SERVE_TOKEN": _TOKEN}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fes.edge._cli", "serve", "--store", leader_url,
             "--app", "school", "--port", str(port)],
            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )
        assert self.process.stderr is not None
        line = self.process.stderr.readline()
        if "fes: serving" not in line:
            raise RuntimeError(f"fes serve did not start: {line}")
        # keep reading its stderr, so that a full pipe never blocks it
        threading.Thread(target=self.process.stderr.read, daemon=True).start()
        self.url = f"http://127.0.0.1:{port}"

    def close(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(30)


def _until(done: Callable[[], bool], child: Any) -> None:
    deadline = time.monotonic() + DEADLINE
    while not done():
        if time.monotonic() > deadline or not child.is_alive():
            raise RuntimeError("the follower did not finish (or its process died)")
        time.sleep(0.001)


def _lead(leader: Application, n: int, per_commit: int) -> None:
    new_id = leader.new_id
    if per_commit == 1:
        for _ in range(n):
            leader.execute(dogs, new_id(), register, "Fido")
        return
    for done in range(0, n, per_commit):
        batch = leader.batch()
        ids = [new_id() for _ in range(min(per_commit, n - done))]
        batch.prefetch(ids)
        for stream in ids:
            batch.execute(dogs, stream, register, "Fido")
        leader.commit(batch)


def _lags(leader: Application, follower_url: str, after: int) -> list[float]:
    """Milliseconds from each upstream event's timestamp to its certificate's."""
    upstream = {row.stream: row.timestamp for row in leader.store.read_log(after)}
    with open_database(follower_url) as database:
        rows = database.store("registry").read_log(0)
    return [
        (row.timestamp - upstream[row.stream.removeprefix("certificate-")]) / 1000
        for row in rows
        if row.stream.removeprefix("certificate-") in upstream
    ]


def pipeline(directory: Path, n: int, arrangement: str, per_commit: int | None) -> Timed:
    """One run: live at ``per_commit`` events a commit, or catching up (None)."""
    leader_url = f"sqlite:///{directory}/school.db"
    follower_url = leader_url if arrangement == ONE else f"sqlite:///{directory}/registry.db"
    with Application(SCHOOL, store=leader_url) as leader:
        warm = 1
        leader.execute(dogs, leader.new_id(), register, "Fido")  # the tables, and one untimed event
        if per_commit is None:
            _lead(leader, n, 500)
            warm = 0
        serving = Serving(leader_url) if arrangement == HTTP else None
        source = serving.url if serving is not None else leader_url
        ready, go, stop = _SPAWN.Event(), _SPAWN.Event(), _SPAWN.Event()
        child = _SPAWN.Process(target=_follow, args=(source, follower_url, ready, go, stop),
                               daemon=True)
        try:
            child.start()
            if not ready.wait(60):
                raise RuntimeError("the follower process did not start")
            if per_commit is not None:
                go.set()
            tracker = open_database(follower_url)
            tracked = tracker.store("registry")
            if per_commit is not None:
                _until(lambda: tracked.last_tracked("school") >= 1, child)
            pids = [p for p in (serving.process.pid if serving else None,) if p]
            clock = Clock(lambda: [*pids, *([child.pid] if child.pid else [])])
            clock.start()
            if per_commit is None:
                go.set()
            else:
                _lead(leader, n, per_commit)
            last = leader.store.last_position()
            _until(lambda: tracked.last_tracked("school") >= last, child)
            wall, cpu = clock.stop()
            tracker.close()
            lags = _lags(leader, follower_url, warm) if per_commit is not None else []
            return wall, cpu, lags
        finally:
            stop.set()
            go.set()
            child.join(30)
            if serving is not None:
                serving.close()


def _p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100)[98]


def run(config: Config) -> Report:
    n = config.size(5_000, 300)
    # a backlog of 5,000 drains in a quarter of a second: too short to time well
    backlog = config.size(20_000, 1_000)
    runs = config.repeat(3, 1)
    report = Report(
        "W7",
        f"{n:,} events live (a backlog of {backlog:,} catching up) through leader -> "
        "follower, the leader behind HTTP",
    )
    modes: dict[str, int | None] = {
        "live, 1 event/commit": 1,
        "live, 50 events/commit": 50,
        "catch-up": None,
    }
    arrangements = [ONE, TWO, HTTP]
    rate = {
        (mode, a): report.add(f"{mode}: {a}, wall-clock rate", "events/s")
        for mode in modes for a in arrangements
    }
    cpu = {
        (mode, a): report.add(f"{mode}: {a}, CPU per event", "us", higher_is_better=False)
        for mode in modes for a in arrangements
    }
    lags: dict[tuple[str, str], list[float]] = {
        (mode, a): [] for mode, size in modes.items() if size for a in arrangements
    }
    for number in range(runs):
        for mode, size in modes.items():
            for arrangement in rotated(arrangements, number):
                count = n if size else backlog
                with scratch("w7") as directory:
                    wall, seconds, found = partial(pipeline, per_commit=size)(
                        directory, count, arrangement
                    )
                rate[(mode, arrangement)].values.append(count / wall)
                cpu[(mode, arrangement)].values.append(seconds / count * 1e6)
                if size:
                    lags[(mode, arrangement)].extend(found)
    for (mode, arrangement), values in lags.items():
        median = report.add(f"{mode}: {arrangement}, median lag", "ms", higher_is_better=False)
        p99 = report.add(f"{mode}: {arrangement}, p99 lag", "ms", higher_is_better=False)
        median.values.append(statistics.median(values) if values else float("nan"))
        p99.values.append(_p99(values))
    for mode in modes:
        base = rate[(mode, ONE)].median
        http = report.ratio(f"{mode}: HTTP / one database rate", rate[(mode, HTTP)].median / base)
        report.ratio(f"{mode}: two files / one database rate", rate[(mode, TWO)].median / base)
        report.ratio(
            f"{mode}: CPU per event, HTTP / one database",
            cpu[(mode, HTTP)].median / cpu[(mode, ONE)].median,
        )
        report.check(f"{mode}: HTTP / one database rate", http, 0.5, at_least=True)
    report.notes.append(
        "every follower runs in a spawned process of its own and steps as a runner thread "
        "does (step, then wait up to 1 s on the leader's store; a store error is tried "
        "again after a growing pause); over HTTP the wait is a "
        "long poll to fes serve (a subprocess, token, loopback, uvicorn with h11)"
    )
    report.notes.append(
        "lag: the follower's event's recorded timestamp minus the upstream event's, over "
        "every live event of every run"
    )
    report.notes.append(
        "CPU per event: this process, the follower's process and, over HTTP, fes serve's "
        "(/proc, clock ticks)"
    )
    return report
