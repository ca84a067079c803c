"""The connection pool, and running work on it through lost connections.

Reads, snapshot upserts and table creation are idempotent and retried.  A
write transaction is retried only when the connection failed before COMMIT
was sent: PostgreSQL commits nothing it has not been told to commit, and the
server rolls back the transaction of a vanished client.  Once COMMIT is sent
the outcome is unknown, so the store raises :class:`fes.errors.StoreError` saying so
instead of risking a second copy of the events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from fes.edge.stores._postgres._options import Settings
from fes.edge.stores._postgres._sql import Conn
from fes.errors import StoreError

_T = TypeVar("_T")

# The server ended the session: shutdown, crash, starting up, idle timeouts.
_DISCONNECT_STATES = frozenset({"57P01", "57P02", "57P03", "57P05", "25P03"})


class NoConnection(StoreError):
    """The pool handed out no connection in time."""


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
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            conninfo,
            kwargs=self._keywords,
            min_size=1,
            max_size=settings.pool_size,
            timeout=settings.pool_timeout,
            num_workers=2,
            name=f"fes {url}",
            open=True,
        )

    def close(self) -> bool:
        """Close the pool; return False if it was already closed."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
        self._pool.close()
        return True

    def check_open(self, what: str) -> None:
        """Refuse ``what`` once the database is closed."""
        if self._closed:
            raise StoreError(f"could not {what}: the database {self.url} is closed")

    def scrub(self, text: str) -> str:
        """``text`` with the password masked."""
        return text.replace(self._secret, "***") if self._secret else text

    def _getconn(self, what: str, timeout: float | None = None) -> Conn:
        self.check_open(what)
        try:
            return self._pool.getconn(timeout)
        except PoolTimeout:
            waited = self._settings.pool_timeout if timeout is None else timeout
            raise NoConnection(
                f"could not {what}: no connection to {self.url} within "
                f"{waited:g}s ({self._reason()})"
            ) from None
        except PoolClosed:
            raise StoreError(f"could not {what}: the database {self.url} is closed") from None

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
            conn = self._getconn(what, timeout)
            committing = False
            try:
                result = work(conn)
                if commit is not None:
                    committing = True
                    commit(conn)
                return result
            except Exception as exc:
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
                    raise
                # The server may have said goodbye before the socket closed:
                # close it so the pool does not hand it out again, and weed
                # out its idle siblings, which likely died with it (a restart).
                conn.close()
                self._pool.check()
                if committing and not idempotent:
                    raise StoreError(
                        f"lost the connection to {self.url} while committing, so it is "
                        f"unknown whether the attempt to {what} took effect: "
                        f"{self.scrub(str(exc)).strip()}"
                    ) from exc
                if attempt >= self._settings.retries:
                    raise StoreError(
                        f"could not {what}: lost the connection to {self.url} "
                        f"{attempt + 1} times: {self.scrub(str(exc)).strip()}"
                    ) from exc
            finally:
                self._pool.putconn(conn)
            time.sleep(0.05 * 2**attempt)
            attempt += 1
