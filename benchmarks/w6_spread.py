"""W6: W4's pipeline with the leader and the follower in two databases, beside one database.

The same leader → follower pipeline as W4 (:mod:`benchmarks.w4_pipeline`):
the leader registers dogs, the follower's policy issues one certificate per
upstream event and records it with its tracking position.  Two contenders
per store kind, side by side in one run, taking turns:

- *one database*: both applications' tables in one SQLite file, or in one
  database of one PostgreSQL server (W4's arrangement);
- *spread*: the leader in one SQLite file and the follower in another, or
  the leader in a database of PostgreSQL server A and the follower in a
  database of server B (two clusters, two ports).  The follower reads the
  leader's log from the leader's database and commits its certificates with
  its tracking position in its own, in one transaction.

Both run W4's in-process arrangement: a :class:`~fes.edge.ThreadedRunner`
given ``{"school": url_a, "registry": url_b}`` (or one URL), whose leader
application executes the commands in this process while the follower's
thread processes.  A waiting follower sleeps in the leader store's
``wait``: the leader writes through the same open database, which wakes it
at once (SQLite: a condition variable; PostgreSQL: LISTEN/NOTIFY on the
leader's database).  Appends from elsewhere (another process, another
connection) are seen by polling: SQLite's store looks every 20 ms.  The
*tail* rows measure what waking costs: the milliseconds from the leader's
last commit until the follower has tracked it.

Modes, as W4's: live at 1 event per commit and 50 per commit (timed from
the first command until the follower tracked the last event), and catching
up (a backlog written first, untimed, then a :class:`~fes.edge.SyncRunner`
processes it).  Same batch size (fes's default), same durability (SQLite
``synchronous=FULL``; PostgreSQL ``PgServer(durable=True)``, ``fsync=on``).

A flush on the machine these figures come from costs 0.1 ms or 4 ms from
one moment to the next, so the two contenders do not run one after the
other: both pipelines are open at once and take turns, a tenth of the
events at a time, in an order that rotates (as W1's contenders do).  A
contender's rate is its events over the sum of its turns' times.

CPU: ``time.process_time`` of this process (the leader, the follower and
their drivers are all here); for PostgreSQL also the servers' CPU (the
postmasters and their children, from ``/proc``, at the clock tick's
resolution), summed over both servers when spread.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

from fes.edge import Application, Runner, SyncRunner, ThreadedRunner
from fes.edge._follower import DEFAULT_BATCH_SIZE
from fes.examples.dogs import dogs, register

from .common import Config, Report, rotated, scratch
from .domains import SCHOOL, SYSTEM
from .w4_pipeline import BACKLOG_CHUNK, DEADLINE, Clock, _fes_lead, cpu_of
from .w5_postgres import _pg_server, _Server

__all__ = ["run"]

ONE = "one database"
SPREAD = "spread"
SQLITE = "SQLite"
POSTGRES = "PostgreSQL"
TARGET = 0.8
PER_COMMIT = 50
WARM_UP = 100
#: Catching up processes this many times n events.
CATCH_UP_FACTOR = 4
#: Each contender's events go through in this many turns (chunks).
TURNS = 10
#: The context mode: the leader on a connection of its own, the follower woken by polling.
POLLED = "live, 1 event/commit, leader on its own connection"

#: A store argument for a runner: one URL, or a URL per application.
Store = str | dict[str, str]


class Measured:
    """One timed pass: wall and CPU seconds, the servers' CPU, and the tail."""

    def __init__(
        self, events: int, wall: float, cpu: float, server_cpu: float, tail: float
    ) -> None:
        self.events, self.wall, self.cpu = events, wall, cpu
        self.server_cpu, self.tail = server_cpu, tail


# --- where the applications live -------------------------------------------------


class Stores:
    """Makes a fresh (leader URL, runner's store) pair for a contender, and reads CPU."""

    kind: str

    def fresh(self, spread: bool) -> tuple[str, Store]:
        raise NotImplementedError

    def server_pids(self) -> list[int]:
        return []

    def close(self) -> None:
        """Remove what ``fresh`` made."""


