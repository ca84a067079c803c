"""The connection pool, and running work on it through lost connections.

Reads, snapshot upserts and table creation are idempotent and retried.  A
write transaction is retried only when the connection failed before COMMIT
was sent: PostgreSQL commits nothing it has not been told to commit, and the
server rolls back the transaction of a vanished client.  Once COMMIT is sent
the outcome is unknown, so the store raises :class:`fes.errors.StoreError` saying so
instead of risking a second copy of the events.

The first connection is made directly, before the pool opens, so that a
wrong address fails fast and says why: a wrong password, database, role or
host name raises :class:`fes.errors.StoreUnavailable` at once, while a server
that refuses connections or is starting up is retried with backoff for up to
``first_connect_timeout`` seconds.  Each kind of failure is logged once (on
the ``fes.edge.stores.postgres`` logger, a warning for a failure retried and
an info record for one raised at once), not once per try.

Once open, a lost connection makes the next request try one connection of
its own first: while the server is down each request fails at once with a
transient :class:`fes.errors.StoreUnavailable` (instead of waiting
``pool_timeout`` for a pool that cannot connect), and when it answers again
the pool is opened afresh rather than left to its reconnection backoff.
The server going away is logged once, and its return once.  psycopg_pool's
own records of the same failures (a warning per reconnection attempt) get
a ``NullHandler``: without logging configured they no longer reach stderr
through Python's last-resort handler, and with it they still propagate.

The connection a request has just finished with is parked for the next
one, which takes it without the pool's checkout and return: one at a time,
only while no request waits for the pool, and back to the pool at least
every second, so that its reset, expiry and health checks still run.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from fes.edge.stores._postgres._options import Settings
from fes.edge.stores._postgres._sql import Conn
from fes.errors import OutcomeUnknown, StoreError, StoreUnavailable

_T = TypeVar("_T")
_A = TypeVar("_A")
_B = TypeVar("_B")

log = logging.getLogger("fes.edge.stores.postgres")
# psycopg_pool logs each failed reconnection as a warning, which a script
# without logging configured prints to stderr; fes reports the same failure
# itself (the log records here, and StoreUnavailable).  A handler that drops
# records stops Python's last resort only: configured handlers still get
# them.  fes's own records here are quiet by default too, as a library's are
# (the "fes" logger has one once fes.edge's application module is imported).
for _name in ("psycopg.pool", log.name):
    if not logging.getLogger(_name).handlers:
        logging.getLogger(_name).addHandler(logging.NullHandler())

#: The longest a connection is kept from the pool, parked between requests
#: (see Connections._putconn), in seconds.
_PARK_SECONDS = 1.0
_IDLE = psycopg.pq.TransactionStatus.IDLE

# The server ended the session: shutdown, crash, starting up, idle timeouts.
_DISCONNECT_STATES = frozenset({"57P01", "57P02", "57P03", "57P05", "25P03"})


def no_connection(message: str) -> StoreUnavailable:
    """No connection in time: the server is away (for now) or the pool busy.

    The public class with ``transient`` set, rather than a private subclass,
    so that the name a user reads in a traceback is one they can import.
    """
    return StoreUnavailable(message, transient=True)


# What libpq says when connecting fails, what it means, whether trying again
# can help, and what to fix.  libpq gives no SQLSTATE for these: the server's
# FATAL message (or the client's own) is all there is.
_FAILURES: tuple[tuple[str, str, bool, str], ...] = (
    (
        r"password authentication failed|no password supplied|authentication failed",
        "authentication failed",
        False,
        "check the user name and password in the store URL",
    ),
    (
        r"no pg_hba\.conf entry",
        "the server refuses this client",
        False,
        "allow this host and user in the server's pg_hba.conf, or connect as another user",
    ),
    (
        r'database ".*" does not exist',
        "unknown database",
        False,
        "create the database (createdb NAME) or fix its name in the store URL",
    ),
    (
        r'role ".*" does not exist',
        "unknown role",
        False,
        "create the role (createuser NAME) or fix the user name in the store URL",
    ),
    (
        r"failed to resolve host|could not translate host name",
        "unknown host",
        False,
        "fix the host name in the store URL",
    ),
    (
        r"Connection refused",
        "connection refused",
        True,
        "check that the server is running and listens on that host and port",
    ),
    (
        r"starting up|shutting down|in recovery|too many clients|timeout expired",
        "server not ready",
        True,
        "check that the server is running and accepts connections",
    ),
)


def classify(message: str) -> tuple[str, bool, str]:
    """The kind of a connection failure, whether it is transient, and what to fix."""
    for pattern, kind, transient, fix in _FAILURES:
        if re.search(pattern, message):
            return kind, transient, fix
    return "cannot connect", True, "check the store URL and that the server is running"


def is_disconnect(exc: BaseException, conn: Conn | None) -> bool:
    """Whether ``exc`` means the connection is gone (rather than a refused statement)."""
    if not isinstance(exc, psycopg.Error):
        return False
    if conn is not None and conn.closed:
        return True
    state = exc.sqlstate
    if state is None:  # raised by the client: it lost the server
        return isinstance(exc, psycopg.OperationalError)
    return state.startswith("08") or state in _DISCONNECT_STATES


class Connections:
    """A database's pool, and the errors that name its URL without the password."""

    def __init__(
        self,
        conninfo: str,
        keywords: Mapping[str, Any],
        settings: Settings,
        url: str,
        secret: str,
    ) -> None:
        self.url = url
        self._secret = secret
        self._conninfo = conninfo
        self._keywords = dict(keywords)
        self._settings = settings
        self._lock = threading.Lock()
        self._closed = False
        #: Set when the database closes: what waits on it (a store's polling
        #: wait) ends then, not a poll interval later.
        self.closing = threading.Event()
        # Until one connection has succeeded, connections are made directly
        # (see the module's documentation); then the pool opens.
        self._connected = False
        self._first = threading.Lock()
        self._logged: set[str] = set()
        # A lost connection sets _suspect: the next request connects once
        # itself before asking the pool.  _down is why the server was found
        # unreachable (None while it answers).
        self._suspect = False
        self._down: str | None = None
        self._pool = self._new_pool()
        # The connection a request has just finished with, kept out of the pool
        # for the next request (see _getconn and _putconn), with its pool.
        self._parked: list[tuple[ConnectionPool[Conn], Conn]] = []
        # How many requests are inside pool.getconn: a connection is parked
        # only while none is, so that no request waits for one that is idle.
        self._waiting = 0
        self._waiting_lock = threading.Lock()

    def _new_pool(self) -> ConnectionPool[Conn]:
        return ConnectionPool(
            self._conninfo,
            connection_class=Conn,
            kwargs=self._keywords,
            min_size=1,
            max_size=self._settings.pool_size,
            timeout=self._settings.pool_timeout,
            num_workers=2,
            name=f"fes {self.url}",
            open=False,
        )

    def close(self) -> bool:
        """Close the pool; return False if it was already closed."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
        self.closing.set()
        with self._waiting_lock:
            pass  # a request parking a connection now sees _closed, or is unparked below
        self._unpark()
        self._pool.close()
        return True

    def check_open(self, what: str) -> None:
        """Refuse ``what`` once the database is closed."""
        if self._closed:
            raise StoreError(f"could not {what}: the database {self.url} is closed")

    def scrub(self, text: str) -> str:
        """``text`` with the password masked."""
        return text.replace(self._secret, "***") if self._secret else text

    def _connect_first(self, what: str, timeout: float | None) -> None:
        """Connect once directly, retrying transient failures; then open the pool."""
        # another thread may be trying: wait for it no longer than ``timeout``
        if not self._first.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            raise no_connection(f"could not {what}: still connecting to {self.url}")
        try:
            if self._connected:
                return
            limit = self._settings.first_connect_timeout
            deadline = time.monotonic() + (limit if timeout is None else min(limit, timeout))
            attempt = 0
            while True:
                self.check_open(what)
                remaining = deadline - time.monotonic()
                keywords = dict(self._keywords)
                # one attempt ends by the deadline (libpq counts less than 2 s as 2 s)
                try:
                    given = float(keywords.get("connect_timeout", 10))
                except ValueError:  # libpq will say what is wrong with it
                    given = 10.0
                keywords["connect_timeout"] = str(max(2, min(math.ceil(remaining), given)))
                try:
                    psycopg.connect(self._conninfo, **keywords).close()
                except psycopg.Error as exc:
                    message = self.scrub(str(exc)).strip() or type(exc).__name__
                    message = " ".join(message.removeprefix("connection failed: ").split())
                    kind, transient, fix = classify(message)
                    if kind not in self._logged:
                        self._logged.add(kind)
                        # a retry is news; a failure that is raised at once is the
                        # caller's to report, so it is only noted
                        log.log(
                            logging.WARNING if transient else logging.INFO,
                            "cannot connect to %s (%s): %s%s",
                            self.url,
                            kind,
                            message,
                            f"; retrying for up to {limit:g}s" if transient else "",
                            extra={"url": self.url, "failure": kind},
                        )
                    remaining = deadline - time.monotonic()
                    pause = min(0.1 * 2**attempt, 1.0)
                    if not transient or remaining <= pause:
                        waited = f", retried for first_connect_timeout={limit:g}s"
                        raise StoreUnavailable(
                            f"could not {what}: cannot connect to {self.url} "
                            f"({kind}{waited if transient else ''}): {message}; {fix}",
                            transient=transient,
                        ) from None
                    time.sleep(pause)
                    attempt += 1
                    continue
                self.check_open(what)
                self._pool.open(wait=False)
                self._connected = True
                return
        finally:
            self._first.release()

    def _probe(self, what: str) -> None:
        """After a lost connection: fail at once if the server is down, else carry on.

        One direct connection, bounded by libpq's shortest timeout, tells a
        server that is down from one that dropped a connection.  When it is
        back after being down, the pool is replaced: the old one's
        reconnection attempts back off for up to minutes.
        """
        keywords = dict(self._keywords)
        keywords["connect_timeout"] = "2"
        try:
            psycopg.connect(self._conninfo, **keywords).close()
        except psycopg.Error as exc:
            message = self.scrub(str(exc)).strip() or type(exc).__name__
            message = " ".join(message.removeprefix("connection failed: ").split())
            kind, transient, fix = classify(message)
            with self._lock:
                news, self._down = self._down is None, message
            if news:
                log.warning(
                    "the database server at %s is unavailable (%s): %s; requests fail "
                    "at once until it answers again", self.url, kind, message,
                    extra={"url": self.url, "failure": kind},
                )
            raise StoreUnavailable(
                f"could not {what}: the database server at {self.url} is unavailable "
                f"({kind}): {message}; {fix}",
                transient=transient,
            ) from None
        with self._lock:
            was_down, self._down, self._suspect = self._down, None, False
            if was_down is None or self._closed:
                return
            old, self._pool = self._pool, self._new_pool()
            self._pool.open(wait=False)
        self._unpark()
        # at the level of the warning it ends, so that whoever saw one sees the other
        log.warning("the database server at %s answers again", self.url, extra={"url": self.url})
        old.close(timeout=0)  # connections in use go back to it, and are closed

    def _getconn(
        self, what: str, timeout: float | None = None
    ) -> tuple[ConnectionPool[Conn], Conn]:
        self.check_open(what)
        if not self._connected:
            self._connect_first(what, timeout)
        elif self._suspect:
            self._probe(what)
        parked = self._parked
        while parked:
            try:
                pool, conn = parked.pop()
            except IndexError:  # another request took it
                break
            if pool is self._pool:
                return pool, conn
            pool.putconn(conn)  # the pool it came from was replaced: it closes it
        pool = self._pool
        with self._waiting_lock:
            self._waiting += 1
        try:
            # A request that finished after the look above parked its
            # connection only if it saw no request waiting, so look again.
            if parked:
                try:
                    return parked.pop()
                except IndexError:
                    pass
            return pool, pool.getconn(timeout)
        except PoolTimeout:
            self._suspect = True  # the next request finds out whether the server is down
            waited = self._settings.pool_timeout if timeout is None else timeout
            raise no_connection(
                f"could not {what}: no connection to {self.url} within "
                f"{waited:g}s ({self._reason()})"
            ) from None
        except PoolClosed:
            raise StoreError(f"could not {what}: the database {self.url} is closed") from None
        finally:
            with self._waiting_lock:
                self._waiting -= 1

    def _putconn(self, pool: ConnectionPool[Conn], conn: Conn) -> None:
        """Give back a connection a request has finished with: park it, or return it.

        Parked, it serves the next request without the pool's checkout and
        return, the largest cost of a small request after its round trips;
        and a thread that makes one request after another keeps to one
        session.  Only an idle connection of the current pool is parked, one
        at a time, while no request waits for the pool and the database is
        open; and a connection goes back to the pool (its reset, expiry and
        health checks) at least every ``_PARK_SECONDS``.
        """
        if (
            not self._parked
            and pool is self._pool
            and conn.pgconn.transaction_status == _IDLE
            and not self._closed
            and not self._waiting
        ):
            now = time.monotonic()
            if not conn.parked_since:
                conn.parked_since = now
            if now - conn.parked_since < _PARK_SECONDS:
                self._parked.append((pool, conn))
                # close() or a request that began to wait since the look
                # above may have missed it: hand it back then.  Under the
                # lock the request counts itself under: either it counted
                # first and is seen here, or it finds the parked connection.
                with self._waiting_lock:
                    missed = self._waiting or self._closed or pool is not self._pool
                if missed:
                    self._unpark()
                return
        conn.parked_since = 0.0
        pool.putconn(conn)

    def _unpark(self) -> None:
        """Return every parked connection to its pool."""
        while True:
            try:
                pool, conn = self._parked.pop()
            except IndexError:
                return
            conn.parked_since = 0.0
            pool.putconn(conn)

    def _reason(self) -> str:
        """Why connecting fails, found by one direct attempt, without the password."""
        try:
            psycopg.connect(self._conninfo, **self._keywords).close()
        except psycopg.Error as exc:
            return self.scrub(str(exc)).strip() or type(exc).__name__
        return "all pooled connections are busy; raise pool_size or pool_timeout"

    def run(
        self,
        what: str,
        work: Callable[[Conn], _T],
        *,
        idempotent: bool,
        commit: Callable[[Conn], None] | None = None,
        timeout: float | None = None,
    ) -> _T:
        """Run ``work`` with a pooled connection, retrying after lost connections.

        With ``commit``, ``work`` has opened a transaction that ``commit`` ends;
        a failure after COMMIT was sent is retried only if ``idempotent``.
        ``timeout`` bounds the wait for a connection (default: pool_timeout).
        """
        attempt = 0
        while True:
            pool, conn = self._getconn(what, timeout)
            committing = False
            try:
                result = work(conn)
                if commit is not None:
                    committing = True
                    commit(conn)
                return result
            except Exception as exc:
                self._failed(exc, conn, pool, what, committing and not idempotent, attempt)
            finally:
                self._putconn(pool, conn)
            time.sleep(0.05 * 2**attempt)
            attempt += 1

    def run_begun(
        self,
        what: str,
        begin: Callable[[Conn], _B],
        finish: Callable[[Conn, _A, _B], _T],
        argument: _A,
    ) -> _T:
        """Run a write whose ``begin`` opens its transaction and ``finish`` commits it.

        :meth:`run` with ``idempotent=False``, for the hot path of a single
        event's append: ``finish`` gets what ``begin`` returned and
        ``argument``, and sends COMMIT (so a connection lost in it leaves the
        outcome unknown); no closures to build per call.
        """
        attempt = 0
        while True:
            pool, conn = self._getconn(what, None)
            committing = False
            try:
                begun = begin(conn)
                committing = True
                return finish(conn, argument, begun)
            except Exception as exc:
                self._failed(exc, conn, pool, what, committing, attempt)
            finally:
                self._putconn(pool, conn)
            time.sleep(0.05 * 2**attempt)
            attempt += 1

    def _failed(
        self,
        exc: Exception,
        conn: Conn,
        pool: ConnectionPool[Conn],
        what: str,
        unknown: bool,
        attempt: int,
    ) -> None:
        """After ``exc`` from work on ``conn``: roll back, then raise, or return to retry.

        Returns only when the connection was lost and another attempt is
        allowed.  ``unknown``: COMMIT of a write that is not idempotent may
        have been sent, so a lost connection leaves its outcome unknown.
        """
        if not conn.closed and conn.pgconn.transaction_status in (
            psycopg.pq.TransactionStatus.INTRANS,
            psycopg.pq.TransactionStatus.INERROR,
        ):
            try:
                conn.rollback()
            except psycopg.Error:
                conn.close()
        if not is_disconnect(exc, conn):
            if isinstance(exc, psycopg.errors.LockNotAvailable):
                raise StoreError(
                    f"could not {what} on {self.url}: another session (a writer, "
                    "or a schema change) held a lock it needs for longer than "
                    f"lock_timeout={self._settings.lock_timeout_ms}ms; nothing was "
                    "changed"
                ) from exc
            if isinstance(exc, psycopg.Error):
                raise StoreError(
                    f"could not {what} on {self.url}: {self.scrub(str(exc))}"
                ) from exc
            raise exc
        # The server may have said goodbye before the socket closed:
        # close it so the pool does not hand it out again, and weed
        # out its idle siblings, which likely died with it (a restart).
        conn.close()
        self._suspect = True
        self._unpark()  # for the pool to check too: it likely died with this one
        pool.check()
        if unknown:
            # on one line: psycopg's text of a lost connection runs over several
            reason = " ".join(self.scrub(str(exc)).split())
            raise OutcomeUnknown(what, self.url, reason) from exc
        if attempt >= self._settings.retries:
            raise StoreError(
                f"could not {what}: lost the connection to {self.url} "
                f"{attempt + 1} times: {self.scrub(str(exc)).strip()}"
            ) from exc
