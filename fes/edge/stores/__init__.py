"""Event stores, chosen by one URL.

>>> from fes.edge.stores import open_database
>>> with open_database("memory://") as database:
...     database.store("shop").last_position()
0

``memory://`` is a fresh database in this process; ``sqlite:///shop.db``
(relative) or ``sqlite:////var/lib/shop.db`` (absolute) an SQLite file, with
options such as ``?synchronous=NORMAL&busy_timeout=5000``;
``postgresql://user:password@host/database`` a PostgreSQL database.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from fes.edge._settings import DEFAULT_STORE_URL, setting
from fes.edge.stores.base import (
    Database,
    NewEvent,
    Resealed,
    Store,
    StoredEvent,
    StoredSnapshot,
    Tracking,
)
from fes.edge.stores.memory import MemoryDatabase
from fes.edge.stores.sqlite import SQLiteDatabase
from fes.edge.stores.urls import parse_url, redact

__all__ = [
    "Database",
    "MemoryDatabase",
    "NewEvent",
    "Resealed",
    "SQLiteDatabase",
    "Store",
    "StoredEvent",
    "StoredSnapshot",
    "Tracking",
    "database_from_env",
    "open_database",
    "redact",
]

#: The environment variable :func:`database_from_env` reads.
ENV_VAR = "FES_STORE_URL"


def open_database(url: str, **options: Any) -> Database:
    """Open the database ``url`` names; keyword ``options`` override the URL's.

    Raises :class:`fes.errors.StoreURLError` for a URL or option that cannot be
    understood, and :class:`fes.errors.StoreError` for a database that cannot be
    opened; both name the URL with its password masked.
    """
    parsed = parse_url(url)
    if parsed.scheme == "memory":
        if parsed.rest or parsed.options or options:
            raise parsed.error("memory:// takes no path and no options")
        return MemoryDatabase()
    if parsed.scheme == "sqlite":
        return SQLiteDatabase.from_url(parsed, **options)
    if parsed.scheme in ("postgresql", "postgres"):
        try:
            # Imported here so that psycopg loads only for PostgreSQL URLs.
            postgres = importlib.import_module("fes.edge.stores._postgres")
        except ModuleNotFoundError as error:
            if error.name not in ("psycopg", "psycopg_pool"):
                raise
            raise parsed.error(
                "PostgreSQL needs psycopg and psycopg_pool: pip install 'fes-events[postgres]'"
            ) from None
        database: Database = postgres.PostgresDatabase(url, **options)
        return database
    raise parsed.error(
        f"unknown scheme {parsed.scheme!r}; use memory://, sqlite:///path.db "
        "or postgresql://user@host/database"
    )


def database_from_env(
    env: Mapping[str, str], default: str = DEFAULT_STORE_URL, **options: Any
) -> Database:
    """Open the database named by ``env["FES_STORE_URL"]``, or ``default`` if unset or empty."""
    return open_database(setting(env, ENV_VAR) or default, **options)