class SQLiteStores(Stores):
    kind = SQLITE

    def __init__(self) -> None:
        self._scratch = scratch("w6")
        self.directory = self._scratch.__enter__()
        self._count = 0

    def fresh(self, spread: bool) -> tuple[str, Store]:
        self._count += 1
        base = self.directory / str(self._count)
        base.mkdir()
        if not spread:
            url = f"sqlite:///{base}/fes.db"
            return url, url
        leader = f"sqlite:///{base}/school.db"
        return leader, {"school": leader, "registry": f"sqlite:///{base}/registry.db"}

    def close(self) -> None:
        self._scratch.__exit__(None, None, None)


def _children(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(entry))
    return found


def _postmaster(server: _Server) -> int:
    data: Path = server.data_dir  # type: ignore[attr-defined]
    return int((data / "postmaster.pid").read_text().split()[0])


class PostgresStores(Stores):
    """Two durable throwaway servers: the leader on A, the follower on A or on B."""

    kind = POSTGRES

    def __init__(self) -> None:
        self.a = _pg_server(durable=True)
        self.b = _pg_server(durable=True)
        self.a.start()
        try:
            self.b.start()
        except BaseException:
            self.a.stop()
            raise
        self.postmasters = [_postmaster(self.a), _postmaster(self.b)]
        self._count = 0

    def fresh(self, spread: bool) -> tuple[str, Store]:
        self._count += 1
        if not spread:
            url = self.a.create_database(f"w6_one_{self._count}")
            return url, url
        leader = self.a.create_database(f"w6_school_{self._count}")
        follower = self.b.create_database(f"w6_registry_{self._count}")
        return leader, {"school": leader, "registry": follower}

    def server_pids(self) -> list[int]:
        # both servers, whichever holds what: an idle server costs next to nothing
        return [pid for master in self.postmasters for pid in (master, *_children(master))]

    def close(self) -> None:
        self.b.stop()
        self.a.stop()


# --- the passes ------------------------------------------------------------------


@contextmanager
def _clocks(
    stores: Stores, probe: Probe | None = None
) -> Iterator[Callable[[], tuple[float, float, float]]]:
    """Starts this process's clock and the servers'; yields what stops them."""
    client = Clock()
    pids = stores.server_pids()
    before = {pid: cpu_of(pid) for pid in pids}
    client.start()
    if probe is not None:
        probe.start()

    def stop() -> tuple[float, float, float]:
        wall, cpu = client.stop()
        if probe is not None:
            probe.stop()
        # a backend that exits in between drops out; one that starts counts in full
        after = {pid: cpu_of(pid) for pid in stores.server_pids()}
        server = sum(used - before.get(pid, 0.0) for pid, used in after.items())
        return wall, cpu, server

    yield stop


def _tracked(runner: Runner, n: int) -> None:
    """Wait until the follower has committed its ``n`` certificates (so tracked them all).

    It sleeps in the follower store's ``wait``, woken by the follower's own
    commits, rather than asking the database every millisecond, as W4 does:
    on PostgreSQL that polling cost this process and the server about as
    much CPU as the pipeline itself.
    """
    store = runner.app("registry").store
    deadline = time.monotonic() + DEADLINE
    while (seen := store.last_position()) < n:
        if runner.errors:
            raise RuntimeError(f"the follower stopped: {runner.errors}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the follower did not finish in {DEADLINE} s")
        store.wait(seen, 0.1)


#: A contender's open pipeline: ``chunk(k)`` runs ``k`` more events through it, timed.
Chunk = Callable[[int], Measured]


@contextmanager
def live(
    stores: Stores,
    spread: bool,
    per_commit: int,
    *,
    own_connection: bool = False,
    probe: Probe | None = None,
) -> Iterator[Chunk]:
    """The follower in a thread of the leader's process (W4's in-process arrangement).

    Each chunk: the leader executes its commands, then the follower is
    waited for until it has tracked them all.  With ``own_connection`` the
    leader writes through a database of its own (as another process would),
    so its appends do not wake the follower's thread: an SQLite follower
    sees them when it next polls.
    """
    leader_url, store = stores.fresh(spread)
    with contextlib.ExitStack() as stack:
        runner = stack.enter_context(contextlib.closing(ThreadedRunner(SYSTEM, store)))
        if probe is not None:
            probe.attach(runner, lambda: threading.current_thread().name.startswith("fes "))
        runner.start()
        leader = runner.app("school")
        if own_connection:
            leader = stack.enter_context(Application(SCHOOL, store=leader_url))
            assert leader.database is not runner.app("school").database
        follower = runner.app("registry").store
        if spread:
            assert runner.app("school").database is not runner.app("registry").database
        total = 0

        def chunk(k: int) -> Measured:
            nonlocal total
            with _clocks(stores, probe) as stop:
                _fes_lead(leader, k, per_commit)
                written = time.perf_counter()
                total += k
                _tracked(runner, total)
                done = time.perf_counter()
                wall, cpu, server = stop()
            return Measured(k, wall, cpu, server, done - written)

        yield chunk
        assert not runner.errors, runner.errors
        assert follower.last_position() == total
        assert follower.last_tracked("school") == leader.store.last_position() == total


