"""The PostgreSQL event store: one log shared by many processes and hosts.

Private: import :class:`PostgresDatabase` from here, or open one with
``fes.edge.stores.open_database("postgresql://...")``, which imports this
package (and psycopg) only for PostgreSQL URLs.  Its options are documented
on :class:`PostgresDatabase`; how the notification log stays gap-safe under
concurrent writers (an EXCLUSIVE table lock per append) is explained in
``docs/ordering.md``.

The modules depend one way: ``_database`` -> ``_store`` -> ``_connections``
(the pool, retries) and ``_listener`` (LISTEN/NOTIFY) -> ``_sql`` (names and
statements) -> ``_options`` (the URL).
"""

from fes.edge.stores._postgres._database import PostgresDatabase
from fes.edge.stores._postgres._store import PostgresStore

__all__ = ["PostgresDatabase", "PostgresStore"]
