"""Where the ``fes`` commands find applications: ``--store``, the environment, a system.

The inspecting commands open each store once and create nothing; what
they cannot reach they list, so that a command shows what it can read and
then says what it could not.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fes.errors import ConfigurationError, FesError

from . import _settings as settings

if TYPE_CHECKING:
    from fes.system import System

    from .stores._base import Database


# --- opening stores and systems -----------------------------------------------------


def _given(args: argparse.Namespace) -> str | dict[str, str] | None:
    """What ``--store`` names: one URL, a mapping of applications to URLs, or None."""
    return settings.parse_store_option(args.store or ())


class _NoStore(ConfigurationError):
    """There is nothing at a store's URL yet: no SQLite file, no PostgreSQL schema."""


def _no_store(url: str, what: str) -> ConfigurationError:
    return _NoStore(
        f"there is no store at {_redact(url)}: {what}; check --store or $FES_STORE_URL"
    )


#: Why a command run on its own refuses ``memory://``.
PRIVATE = (
    "a memory:// store lives inside the process that opened it, so this command's "
    "own would be new and empty (use sqlite:/// or postgresql://)"
)


def _open_existing(url: str, env: Mapping[str, str] | None = None) -> Database:
    """Open a store to inspect it: refuse a missing SQLite file or PostgreSQL schema.

    Inspecting creates nothing, and says that there is nothing rather than
    showing an empty store.  ``env`` is where an HTTP leader's token is read.
    """
    from ._placement import is_remote
    from .stores import open_database
    if url.lower().startswith("memory:"):
        raise _no_store(url, PRIVATE)
    if url.lower().startswith("sqlite:"):
        from .stores._sqlite._options import file_path
        from .stores._urls import parse_url

        path = file_path(parse_url(url))
        if not os.path.exists(path):
            raise _no_store(url, f"there is no file {path}")
        database = open_database(url, create=False)
    elif is_remote(url):
        database = open_database(url, env=os.environ if env is None else env)
    else:
        database = open_database(url)
    try:
        if not getattr(database, "has_schema", lambda: True)():
            schema = getattr(database, "schema", "")
            raise _no_store(url, f"the database has no schema {schema!r}")
    except BaseException:
        database.close()
        raise
    return database


def _reason(error: BaseException) -> str:
    """An error's message on one line."""
    return " ".join(str(error).split()) or type(error).__name__


#: The variable that places one application (``<APP>_FES_STORE_URL``), without its prefix.
_STORE_VAR = "FES_STORE_URL"


