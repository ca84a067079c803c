"""LISTEN/NOTIFY: one connection per database wakes the stores' waiters.

Each append notifies its application's channel in its own transaction, so a
notification arrives only once the events are committed.  Waiters also poll,
so a lost notification (or a lost listener) delays them, never blocks them.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import Notify, sql

from fes.edge.stores._postgres._sql import Conn
from fes.errors import StoreError


class Signal:
    """A generation counter that waiters block on; its listener bumps it."""

    def __init__(self, listener: Listener) -> None:
        self._cond = threading.Condition()
        self._generation = 0
        self._listener = listener

    @property
    def generation(self) -> int:
        """The count, after the notifications that have arrived unread are counted."""
        self._listener.deliver()
        with self._cond:
            return self._generation

    def bump(self, count: int = 1) -> None:
        with self._cond:
            self._generation += count
            self._cond.notify_all()

    def wait_past(self, seen: int, timeout: float) -> None:
        """Block until the count is not ``seen``, or ``timeout`` passes."""
        listener = self._listener
        listener.deliver()  # come already: no need to wake the listener's thread
        with self._cond:
            if self._generation != seen:
                return
        listener.watch(1)
        try:
            with self._cond:
                self._cond.wait_for(lambda: self._generation != seen, timeout)
        finally:
            listener.watch(-1)


def _readable(fds: list[int], timeout: float) -> set[int]:
    """Which of ``fds`` become readable within ``timeout`` seconds (poll: any fd number)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(timeout * 1000)}


