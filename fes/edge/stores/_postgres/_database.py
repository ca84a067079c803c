"""A PostgreSQL database (one schema of it): its pool, listener and stores."""

from __future__ import annotations

import threading
from collections.abc import Callable

from psycopg import sql

from fes.edge.stores._base import ClosingDatabase
from fes.edge.stores._postgres._connections import Connections
from fes.edge.stores._postgres._listener import Listener
from fes.edge.stores._postgres._options import parse, password
from fes.edge.stores._postgres._sql import (
    EVENTS_MARK,
    TABLE_SUFFIXES,
    Conn,
    Queries,
    check_app,
)
from fes.edge.stores._postgres._store import PostgresStore
from fes.edge.stores._urls import redact

__all__ = ["PostgresDatabase"]


class PostgresDatabase(ClosingDatabase):
    """A PostgreSQL database (one schema of it) holding several applications' tables.

    Open it with a URL, ``postgresql://user:password@host:5432/dbname?schema=shop``.
    Each application gets four tables in the schema, ``{app}_events``,
    ``{app}_snapshots``, ``{app}_tracking`` and ``{app}_views``.  Query options
    (also accepted as keyword arguments, which win over the URL):

    ``schema``
        the schema holding the tables (default ``public``), created when missing.
    ``pool_size``
        the most connections the pool opens (default 5).
    ``first_connect_timeout``
        seconds to keep trying the first connection while the server refuses
        connections or is starting up (default 5).  A wrong password, database,
        role or host name fails at once.  Either way the error is
        :class:`fes.errors.StoreUnavailable`, naming what to fix.  libpq's
        ``connect_timeout`` bounds each attempt.
    ``pool_timeout``
        seconds to wait for a free connection once connected (default 30): the
        pool is busy, or the server went away.
    ``lock_timeout``
        how long an append waits for its application's log lock; PostgreSQL
        syntax, milliseconds or with a unit (default ``10s``; ``0`` waits forever).
    ``idle_in_transaction_session_timeout``
        the server ends a session that sits idle inside a transaction this long,
        so a stuck client cannot hold the log lock forever (default ``60s``).
    ``poll_interval``
        seconds between the checks :meth:`PostgresStore.wait` makes when no
        notification arrives (default 1).
    ``listen``
        ``false`` turns LISTEN off (needed behind a transaction-pooling proxy);
        :meth:`~PostgresStore.wait` then polls.
    ``retries``
        how often an operation that lost its connection is retried (default 3).

    and the libpq options ``application_name``, ``connect_timeout``, ``host``,
    ``port``, ``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``, ``sslcrl``,
    ``passfile``, ``target_session_attrs`` and ``keepalives*``.  Anything else
    raises :class:`fes.errors.StoreURLError`.  The password never appears in
    :attr:`url`, reprs or error messages.

    Create it in the process that uses it (after any ``fork``): connection
    pools do not survive forking.  It is also a context manager that closes it.
    """

    def __init__(self, url: str, **options: object) -> None:
        conninfo, keywords, self._settings = parse(url, options)
        self._url = redact(url)
        self._stores: dict[str, PostgresStore] = {}
        self._lock = threading.Lock()
        self._connections = Connections(
            conninfo, keywords, self._settings, self._url, password(url)
        )
        self._listener = (
            Listener(conninfo, keywords, self._settings.poll_interval)
            if self._settings.listen
            else None
        )

    @property
    def url(self) -> str:
        """The URL this database was opened with, its password replaced by ``***``."""
        return self._url

    @property
    def schema(self) -> str:
        """The schema holding the applications' tables."""
        return self._settings.schema

    def __repr__(self) -> str:
        return f"PostgresDatabase({self._url!r})"

    def store(self, app: str) -> PostgresStore:
        """The store of application ``app``, its tables created if missing."""
        check_app(app)
        self._connections.check_open(f"open the store of {app!r}")
        with self._lock:
            found = self._stores.get(app)
        if found is not None:
            return found
        store = self._connections.run(
            "create the tables of " + repr(app), self._create(app), idempotent=True
        )
        with self._lock:
            return self._stores.setdefault(app, store)

    def apps(self) -> list[str]:
        """The applications that have tables in this database's schema, sorted."""
        query = (
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p')"
            " AND obj_description(c.oid, 'pg_class') = %s"
        )

        def work(conn: Conn) -> list[str]:
            rows = conn.execute(query, (self._settings.schema, EVENTS_MARK)).fetchall()
            return sorted(name.removesuffix("_events") for (name,) in rows)

        return self._connections.run("list the applications", work, idempotent=True)

    def has_schema(self) -> bool:
        """Whether the schema exists (it is created with the first store)."""

        def work(conn: Conn) -> bool:
            query = "SELECT 1 FROM pg_namespace WHERE nspname = %s"
            return conn.execute(query, (self._settings.schema,)).fetchone() is not None

        return self._connections.run("look for the schema", work, idempotent=True)

    def close(self) -> None:
        """Close the pool and the listener; the stores are unusable after."""
        if self._connections.close() and self._listener is not None:
            self._listener.close()

    def _create(self, app: str) -> Callable[[Conn], PostgresStore]:
        schema = self._settings.schema

        def work(conn: Conn) -> PostgresStore:
            queries = Queries(conn, schema, app)
            tables = [f"{app}{suffix}" for suffix in TABLE_SUFFIXES]
            present = conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relname = ANY(%s)",
                (schema, tables),
            ).fetchone()
            if present is None or present[0] != len(tables):
                with conn.transaction():
                    # Concurrent CREATE ... IF NOT EXISTS can still collide in the
                    # catalogues; one advisory lock per schema serialises creators.
                    conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                        ("fes schema " + schema,),
                    )
                    exists = conn.execute(
                        "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
                    ).fetchone()
                    if exists is None:
                        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
                    for statement in queries.ddl():
                        conn.execute(statement)
            return PostgresStore(
                app,
                schema,
                self._connections,
                queries,
                self._listener,
                self._settings.poll_interval,
            )

        return work
