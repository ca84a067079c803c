"""Event stores, chosen by one URL.

>>> from fes.edge.stores import open_database
>>> with open_database("memory://") as database:
...     database.store("shop").last_position()
0

``memory://`` is a fresh database in this process; ``sqlite:///shop.db``
(relative) or ``sqlite:////var/lib/shop.db`` (absolute) an SQLite file, with
options such as ``?synchronous=NORMAL&busy_timeout=5000``;
``postgresql://user:password@host/database`` a PostgreSQL database;
``https://host/path`` (or ``http://``) the notification log of one
application that ``fes serve`` serves there, read-only (the ``http`` extra;
see the HTTP leader's page of the documentation).

Private modules implement the stores; this one is their public surface:
:func:`open_database` and, for anyone writing a store of their own, the
protocol (:class:`Database`, :class:`Store`), the rows it moves and the
checks every store applies to its inputs.

The store protocol
------------------

A *database* (one URL: ``memory://``, ``sqlite:///path.db``,
``postgresql://…``) holds the tables of several applications; a *store* is
one application's view of it: its events (streams and the notification log),
snapshots, tracking positions and views.  Stores move bytes: encoding and
decoding events is the codec's job.

Semantics every store keeps (checked by one conformance suite):

- ``append`` is atomic across all its events and streams.  Each stream's
  events must carry consecutive versions (events of other streams may come
  in between), starting at 1 or more, else the batch is malformed and
  :class:`fes.errors.StoreError` is raised; the first must be one more than the
  stream's current version, otherwise :class:`fes.ConcurrencyError` names
  a stale stream (one of them, when several are), the expected and the
  actual version.  Either way nothing is stored.
- Every appended event gets a position in the application's log.  Positions
  strictly increase in commit order as any reader sees them: a reader that
  has seen position N never later sees a newly committed position below N.
  Gaps (from rolled-back transactions) are allowed.
- With ``tracking``, the new events (possibly none) and the follower's
  tracking position are recorded in one transaction; tracking is a
  compare-and-set from ``previous`` to ``position``, so recording an
  upstream position twice, or from a stale ``previous``, raises
  :class:`fes.errors.DuplicateTracking` and stores nothing.  It is checked before
  the versions: when both are stale, the follower learns that the upstream
  event was already processed.  A tracking whose ``position`` is not above
  ``previous`` is malformed: :class:`fes.errors.StoreError`.
- Application names are those :func:`check_app_name`
  accepts; different names never share data, even where the database
  ignores case in table names.
- Stream ids are those :func:`check_stream` accepts
  (a ``str`` of 1 to 500 characters, no NUL, no lone surrogate), and
  versions, positions and limits are ``int`` values of 64 bits (limits 0 or
  more): anything else, in a read or a write, raises :class:`fes.errors.StoreError`
  before the store is touched, so every store refuses the same inputs.
- A closed database's stores raise :class:`fes.errors.StoreError`; closing twice
  is harmless.

A store of one's own implements :class:`Database` and :class:`Store`
(:class:`ClosingDatabase` gives it the ``with`` block), and passes
:class:`fes.testing.stores.StoreConformance`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fes.edge._settings import DEFAULT_STORE_URL, setting
from fes.edge.stores._base import (
    ClosingDatabase,
    Database,
    NewEvent,
    Resealed,
    Store,
    StoredEvent,
    StoredSnapshot,
    Tracking,
)
from fes.edge.stores._checks import check_app_name, check_stream
from fes.edge.stores._memory import MemoryDatabase
from fes.edge.stores._sqlite import SQLiteDatabase
from fes.edge.stores._sqlite._options import file_path
from fes.edge.stores._urls import StoreURL, parse_url, redact
from fes.errors import ConfigurationError, StoreURLError

if TYPE_CHECKING:
    from fes.edge.stores._postgres import PostgresDatabase

__all__ = [
    "ClosingDatabase",
    "Database",
    "MemoryDatabase",
    "NewEvent",
    "Resealed",
    "SQLiteDatabase",
    "Store",
    "StoredEvent",
    "StoredSnapshot",
    "Tracking",
    "check_app_name",
    "check_stream",
    "database_from_env",
    "open_database",
    "redact",
]

if importlib.util.find_spec("psycopg") is not None:
    # public where it can load; looked up lazily (see __getattr__ below), so a
    # plain import of this module never loads psycopg
    __all__ += ["PostgresDatabase"]

#: The environment variable :func:`database_from_env` reads.
ENV_VAR = "FES_STORE_URL"


def open_database(url: str, **options: Any) -> Database:
    """Open the database ``url`` names; keyword ``options`` override the URL's.

    Raises :class:`fes.errors.StoreURLError` for a URL or option that cannot be
    understood (an empty URL among them), :class:`fes.errors.ConfigurationError`
    for a PostgreSQL URL where psycopg is not installed (or an ``http(s)://``
    URL where httpx is not), and
    :class:`fes.errors.StoreError` for a database that cannot be opened
    (:class:`fes.errors.StoreUnavailable` for a server that cannot be reached);
    all name the URL with its password masked.
    """
    parsed = parse_url(url)
    if parsed.scheme == "memory":
        if parsed.rest or parsed.options or options:
            raise parsed.error("memory:// takes no path and no options")
        return MemoryDatabase()
    if parsed.scheme == "sqlite":
        path = file_path(parsed)
        if os.path.isdir(path) or path.endswith("/"):
            raise parsed.error(
                f"{path} is a directory: name a file in it, such as "
                f"sqlite:///{os.path.join(path, 'app.db')}"
            )
        return SQLiteDatabase.from_url(parsed, **options)
    if parsed.scheme in ("postgresql", "postgres"):
        try:
            # Imported here so that psycopg loads only for PostgreSQL URLs.
            postgres = importlib.import_module("fes.edge.stores._postgres")
        except ModuleNotFoundError as error:
            if error.name not in ("psycopg", "psycopg_pool"):
                raise
            raise ConfigurationError(
                f"the store {parsed.safe!r} is a PostgreSQL database, which needs the "
                "postgres extra (psycopg and psycopg_pool): pip install 'fes-events[postgres]'"
            ) from None
        database: Database = postgres.PostgresDatabase(url, **options)
        return database
    if parsed.scheme in ("http", "https"):
        try:
            # Imported here so that httpx loads only for HTTP leaders.
            http = importlib.import_module("fes.edge.stores._http")
        except ModuleNotFoundError as error:
            if error.name not in ("httpx", "httpcore", "anyio", "h11"):
                raise
            raise ConfigurationError(
                f"the store {parsed.safe!r} is an HTTP leader, which needs the http extra "
                "(httpx): pip install 'fes-events[http]'"
            ) from None
        leader: Database = http.HttpDatabase(url, **options)
        return leader
    raise unknown_scheme(parsed)


#: The schemes :func:`open_database` opens.
SCHEMES = frozenset({"memory", "sqlite", "postgresql", "postgres", "http", "https"})


def unknown_scheme(parsed: StoreURL) -> StoreURLError:
    """The error for a URL whose scheme is none of :data:`SCHEMES`."""
    return parsed.error(
        f"unknown scheme {parsed.scheme!r}; use sqlite:///path.db, "
        "postgresql://user@host/database, https://host/path (fes serve) or, inside one "
        "process (tests, the demo), memory://"
    )


def database_from_env(
    env: Mapping[str, str], default: str = DEFAULT_STORE_URL, **options: Any
) -> Database:
    """Open the database named by ``env["FES_STORE_URL"]``, or ``default`` if unset or empty."""
    return open_database(setting(env, ENV_VAR) or default, **options)


def __getattr__(name: str) -> Any:
    # PostgresDatabase loads psycopg, so only when asked for (a star import
    # asks for it, where psycopg is installed)
    if name == "PostgresDatabase":
        database: type[PostgresDatabase] = importlib.import_module(
            "fes.edge.stores._postgres"
        ).PostgresDatabase
        return database
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
