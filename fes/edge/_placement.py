"""Where a system's applications live: each application's database, each opened once.

A system may keep every application in one database, or give each its own:
orders on one PostgreSQL server, payments in an SQLite file, a leader served
by another service over HTTP.  Exactly-once does not need one database: a
follower records its new events and its tracking position in *its own*
database, in one transaction, and only reads its leaders' logs, wherever
they are.

:class:`Placement` resolves what the caller gave (one URL, one open
database, or a mapping from application name to URL or database, with
``"*"`` for the rest; see :func:`fes.edge._settings.placement`) into one
:class:`Database` per application, opening each distinct URL once and
closing, at the end, only what it opened.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeAlias

from fes.errors import ConfigurationError

from . import _settings as settings
from .stores import open_database
from .stores._base import Database, Store

__all__ = ["Placement", "StoreArgument", "is_remote", "placement_urls"]

logger = logging.getLogger("fes.runners")

#: What every entry point accepts as ``store``: a URL, an open database, a
#: mapping of application names (and ``"*"``) to either, or None for the
#: environment's ``<APP>_FES_STORE_URL`` / ``FES_STORE_URL``.
StoreArgument: TypeAlias = "str | Database | Mapping[str, str | Database] | None"


def is_remote(url: str) -> bool:
    """Whether ``url`` names a leader served by another service (read-only, over HTTP)."""
    return url.lower().startswith(("http://", "https://"))


def placement_urls(
    store: str | Mapping[str, str] | None,
    apps: Iterable[str],
    env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Each application's store URL, for callers that need URLs (worker processes).

    An application nothing places is left out (see :func:`settings.unplaced`):
    the worker that needs its store refuses to start, naming what to set.
    """
    environment = os.environ if env is None else env
    names = list(apps)
    placed = settings.placement(environment, store, names)
    urls: dict[str, str] = {}
    for name, value in placed.items():
        if not isinstance(value, str):
            raise ConfigurationError(
                f"the store of {name!r} must be a URL here (worker processes open it "
                f"themselves), not {value!r}"
            )
        urls[name] = value
    return urls


def _check(value: object, name: str | None) -> None:
    if not (isinstance(value, str) or callable(getattr(value, "store", None))):
        if name is None:
            raise ConfigurationError(
                "store must be a store URL, an open Database or a mapping of application "
                f"names to those, not {value!r}"
            )
        raise ConfigurationError(
            f"the store of {name!r} must be a store URL or an open Database, not {value!r}"
        )


class Placement:
    """One :class:`Database` per application; each distinct URL opened once.

    ``store`` is a URL, an open :class:`Database` (never closed here), a
    mapping from application name (or ``"*"``) to either, or None (the
    environment decides, application by application).  ``env`` is where
    ``FES_STORE_URL`` and ``<APP>_FES_STORE_URL`` are read (``os.environ``
    by default).  A database is opened when first asked for, so that one
    that cannot be reached fails only what needs it.
    """

    def __init__(
        self,
        store: StoreArgument,
        apps: Iterable[str],
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        names = list(apps)
        environment = os.environ if env is None else env
        #: Why each application nothing places has no store (see :func:`settings.unplaced`).
        self.unplaced: dict[str, str] = {}
        if store is not None and not isinstance(store, str | Mapping):
            _check(store, None)
            placed: dict[str, str | Database] = dict.fromkeys(names, store)
        else:
            placed = settings.placement(environment, store, names)
            self.unplaced = settings.unplaced(environment, store, names)
        for name, value in placed.items():
            _check(value, name)
        #: Each application's store: a URL, or the open database it was given.
        self.places: dict[str, str | Database] = placed
        self._env = environment
        self._opened: dict[str, Database] = {}
        self._closed = False

    @property
    def urls(self) -> dict[str, str]:
        """Each application's store URL (an open database's own, password masked)."""
        return {
            name: place if isinstance(place, str) else place.url
            for name, place in self.places.items()
        }

    def is_remote(self, app: str) -> bool:
        """Whether ``app`` is a leader served by another service: read here, never run."""
        place = self.places.get(app)
        if place is None:
            return False
        if isinstance(place, str):
            return is_remote(place)
        return bool(getattr(place, "read_only", False))

    def database(self, app: str) -> Database:
        """The database ``app`` lives in, opened on first use.

        Raises :class:`fes.errors.ConfigurationError` for an application
        nothing places (see :func:`fes.edge._settings.unplaced`).
        """
        place = self.places.get(app)
        if place is None:
            raise ConfigurationError(
                self.unplaced.get(app, f"there is no application {app!r} to place")
            )
        if not isinstance(place, str):
            return place
        if self._closed:
            raise ConfigurationError("this placement's databases were closed")
        database = self._opened.get(place)
        if database is None:
            # an HTTP leader's token is a setting (<APP>_FES_HTTP_TOKEN, FES_HTTP_TOKEN)
            extra = {"env": self._env} if is_remote(place) else {}
            database = open_database(place, **extra)
            self._opened[place] = database
        return database

    @property
    def databases(self) -> list[Database]:
        """Every distinct database in use, in the order of the applications."""
        seen: dict[int, Database] = {}
        for name, place in self.places.items():
            if isinstance(place, str) and place not in self._opened:
                continue
            database = self.database(name)
            seen.setdefault(id(database), database)
        return list(seen.values())

    @property
    def single(self) -> Database | None:
        """The one database every application lives in, or None when they are spread."""
        places = {p if isinstance(p, str) else id(p) for p in self.places.values()}
        if len(places) != 1:
            return None
        return self.database(next(iter(self.places)))

    def close(self) -> None:
        """Close the databases this placement opened (not those it was given)."""
        self._closed = True
        opened, self._opened = self._opened, {}
        for database in opened.values():
            database.close()


class _LaterStore:
    """A leader's store reached on first use, not when the runner starts.

    A follower's service must start while a leader's database (or the
    service serving its log) is down: its reads then fail as any read of a
    store that is down does, and the runner tries again after a back-off,
    until the leader is back.
    """

    def __init__(self, reach: Callable[[], Store]) -> None:
        self._reach = reach
        self._store: Store | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if self._store is None:
            self._store = self._reach()
        return getattr(self._store, name)


class LaterDatabase:
    """The database of a leader a runner only reads, opened when first read.

    Stands in for the :class:`Database` an :class:`Application` is given:
    its ``store(app)`` is a store that opens the database and the leader's
    tables on first use (see :class:`_LaterStore`).  Closing is the
    placement's job.
    """

    def __init__(self, placement: Placement, app: str) -> None:
        self._placement = placement
        self._app = app
        self.read_only = placement.is_remote(app)

    @property
    def url(self) -> str:
        return self._placement.urls[self._app]

    def store(self, app: str) -> Store:
        def reach() -> Store:
            return self._placement.database(self._app).store(app)

        return _LaterStore(reach)

    def apps(self) -> list[str]:
        return self._placement.database(self._app).apps()

    def close(self) -> None:
        """Nothing: the placement closes what it opened."""
