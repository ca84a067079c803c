"""Running a system's applications in separate OS processes.

A :class:`ProcessRunner` starts worker processes (with ``multiprocessing``'s
*spawn* method, so nothing is inherited but arguments); each opens the
database from its URL and runs a :class:`fes.edge.ThreadedRunner`
for the applications it was given.  Over PostgreSQL the workers are woken
by LISTEN/NOTIFY; over an SQLite file they poll for each other's commits.
The runner's ``poll_interval`` and the store URL's bound their waits as a
:class:`fes.edge.ThreadedRunner`'s.  A memory database cannot be shared
by processes and is refused.

The runner supervises its workers: one that dies (killed, crashed) is
started again, and resumes after the last position its followers tracked.
A worker watches its supervisor in turn: once the supervisor is gone (even
killed by SIGKILL, which it cannot catch), the worker, looking every 50 ms,
finishes the batch in hand and exits, so no orphan keeps running.
Because each batch is recorded with its tracking position in one
transaction, a worker killed at any moment has either recorded a batch
whole or not at all.  On :meth:`ProcessRunner.stop` (or SIGINT/SIGTERM in a
worker) each worker finishes the batch in hand, then exits.

Each worker reports to its supervisor through a pipe of its own, not a
``multiprocessing.Queue``: a pipe needs no named semaphore, so a supervisor
killed by SIGKILL leaves none behind (multiprocessing's resource tracker,
which outlives it by the moments its workers take to exit, has nothing to
clean up and nothing to warn about); and a worker killed while writing
holds no lock that another worker would wait for, for ever, as it exits.

The same command on several hosts, each with ``--apps`` naming the
applications it runs, spreads one system over a cluster sharing one
PostgreSQL database.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Collection, Mapping
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from types import FrameType
from typing import Any, Self

from fes.errors import ConfigurationError, PolicyError, ViewError
from fes.system import System

from ._follower import DEFAULT_BATCH_SIZE
from ._loading import load_system
from ._placement import placement_urls
from ._runners import DEFAULT_POLL_INTERVAL, Runner, ThreadedRunner

__all__ = ["ProcessRunner"]

logger = logging.getLogger("fes.processes")

_SPAWN = multiprocessing.get_context("spawn")


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a RuntimeError carrying its text."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def _worker(
    spec: System | str,
    url: str | dict[str, str],
    apps: tuple[str, ...],
    settings: Mapping[str, Any],
    reports: Connection,
    supervisor: int,
) -> None:
    """The body of a worker process: run ``apps`` until SIGTERM, SIGINT or its supervisor dies.

    A supervisor killed by SIGKILL cannot tell its workers; each worker
    watches its parent process instead, and once ``supervisor`` is no longer
    its parent (it was re-parented), finishes the batch in hand and exits.
    ``reports`` is the write end of this worker's pipe to its supervisor:
    each follower stopped by a policy error is sent once.
    """
    stop = threading.Event()

    def on_signal(number: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.WARNING, format=f"fes worker {os.getpid()} %(levelname)s: %(message)s"
        )
        # as in `fes run`: fes reports a store's failures once; the pool's retries are noise
        logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    system = load_system(spec) if isinstance(spec, str) else spec
    if os.getppid() != supervisor:
        return  # the supervisor died while this worker was starting
    runner = ThreadedRunner(system, url, apps=apps, **settings)
    reported: set[str] = set()

    def report() -> None:
        for name, error in runner.errors.items():
            if name not in reported:
                reported.add(name)
                # the supervisor holds the only read end: once it is gone this
                # fails at once (no one is left to tell) rather than blocking
                with contextlib.suppress(OSError):
                    reports.send((
                        name, error.leader, error.position, _portable(error.error),
                        error.traceback,
                    ))

    try:
        runner.start()
        while not stop.wait(0.05):
            if os.getppid() != supervisor:
                logging.getLogger("fes.processes").error(
                    "the supervisor (pid %d) of this worker died; stopping", supervisor
                )
                break
            report()
    finally:
        runner.stop()
        # a follower may have stopped since the last look: the supervisor's exit
        # code and log must still say so
        report()
        runner.close()


class ProcessRunner(Runner):
    """Runs a system's followers and views in ``processes`` OS processes.

    ``system`` is a :class:`fes.System` (pickled to each worker: its
    functions must be importable by name, which rules out aggregates made
    with :func:`fes.projector`; refused at once if it cannot be) or ``"module:attribute"``
    (imported by each worker).  ``processes`` defaults to one per
    application with work (a policy or views), and one per partition of a
    partitioned application; with fewer, they are dealt out round-robin.
    ``restart`` starts a worker again when it dies.
    ``store`` is a URL, a mapping from application names (and ``"*"``) to
    URLs, or None (the environment's, as for every runner): workers open
    the databases themselves, so open databases and ``memory://`` are
    refused.  The runner itself is a :class:`Runner` on the same
    databases, so :meth:`app`, :meth:`lags` and :meth:`wait_until_quiet`
    work here.
    """

    def __init__(
        self,
        system: System | str,
        store: str | Mapping[str, str] | None,
        *,
        processes: int | None = None,
        apps: Collection[str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        restart: bool = True,
        **options: Any,
    ) -> None:
        resolved = load_system(system) if isinstance(system, str) else system
        if store is not None and not isinstance(store, str | Mapping):
            raise ConfigurationError(
                "a ProcessRunner needs store URLs that workers can open, not an open database"
            )
        # None: from the environment, like every runner; "" is refused
        urls = placement_urls(store, (a.name for a in resolved.apps), options.get("env"))
        shared = sorted(name for name, url in urls.items() if url.lower().startswith("memory:"))
        if shared:
            raise ConfigurationError(
                "memory:// lives in one process and cannot be shared by worker processes "
                f"(the store of {', '.join(map(repr, shared))}); "
                "use sqlite:///path.db or postgresql://…"
            )
        if not isinstance(system, str):
            try:  # found now, not as a worker that dies and is restarted for ever
                pickle.dumps(system)
            except Exception as error:
                raise ConfigurationError(
                    "this System cannot be sent to worker processes "
                    f"({type(error).__name__}: {error}); pass it by name instead, as "
                    "'module:attribute', so that each worker imports it"
                ) from None
        if processes is not None and processes < 1:
            raise ConfigurationError(f"processes must be at least 1, got {processes}")
        # workers get the URLs, so that each opens what it needs the same way
        places: str | dict[str, str] = (
            next(iter(urls.values()))
            if len(set(urls.values())) == 1 and len(urls) == len(resolved.apps)
            else dict(urls)
        )
        super().__init__(
            resolved, places, apps=apps, batch_size=batch_size, poll_interval=poll_interval,
            **options,
        )
        self.spec = system
        #: Each application's store URL; ``url``, the one URL when they share one (else None).
        self.urls = urls
        self.url = places if isinstance(places, str) else None
        self._places = places
        self.restart = restart
        self._settings = dict(batch_size=batch_size, poll_interval=poll_interval, **options)
        # the units workers run: applications, or each partition of a partitioned one
        busy: list[str] = []
        for a in resolved.apps:
            units = [unit for unit, f in self.followers.items() if f.name == a.name]
            if not units and any(app == a.name for app, _ in self.projections):
                units = [a.name]
            busy.extend(units)
        count = min(processes or len(busy), len(busy)) or 1
        self.groups: tuple[tuple[str, ...], ...] = tuple(
            tuple(busy[i::count]) for i in range(count) if busy[i::count]
        )
        self._workers: dict[tuple[str, ...], SpawnProcess] = {}
        # the read end of each worker's pipe of reports, until read to its end (see _spawn)
        self._inboxes: list[Connection] = []
        self._reading = threading.Lock()  # one reader at a time: a message is read whole
        self._failures: dict[str, PolicyError] = {}
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None
        #: How many times a dead worker was started again.
        self.restarts = 0

    def _spawn(self, group: tuple[str, ...]) -> SpawnProcess:
        # a pipe of its own, not a multiprocessing.Queue: see the module's docstring
        inbox, reports = _SPAWN.Pipe(duplex=False)
        process = _SPAWN.Process(
            target=_worker,
            args=(self.spec, self._places, group, self._settings, reports, os.getpid()),
            name=f"fes {','.join(group)}",
            daemon=True,
        )
        try:
            process.start()
        except BaseException:
            inbox.close()
            raise
        finally:
            # the worker holds the only write end now: its pipe ends when it exits
            reports.close()
        with self._reading:
            self._inboxes.append(inbox)
        return process

    def start(self) -> Self:
        """Start the worker processes and their supervisor; returns the runner."""
        if self._monitor is not None:
            raise ConfigurationError(
                "this runner was started already; to start again after stop(), build a new "
                "one on the same store: it takes up each follower at its tracked position"
            )
        with self._lock:
            for group in self.groups:
                self._workers[group] = self._spawn(group)
        self._monitor = threading.Thread(target=self._supervise, name="fes supervisor",
                                         daemon=True)
        self._monitor.start()
        return self

    def _supervise(self) -> None:
        delays: dict[tuple[str, ...], float] = {}
        while not self._stopping.wait(0.05):
            self._drain_reports()
            with self._lock:
                dead = [(g, p) for g, p in self._workers.items() if not p.is_alive()]
                for group, _ in dead:
                    del self._workers[group]
            for group, process in dead:
                code = process.exitcode
                process.join()
                process.close()
                self._drain_reports()  # its last reports, to its pipe's end
                if not self.restart:
                    logger.error("worker %s exited with code %s", ",".join(group), code)
                    continue
                # a worker killed by a signal starts again at once; one that keeps
                # failing on its own (a bad URL, an import error) backs off
                killed = code is not None and code < 0
                delay = 0.0 if killed else delays.get(group, 0.0)
                delays[group] = 0.0 if killed else min(max(delay * 2, 0.1), 5.0)
                logger.warning("worker %s exited with code %s; starting it again in %.1fs",
                               ",".join(group), code, delay)
                if delay and self._stopping.wait(delay):
                    continue
                with self._lock:
                    if self._stopping.is_set():
                        continue
                    self._workers[group] = self._spawn(group)
                    self.restarts += 1

    def _drain_reports(self) -> None:
        """Take in what the workers reported; close the pipe of each that exited."""
        with self._reading:
            for inbox in list(self._inboxes):
                try:
                    # a worker sends each report whole: one that is ready is read at once
                    while inbox.poll():
                        self._take(*inbox.recv())
                except (EOFError, OSError):
                    # its worker exited (at the end of its pipe): all it sent was read
                    inbox.close()
                    self._inboxes.remove(inbox)

    def _take(
        self, name: str, leader: str, position: int, error: BaseException,
        traceback: str | None,
    ) -> None:
        """Record and log a worker's report that follower (or view, ``app/view``) ``name``
        stopped (``traceback``: the error's, as the worker formatted it then)."""
        app, slash, view = name.partition("/")
        if slash:
            failure: PolicyError = ViewError(app, view, position, error)
            failure.traceback = traceback
            self._failures.setdefault(name, failure)
            logger.error("%s; view %r stopped", failure, name, extra={
                "app": app, "view": view, "position": position,
            })
            return
        failure = PolicyError(name, leader, position, error)
        failure.traceback = traceback
        self._failures.setdefault(name, failure)
        logger.error("%s; follower %r stopped", failure, name, extra={
            "app": name.partition("#")[0], "follower": name, "leader": leader,
            "position": position,
        })

    @property
    def errors(self) -> dict[str, PolicyError]:
        """The followers a worker reported stopped by a policy error, and the views
        (``app/view``) stopped by an error of their ``apply``."""
        self._drain_reports()
        return dict(self._failures)

    def pids(self) -> dict[tuple[str, ...], int]:
        """The process id of each worker, by the applications it runs."""
        with self._lock:
            return {g: p.pid for g, p in self._workers.items() if p.pid is not None}

    @property
    def running(self) -> bool:
        """Whether any worker is alive."""
        with self._lock:
            return any(p.is_alive() for p in self._workers.values())

    def request_stop(self) -> None:
        """Ask the workers to stop after their batches in hand."""
        self._stopping.set()
        with self._lock:
            for process in self._workers.values():
                if process.is_alive() and process.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, signal.SIGTERM)

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop every worker after its batch in hand; kill those that outlast ``timeout``."""
        self.request_stop()
        if self._monitor is not None:
            self._monitor.join()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            for group, process in list(self._workers.items()):
                process.join(None if deadline is None else max(deadline - time.monotonic(), 0))
                if process.is_alive():
                    logger.error("worker %s did not stop in time; killing it", ",".join(group))
                    process.kill()
                    process.join()
                process.close()
            self._workers.clear()
        self._drain_reports()

    def close(self) -> None:
        """Stop the workers, then close the database."""
        if getattr(self, "_workers", None):
            self.stop()
        if getattr(self, "_inboxes", None):  # left only if stop() did not finish
            with self._reading:
                for inbox in self._inboxes:
                    inbox.close()
                self._inboxes.clear()
        super().close()

    def __enter__(self) -> Self:
        self.start()
        return self
