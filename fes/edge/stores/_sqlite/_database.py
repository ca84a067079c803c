"""The SQLite database: one file, several applications, several processes.

Each application has four tables named after it (``"shop_events"``,
``"shop_snapshots"``, ``"shop_tracking"``, ``"shop_views"``) and a row in
``fes_apps``, so one file holds several applications.  The file is in WAL
mode, so readers never block the one writer and the writer never blocks
readers; every write runs in ``BEGIN IMMEDIATE``, which takes the write lock
up front (waiting up to ``busy_timeout``) and so can never fail half way for
want of it.

Positions are ``INTEGER PRIMARY KEY AUTOINCREMENT``: never reused, never
changed by VACUUM.  They are assigned under the write lock, so they increase
in commit order, and the positions of one append are contiguous.

Each thread has its own connection; a forked child opens its own rather than
use its parent's.  :meth:`SQLiteDatabase.close` never closes a connection
another thread is using (that would crash sqlite3): the thread closes it
when its operation ends.  :meth:`SQLiteStore.wait` wakes at once on appends made
through the same :class:`SQLiteDatabase` and polls for those of other
processes.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Any

from fes.edge.stores._base import ClosingDatabase
from fes.edge.stores._checks import check_app_name
from fes.edge.stores._sqlite._connections import Connections, Held, forget_after_fork
from fes.edge.stores._sqlite._options import OPTIONS, SYNCHRONOUS, file_path
from fes.edge.stores._sqlite._sql import SCHEMA
from fes.edge.stores._sqlite._store import SQLiteStore
from fes.edge.stores._urls import StoreURL, take_options
from fes.errors import StoreError

__all__ = ["SQLiteDatabase"]


class SQLiteDatabase(Connections, ClosingDatabase):
    """An SQLite file holding several applications' tables.

    ``synchronous`` is the durability (``FULL``: a commit survives power
    loss; ``NORMAL``: it survives a crash of the process); ``busy_timeout``
    is how long, in milliseconds, a write waits for another writer;
    ``create=False`` refuses to create the file or missing tables;
    ``poll_interval`` is how often, in seconds, :meth:`SQLiteStore.wait`
    looks for other processes' appends.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: int = 5000,
        create: bool = True,
        poll_interval: float = 0.02,
        url: str | None = None,
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS:
            raise StoreError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}")
        super().__init__(
            path,
            synchronous=synchronous,
            busy_timeout=busy_timeout,
            create=create,
            poll_interval=poll_interval,
            url=url,
        )
        self._stores: dict[str, SQLiteStore] = {}
        try:
            held = self.use()
            try:
                if create and not self.has_table(held.conn, "fes_apps"):
                    self.write(
                        held,
                        "CREATE TABLE IF NOT EXISTS fes_apps "
                        "(name TEXT PRIMARY KEY, schema INTEGER NOT NULL)",
                    )
            finally:
                self.release(held)
        except sqlite3.Error as error:
            self.close()
            raise StoreError(f"cannot open {self._url}: {error}") from None
        except BaseException:
            self.close()
            raise
        forget_after_fork(self)

    @classmethod
    def from_url(cls, url: StoreURL, **options: Any) -> SQLiteDatabase:
        """Open the database a ``sqlite:///path`` URL names, with its options."""
        path = file_path(url)
        values = take_options(url, options, OPTIONS)
        return cls(path, url=url.safe, **values)

    def __repr__(self) -> str:
        return f"<SQLiteDatabase {self._url}>"

    # The Database protocol -------------------------------------------------------

    def store(self, app: str) -> SQLiteStore:
        """The store of ``app``, its tables created if missing (unless create is false)."""
        check_app_name(app)
        if self.closed:  # (an app's store made before the close would be found below)
            raise self.closed_error()
        with self._lock:
            store = self._stores.get(app)
        if store is not None:
            return store
        store = SQLiteStore(self, app)
        try:
            self._prepare(store)
        except sqlite3.Error as error:
            raise self.error(error, f"create the tables of {app!r}") from None
        with self._lock:
            return self._stores.setdefault(app, store)

    def _prepare(self, store: SQLiteStore) -> None:
        held = self.use()
        try:
            self._prepare_on(held, store)
        finally:
            self.release(held)

    def _prepare_on(self, held: Held, store: SQLiteStore) -> None:
        conn = held.conn
        names = store.tables
        found = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (?, ?, ?, ?)",
            names,
        ).fetchone()[0]
        registered = (
            self.has_table(conn, "fes_apps")
            and conn.execute("SELECT schema FROM fes_apps WHERE name = ?", (store.app,)).fetchone()
        )
        if registered and registered[0] > SCHEMA:
            raise StoreError(
                f"the tables of {store.app!r} in {self._url} have schema {registered[0]}, "
                f"newer than this fes knows ({SCHEMA}): upgrade fes"
            )
        if found == len(names) and registered:
            return
        if not self.create:
            raise StoreError(
                f"{self._url} has no tables for application {store.app!r} "
                "(and create is false): open it with create=true to create them"
            )
        self.write(held, *store.schema, app=store.app)

    def apps(self) -> list[str]:
        """The applications that have tables in this database."""
        held = self.use()
        conn = held.conn
        try:
            if not self.has_table(conn, "fes_apps"):
                return []
            return [row[0] for row in conn.execute("SELECT name FROM fes_apps ORDER BY name")]
        except sqlite3.Error as error:
            raise self.error(error, "list its applications") from None
        finally:
            self.release(held)

    def close(self) -> None:
        """Close the database; every later operation, in any thread, raises StoreError.

        Connections no operation is using are closed at once.  One that
        another thread is using (closing it would crash sqlite3) is closed
        by that thread when its operation ends, which finishes normally.
        Closing twice is harmless.
        """
        with self._lock:
            self.closed = True
            connections = list(self._connections)
            self._forget_connections()
            for held in connections:
                if not held.busy:
                    with contextlib.suppress(sqlite3.Error):
                        held.conn.close()
        self.notify()