@contextmanager
def catch_up(
    stores: Stores, spread: bool, n: int, *, probe: Probe | None = None
) -> Iterator[Chunk]:
    """A backlog of ``n`` upstream events written first (untimed), then a SyncRunner.

    Each chunk steps the runner (a batch of notifications a step) until it
    has consumed at least ``k`` more events, or all of them.
    """
    leader_url, store = stores.fresh(spread)
    with Application(SCHOOL, store=leader_url) as leader:
        done = 0
        while done < n:
            batch = leader.batch()
            for _ in range(min(BACKLOG_CHUNK, n - done)):
                batch.execute(dogs, leader.new_id(), register, "Fido")
            leader.commit(batch)
            done += BACKLOG_CHUNK
    with SyncRunner(SYSTEM, store) as runner:
        if probe is not None:
            probe.attach(runner, lambda: True)

        def chunk(k: int) -> Measured:
            consumed = 0
            with _clocks(stores, probe) as stop:
                while consumed < k and (moved := runner.step()):
                    consumed += moved
                wall, cpu, server = stop()
            return Measured(consumed, wall, cpu, server, 0.0)

        yield chunk
        assert not runner.errors, runner.errors
        assert runner.app("registry").store.last_position() == n


class Totals:
    """A contender's sums over its chunks."""

    def __init__(self) -> None:
        self.events = 0
        self.wall = self.cpu = self.server_cpu = 0.0
        self.tails: list[float] = []

    def add(self, found: Measured) -> None:
        self.events += found.events
        self.wall += found.wall
        self.cpu += found.cpu
        self.server_cpu += found.server_cpu
        self.tails.append(found.tail)


def taking_turns(
    pipelines: dict[str, Callable[[], contextlib.AbstractContextManager[Chunk]]],
    total: int,
    size: int,
    turn: int,
) -> dict[str, Totals]:
    """Open every contender's pipeline, then run ``total`` events through each, ``size`` a turn.

    The contenders take turns, chunk by chunk, in an order that rotates, so
    that the disk's moods (a flush costs 0.1 to 7 ms from one minute to the
    next here) and other jobs' bursts fall on all of them alike.  A first
    chunk of ``WARM_UP`` events through each is not counted: connections,
    prepared statements, the first writes to fresh tables.
    """
    found = {name: Totals() for name in pipelines}
    with contextlib.ExitStack() as stack:
        chunks = {name: stack.enter_context(open_()) for name, open_ in pipelines.items()}
        for chunk in chunks.values():
            chunk(WARM_UP)
        left = dict.fromkeys(chunks, total)
        while any(left.values()):
            for name in rotated(list(chunks), turn):
                if left[name]:
                    measured = chunks[name](min(size, left[name]))
                    if not measured.events:
                        raise RuntimeError(f"{name}: {left[name]} events never came through")
                    left[name] -= min(measured.events, left[name])
                    found[name].add(measured)
            turn += 1
    return found


# --- where the follower's time goes (--profile) -----------------------------------

WAIT = "wait for the leader (woken or polling)"
#: The follower's calls the probe times, by the phase they belong to.
PHASES: dict[str, tuple[str, str]] = {
    "read the leader's log (leader's database)": ("school", "read_log"),
    WAIT: ("school", "wait"),
    "read its tracking position (own database)": ("registry", "last_tracked"),
    "read its streams' versions (own database)": ("registry", "stream_versions"),
    "commit events + tracking (own database)": ("registry", "append"),
}