@dataclass
class _Listing:
    """What a command found where the applications are placed.

    ``found``: the applications whose tables are there, in a stable order;
    ``unreachable``: for each application (or variable, where the store it
    names could not be opened to say which application it holds) the URL
    and the reason; ``missing``: one message per application that was named
    (``--store APP=URL``, ``<APP>_FES_STORE_URL``) but is not in its store;
    ``urls``: every store looked at, in the order of the applications;
    ``absent``: the URLs among ``unreachable`` at which there is no store
    at all (a missing file or schema), rather than one that failed to answer.
    """

    found: list[str] = field(default_factory=list)
    unreachable: dict[str, tuple[str, str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    absent: set[str] = field(default_factory=set)

    def cannot_read(self, label: str, url: str, error: BaseException) -> None:
        """Note that ``label``'s store at ``url`` could not be read, and why."""
        self.unreachable[label] = (url, _reason(error))
        if isinstance(error, _NoStore):
            self.absent.add(url)

    def state(self, url: str) -> str:
        """How a store that could not be read is said to be: missing or unreachable."""
        return "missing" if url in self.absent else "unreachable"

    def trouble(self, label: str) -> str:
        """Why ``label``'s store could not be read, in a few words."""
        url = self.unreachable[label][0]
        return "does not exist" if url in self.absent else "is unreachable"


class _Stores:
    """The stores a command inspects, each opened once (and created never).

    With a system, each of its applications is placed as a runner would
    place it (``--store``, then ``<APP>_FES_STORE_URL``, ``FES_STORE_URL``).
    Without one, the applications ``--store APP=URL`` names are looked for
    in their stores; unless ``--store`` serves every other application
    (``--store URL`` or ``--store '*=URL'``), so are those each
    ``<APP>_FES_STORE_URL`` variable places; and every application in the
    remaining store (``--store URL``, ``FES_STORE_URL``, or, when nothing
    else names a store, ``sqlite:///fes.db``).
    """

    def __init__(self, args: argparse.Namespace, system: System | None) -> None:
        given = _given(args)
        self.system = system
        self.env: Mapping[str, str] = os.environ
        #: the applications placed by name: their URL
        self.urls: dict[str, str] = {}
        #: the store of every other application, if any
        self.rest: str | None = None
        #: whether <APP>_FES_STORE_URL places applications that --store does not name
        self.from_env = False
        if system is not None:
            for name, url in settings.placement(
                self.env, given, [a.name for a in system.apps]
            ).items():
                self.urls[name] = url
        else:
            mapping = given if isinstance(given, dict) else {}
            self.urls = {k: v for k, v in mapping.items() if k != settings.ANY_APP}
            rest = given if isinstance(given, str) else mapping.get(settings.ANY_APP)
            # as for runners: --store URL (or '*=URL') places every application not named
            self.from_env = rest is None
            if rest is not None:
                self.rest = settings.store_url(self.env, rest)
            elif settings.setting(self.env, _STORE_VAR) is not None:
                self.rest = settings.store_url(self.env)
            elif not self.urls and not self._variables():
                self.rest = settings.DEFAULT_STORE_URL
        self._open: dict[str | tuple[str, str], Database] = {}

    def _variables(self) -> dict[str, str]:
        """Each ``<APP>_FES_STORE_URL`` that places an application --store does not name."""
        if not self.from_env:
            return {}
        named = {settings.prefixed(name, _STORE_VAR) for name in self.urls}
        return {
            key: value for key, value in sorted(self.env.items())
            if key.endswith("_" + _STORE_VAR) and value and key not in named
        }

    def url(self, name: str) -> str:
        """The URL of the store ``name`` lives in."""
        if name in self.urls:
            return self.urls[name]
        if self.from_env:
            own = settings.setting(self.env, settings.prefixed(name, _STORE_VAR))
            if own is not None:
                return own
        if self.rest is None:
            raise ConfigurationError(
                f"no --store names where {name!r} lives; add --store {name}=URL"
            )
        return self.rest

    def is_remote(self, name: str) -> bool:
        """Whether ``name`` is placed at a leader served over HTTP."""
        from ._placement import is_remote

        return name in self.urls and is_remote(self.urls[name])

    def database(self, name: str) -> Database:
        """The database application ``name`` lives in."""
        return self._at(self.url(name), name)

    def _at(self, url: str, app: str | None) -> Database:
        from ._placement import is_remote

        # An HTTP leader is opened for its application: the token sent is the
        # application's own (<APP>_FES_HTTP_TOKEN, then FES_HTTP_TOKEN)
        key: str | tuple[str, str] = url
        env = self.env
        if is_remote(url) and app is not None:
            prefix = settings.prefixed(app, "")
            key, env = (url, prefix), settings.AppEnv(self.env, prefix.rstrip("_"))
        if key not in self._open:
            self._open[key] = _open_existing(url, env)
        return self._open[key]

    def holds(self, name: str) -> list[str]:
        """The applications the store ``name`` is placed in holds."""
        database = self.database(name)
        if getattr(database, "read_only", False):
            # asked first for ``name``: a refused token is reported with its variable
            with suppress(ConfigurationError):
                database.store(name)
        return database.apps()

    def listing(self) -> _Listing:
        """The applications with tables where they are placed, and what went wrong.

        An application whose store cannot be opened is listed as unreachable,
        one that was named but is not in its store as missing, rather than
        failing the command.
        """
        listing = _Listing()
        named = list(self.urls)  # each must be where it is placed
        candidates = list(named)
        if self.system is None:
            for variable, url in self._variables().items():
                prefix = variable.removesuffix(_STORE_VAR)
                try:
                    held = self._at(url, prefix.rstrip("_")).apps()
                except (FesError, OSError) as error:
                    listing.cannot_read(variable, url, error)
                    listing.urls.append(url)
                    continue
                placed = [a for a in held if settings.prefixed(a, _STORE_VAR) == variable]
                if not placed:
                    listing.urls.append(url)
                    listing.missing.append(
                        f"{variable} names {_redact(url)}, which holds no application "
                        f"{prefix.rstrip('_').lower()!r}; it holds {', '.join(held) or 'none'}"
                    )
                candidates += placed
                named += placed
            if self.rest is not None:
                try:
                    held = self._at(self.rest, None).apps()
                except (FesError, OSError) as error:
                    if candidates:
                        listing.cannot_read("*", self.rest, error)
                        listing.urls.append(self.rest)
                    else:
                        raise  # the one store there is: the command fails
                else:
                    candidates += held
                    if not held:  # looked at, and empty: still a store the command read
                        listing.urls.append(self.rest)
        for name in dict.fromkeys(candidates):
            url = self.url(name)
            listing.urls.append(url)
            try:
                present = name in self.holds(name)
            except (FesError, OSError) as error:
                listing.cannot_read(name, url, error)
                continue
            if present:
                listing.found.append(name)
            elif name in named and self.system is None:
                # a typo (--store loanz=…) or a wrong URL: said, never dropped
                listing.missing.append(self._missing(name))
        listing.urls = list(dict.fromkeys(listing.urls))
        return listing

    def _missing(self, name: str) -> str:
        database = self.database(name)
        known = database.apps()
        return (
            f"the store {_redact(database.url)} has no application {name!r}; "
            f"it has {', '.join(known) or 'none'}"
        )

    def check(self, name: str) -> None:
        """Refuse an application that has no tables where it is placed."""
        if name not in self.holds(name):
            raise ConfigurationError(self._missing(name))

    def close(self) -> None:
        opened, self._open = self._open, {}
        for database in opened.values():
            database.close()

    def __enter__(self) -> _Stores:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _system(spec: str | None) -> System | None:
    """The system ``MODULE:SYSTEM`` names, imported with the current directory on the path."""
    if spec is None:
        return None
    from ._loading import load_system

    # as `python -m` and uvicorn do: the project the command runs in is importable
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return load_system(spec)


def _report(listing: _Listing) -> bool:
    """Print, on stderr, each application that was named but is not where it was placed.

    True if there was one.
    """
    for message in listing.missing:
        print(f"fes: error: {message}", file=sys.stderr)
    return bool(listing.missing)


def _what(label: str) -> str:
    """How a listing's label reads: an application, a variable, or the other applications."""
    if label == settings.ANY_APP:
        return "the other applications' store"
    if label.endswith(_STORE_VAR):
        return f"the store {label} names"
    return f"application {label!r}"


def _redact(url: str) -> str:
    from .stores import redact

    return redact(url)