class Listener:
    """One connection that LISTENs on behalf of every store of a database.

    Notifications are read where they are wanted.  A thread that asks for
    the count (:attr:`Signal.generation`) or is about to wait reads what
    has arrived itself, without blocking; a daemon thread watches the
    connection's socket only while some thread waits, and otherwise reads
    it every ``_IDLE_READ`` seconds, so that nothing piles up on the
    server.  A follower busy with one batch after another never wakes the
    listener's thread: the notifications of the commits made meanwhile are
    read, many at once, when it next looks (a W5 follower's listener had
    been woken by every writer's commit, at some 30 us of CPU each, on
    cores the writers and the server share).

    The thread also waits on a pipe that :meth:`signal`, :meth:`watch` and
    :meth:`close` write to, so new channels are listened to and new waiters
    watched for at once.  After LISTEN (and after a reconnection) it wakes
    the channel's waiters, which then re-check the log: nothing committed
    while the channel was not listened to is missed.
    """

    _KEEPALIVE = 60.0  # seconds of silence after which the connection is probed
    _IDLE_READ = 0.1  # seconds between the thread's reads while no thread waits

    def __init__(self, conninfo: str, keywords: Mapping[str, Any], poll: float) -> None:
        self._conninfo = conninfo
        self._keywords = dict(keywords)
        # Waiters poll while the listener is down, so retrying more often than
        # they poll gains nothing; but never wait more than a second to recover.
        self._reconnect = min(poll, 1.0)
        self._lock = threading.Lock()
        self._signals: dict[str, Signal] = {}
        self._pending: set[str] = set()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # The connection that listens, once it does, and its encoding; its
        # reads and statements take turns under _io, the thread's and
        # deliver()'s.  _watchers: how many threads wait in Signal.wait_past;
        # _watching: whether the thread watches the socket (both under _lock).
        self._io = threading.Lock()
        self._serving: tuple[Conn, str] | None = None
        self._watchers = 0
        self._watching = False

    def signal(self, channel: str) -> Signal:
        """The signal bumped on each notification of ``channel``."""
        with self._lock:
            if self._closed:
                raise StoreError("the database is closed")
            found = self._signals.get(channel)
            if found is not None:
                return found
            signal = self._signals[channel] = Signal(self)
            self._pending.add(channel)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fes-listen", daemon=True)
                self._thread.start()
        self._wake()
        return signal

    def watch(self, change: int) -> None:
        """Count a thread that begins (1) or ends (-1) a wait; wake the thread to watch."""
        with self._lock:
            self._watchers += change
            wake = change > 0 and not self._watching
        if wake:
            self._wake()

    def deliver(self) -> None:
        """Count the notifications that have arrived unread, in the calling thread.

        It never blocks: while the listener's thread uses the connection,
        the thread counts them.  A connection found lost is left to the
        thread, which reads it again within ``_IDLE_READ`` seconds.
        """
        if self._serving is None or not self._io.acquire(blocking=False):
            return
        try:
            serving = self._serving
            if serving is not None:
                # lost: the thread finds out on its next read, and reconnects
                with contextlib.suppress(psycopg.Error):
                    self._read(*serving)
        finally:
            self._io.release()

    def _read(self, conn: Conn, encoding: str) -> int:
        """Read what has arrived, without blocking; bump each channel's signal by its count.

        Returns how many notifications were read.
        """
        pgconn = conn.pgconn
        pgconn.consume_input()  # raises if the connection is lost
        counts: dict[bytes, int] = {}
        while (notify := pgconn.notifies()) is not None:
            counts[notify.relname] = counts.get(notify.relname, 0) + 1
        signals = self._signals
        for name, count in counts.items():
            found = signals.get(name.decode(encoding))
            if found is not None:
                found.bump(count)
        return sum(counts.values())

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
            signals = list(self._signals.values())
        for signal in signals:
            signal.bump()  # waiters wake, and find the database closed
        self._wake()
        if thread is not None:
            thread.join(timeout=10)
            if thread.is_alive():
                return  # still connecting: leave it its pipe rather than a reused fd
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _wake(self) -> None:
        # A full pipe already holds a pending wake-up; a closed one needs none.
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._wake_r, 4096):
                pass

    def _run(self) -> None:
        conn: Conn | None = None
        while not self._closed:
            try:
                if conn is None:
                    conn = Conn.connect(self._conninfo, **self._keywords)
                    conn.add_notify_handler(self._notified)
                    with self._lock:
                        self._pending = set(self._signals)
                self._serve(conn)
            except Exception:  # waiters poll meanwhile; reconnect after a pause
                with self._io:
                    self._serving = None
                if conn is not None:
                    conn.close()
                conn = None
                for signal in list(self._signals.values()):
                    signal.bump()  # waiters re-check now and poll until we are back
                if _readable([self._wake_r], self._reconnect):
                    self._drain()
        with self._io:
            self._serving = None
        if conn is not None:
            conn.close()

    def _serve(self, conn: Conn) -> None:
        """Listen to new channels, then read notifications until woken for new ones.

        Once listening, a read costs libpq's read of what has arrived and a
        bump per channel read from: no psycopg generator or poll object of
        its own.  Notifications that arrive while a statement of this thread
        runs (LISTEN, the keepalive) reach :meth:`_notified` through
        psycopg's handler.
        """
        with self._lock:
            pending, self._pending = self._pending, set()
        with self._io:
            for channel in sorted(pending):
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            serving = self._serving = (conn, conn.info.encoding)
        for channel in pending:
            self._signals[channel].bump()
        sock = conn.fileno()
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        watching = False
        heard = time.monotonic()
        while not self._closed:
            # Looked at after each wake only: a wait that ended leaves the socket
            # watched until something comes, so that a thread that waits again
            # soon after (a follower keeping up) need not wake this one first.
            with self._lock:
                wanted = self._watching = self._watchers > 0
            if wanted != watching:
                watching = wanted
                if watching:
                    poller.register(sock, select.POLLIN)
                else:
                    poller.unregister(sock)
            ready = poller.poll((self._KEEPALIVE if watching else self._IDLE_READ) * 1000)
            if any(fd == self._wake_r for fd, _ in ready):
                self._drain()
                if self._pending or self._closed:  # a new channel, or close()
                    return
            with self._io:
                if self._read(*serving) or any(fd == sock for fd, _ in ready):
                    heard = time.monotonic()
                elif time.monotonic() - heard >= self._KEEPALIVE:
                    conn.execute("SELECT 1")
                    heard = time.monotonic()

    def _notified(self, notify: Notify) -> None:
        """psycopg's handler: a notification read while a statement ran."""
        found = self._signals.get(notify.channel)
        if found is not None:
            found.bump()
