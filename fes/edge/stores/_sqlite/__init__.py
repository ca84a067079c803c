"""The SQLite event store: one file, several applications, several processes.

Private: open one with ``fes.edge.stores.open_database("sqlite:///path.db")``;
:class:`SQLiteDatabase` is public as ``fes.edge.stores.SQLiteDatabase``.  How
the file is shared (WAL mode, ``BEGIN IMMEDIATE``, AUTOINCREMENT positions,
a connection per thread) is explained on :mod:`._database`.

The modules depend one way: ``_database`` (the file, its applications) ->
``_store`` (one application's operations) -> ``_connections`` (per-thread
connections, pragmas, WAL, locks) -> ``_sql`` (names and statements);
``_options`` reads the URL.
"""

from fes.edge.stores._sqlite._database import SQLiteDatabase
from fes.edge.stores._sqlite._sql import SCHEMA, table_prefix
from fes.edge.stores._sqlite._store import SQLiteStore

__all__ = ["SCHEMA", "SQLiteDatabase", "SQLiteStore", "table_prefix"]
