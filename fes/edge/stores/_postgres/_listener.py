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
from collections.abc import Mapping
from typing import Any

from psycopg import Notify, sql

from fes.edge.stores._postgres._sql import Conn
from fes.errors import StoreError


class Signal:
    """A generation counter that waiters block on; the listener bumps it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0

    @property
    def generation(self) -> int:
        with self._cond:
            return self._generation

    def bump(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait_past(self, seen: int, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._generation != seen, timeout)


def _readable(fds: list[int], timeout: float) -> set[int]:
    """Which of ``fds`` become readable within ``timeout`` seconds (poll: any fd number)."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(timeout * 1000)}


class Listener:
    """One connection that LISTENs on behalf of every store of a database.

    A daemon thread waits on the connection's socket and on a pipe that
    :meth:`signal` and :meth:`close` write to, so new channels are listened to
    at once.  After LISTEN (and after a reconnection) it wakes the channel's
    waiters, which then re-check the log: nothing committed while the channel
    was not listened to is missed.
    """

    _KEEPALIVE = 60.0  # seconds of silence after which the connection is probed

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

    def signal(self, channel: str) -> Signal:
        """The signal bumped on each notification of ``channel``."""
        with self._lock:
            if self._closed:
                raise StoreError("the database is closed")
            found = self._signals.get(channel)
            if found is not None:
                return found
            signal = self._signals[channel] = Signal()
            self._pending.add(channel)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fes-listen", daemon=True)
                self._thread.start()
        self._wake()
        return signal

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
                if conn is not None:
                    conn.close()
                conn = None
                for signal in list(self._signals.values()):
                    signal.bump()  # waiters re-check now and poll until we are back
                if _readable([self._wake_r], self._reconnect):
                    self._drain()
        if conn is not None:
            conn.close()

    def _serve(self, conn: Conn) -> None:
        """Listen to new channels, then deliver notifications until woken.

        Once listening, a notification costs a wake of this thread, libpq's
        read of it, and a bump: no psycopg generator or poll object of its
        own per notification (a W5 follower's listener spent 44 us of CPU on
        each with them).  Notifications that arrive while a statement of this
        thread runs (LISTEN, the keepalive) reach :meth:`_notified` through
        psycopg's handler.
        """
        with self._lock:
            pending, self._pending = self._pending, set()
        for channel in sorted(pending):
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        for channel in pending:
            self._signals[channel].bump()
        pgconn = conn.pgconn
        encoding = conn.info.encoding
        signals = self._signals
        sock = conn.fileno()
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._closed:
            ready = poller.poll(self._KEEPALIVE * 1000)
            if not ready:
                conn.execute("SELECT 1")
                continue
            woken = False
            for fd, _ in ready:
                if fd != sock:
                    woken = True
                    continue
                pgconn.consume_input()  # raises if the connection is lost
                while (notify := pgconn.notifies()) is not None:
                    found = signals.get(notify.relname.decode(encoding))
                    if found is not None:
                        found.bump()
            if woken:  # a new channel, or close()
                self._drain()
                return

    def _notified(self, notify: Notify) -> None:
        """psycopg's handler: a notification read while a statement ran."""
        found = self._signals.get(notify.channel)
        if found is not None:
            found.bump()