class Probe:
    """Wall time the follower spends in each of its store calls, and in ``step`` overall.

    It wraps methods of the runner's store objects and its follower (instance
    attributes: the stores are shared with the leader, so only calls made
    where ``counting()`` holds, the follower's thread, are counted).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys([*PHASES, "step"], 0.0)
        self.calls: dict[str, int] = dict.fromkeys([*PHASES, "step"], 0)
        self.timing = False
        self.window = 0
        self.ends: dict[int, float] = {}

    def start(self) -> None:
        self.window += 1
        self.timing = True

    def stop(self) -> None:
        self.ends[self.window] = time.perf_counter()
        self.timing = False

    def _wrap(self, owner: Any, method: str, phase: str, counting: Callable[[], bool]) -> None:
        inner = getattr(owner, method)
        seconds, calls, clock = self.seconds, self.calls, time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            if not (self.timing and counting()):
                return inner(*args, **kwargs)
            start, window = clock(), self.window
            try:
                return inner(*args, **kwargs)
            finally:
                # only what falls in the timed window (the last wait outlasts it)
                end = min(clock(), self.ends.get(window, float("inf")))
                seconds[phase] += max(end - start, 0.0)
                calls[phase] += 1

        setattr(owner, method, timed)

    def attach(self, runner: Runner, counting: Callable[[], bool]) -> None:
        for phase, (app, method) in PHASES.items():
            self._wrap(runner.app(app).store, method, phase, counting)
        self._wrap(runner.followers["registry"], "step", "step", counting)

    def render(self, title: str, events: int) -> list[str]:
        step = self.seconds["step"]
        inside = sum(self.seconds[p] for p in PHASES if p != WAIT)  # waits come between steps
        lines = [f"{title}: {events:,} events, {self.calls['step']:,} follower steps"]
        for phase in PHASES:
            lines.append(
                f"  {phase:<46} {self.seconds[phase] * 1e3:9.1f} ms  "
                f"{self.seconds[phase] / events * 1e6:8.1f} us/event  x{self.calls[phase]}"
            )
        lines.append(
            f"  {'rest of step (decode, policy, encode: Python)':<46} "
            f"{(step - inside) * 1e3:9.1f} ms  {(step - inside) / events * 1e6:8.1f} us/event"
        )
        return lines


def profile(stores: dict[str, Stores], n: int) -> str:
    """A probed pass of both contenders, taking turns: live (50 per commit) and catching up."""
    lines = ["    where the follower's wall time goes (a probed pass, contenders taking turns):"]
    for kind, opened in stores.items():
        for mode, spec in _modes(n).items():
            if mode not in (f"live, {PER_COMMIT} events/commit", "catch-up"):
                continue
            probes = {ONE: Probe(), SPREAD: Probe()}
            found = taking_turns(
                {
                    name: partial(spec.open, opened, name == SPREAD, probes[name])
                    for name in probes
                },
                spec.total,
                spec.size,
                0,
            )
            for name, probe in probes.items():
                lines += probe.render(f"{kind}, {mode}, {name}", found[name].events)
    return "\n".join(lines[:1] + ["      " + line for line in lines[1:]])


# --- the workload ----------------------------------------------------------------


class Mode(NamedTuple):
    """``total`` events through each contender, ``size`` a turn; ``open`` makes a pipeline."""

    total: int
    size: int
    open: Callable[[Stores, bool, Probe | None], contextlib.AbstractContextManager[Chunk]]


def _modes(n: int) -> dict[str, Mode]:
    backlog = n * CATCH_UP_FACTOR
    return {
        "live, 1 event/commit": Mode(
            n, n // TURNS, lambda s, spread, probe: live(s, spread, 1, probe=probe)
        ),
        f"live, {PER_COMMIT} events/commit": Mode(
            n, n // TURNS, lambda s, spread, probe: live(s, spread, PER_COMMIT, probe=probe)
        ),
        # catching up is fast: a longer backlog times steadier.  The untimed first
        # chunk takes one whole batch (a step reads DEFAULT_BATCH_SIZE notifications).
        "catch-up": Mode(
            backlog,
            backlog // TURNS,
            lambda s, spread, probe: catch_up(
                s, spread, backlog + DEFAULT_BATCH_SIZE, probe=probe
            ),
        ),
        POLLED: Mode(
            n // 5,
            n // 20,
            lambda s, spread, probe: live(s, spread, 1, own_connection=True, probe=probe),
        ),
    }


def run(config: Config) -> Report:
    n = config.size(5_000, 200)
    runs = config.repeat(3, 1)
    report = Report(
        "W6",
        f"{n:,} events live ({n * CATCH_UP_FACTOR:,} catching up) through leader -> "
        "follower: two databases (spread) vs one (SQLite files; PostgreSQL servers)",
    )
    modes = _modes(n)
    contenders = {ONE: False, SPREAD: True}
    kinds = (SQLITE, POSTGRES)
    rate, cpu, server, tail = {}, {}, {}, {}
    for kind in kinds:
        for mode in modes:
            for name in contenders:
                key = (kind, mode, name)
                prefix = f"{kind}, {mode}: {name}"
                rate[key] = report.add(f"{prefix}, wall-clock rate", "events/s")
                cpu[key] = report.add(
                    f"{prefix}, CPU per event (this process)", "us", higher_is_better=False
                )
                if kind == POSTGRES:
                    server[key] = report.add(
                        f"{prefix}, CPU per event (servers)", "us", higher_is_better=False
                    )
                if mode != "catch-up":
                    tail[key] = report.add(
                        f"{prefix}, tail (last commit -> tracked, median of turns)", "ms",
                        higher_is_better=False,
                    )
    opened: dict[str, Stores] = {}
    try:
        opened[SQLITE] = SQLiteStores()
        opened[POSTGRES] = PostgresStores()
        for number in range(runs):
            for kind in kinds:
                for mode, spec in modes.items():
                    found = taking_turns(
                        {
                            name: partial(spec.open, opened[kind], spread, None)
                            for name, spread in contenders.items()
                        },
                        spec.total,
                        spec.size,
                        number,
                    )
                    for name, totals in found.items():
                        key = (kind, mode, name)
                        rate[key].values.append(totals.events / totals.wall)
                        cpu[key].values.append(totals.cpu / totals.events * 1e6)
                        if key in server:
                            server[key].values.append(totals.server_cpu / totals.events * 1e6)
                        if key in tail:
                            tail[key].values.append(statistics.median(totals.tails) * 1000)
        if config.profile:
            report.profile = profile(opened, n)
    finally:
        for stores in opened.values():
            stores.close()
    for kind in kinds:
        for mode in modes:
            one, spread = (kind, mode, ONE), (kind, mode, SPREAD)
            ratio = rate[spread].median / rate[one].median
            if mode == POLLED:  # context: how the wake-up, not the placement, costs
                report.ratio(f"{kind}, {mode}: spread / one database rate", ratio)
            else:
                report.check(f"{kind}, {mode}: spread / one database rate", ratio, TARGET,
                             at_least=True)
            report.ratio(
                f"{kind}, {mode}: CPU per event (this process), spread / one database",
                cpu[spread].median / cpu[one].median,
            )
            if one in server:
                report.ratio(
                    f"{kind}, {mode}: CPU per event (servers), spread / one database",
                    server[spread].median / server[one].median,
                )
    report.notes.append(
        "both contenders: a ThreadedRunner (live) or SyncRunner (catch-up) in this process, "
        "fes's default batch size; the leader executes its commands here (W4's in-process "
        f"arrangement); live at 1 event per commit and {PER_COMMIT} per commit"
    )
    report.notes.append(
        "SQLite: one file vs two files (school.db, registry.db), synchronous=FULL; "
        "PostgreSQL: one database on server A vs the leader on server A and the follower "
        "on server B, both PgServer(durable=True) (fsync=on)"
    )
    report.notes.append(
        "tail: from the leader's last commit until the follower tracked it; the leader "
        "writes through the runner's own database, which wakes the follower at once "
        f"(no poll interval), except in '{POLLED}' ({n // 5:,} events, context, no target): "
        "there the leader has a database object of its own, as another process would, and "
        "an SQLite follower sees its appends when it next polls (every 20 ms); a "
        "PostgreSQL follower is still woken by NOTIFY"
    )
    report.notes.append(
        "CPU per event (this process): process_time (leader, follower, all threads); "
        "(servers): user + system time of both postmasters and their children, /proc"
    )
    return report
