"""The edge of fes: everything that performs effects.

Stores (memory, SQLite, PostgreSQL) live in :mod:`fes.edge.stores`; they are
chosen by one URL with :func:`fes.edge.stores.open_database`.
"""

__all__: list[str] = []
