"""The ``fes`` command: run the demo, run a system, inspect a store.

::

    fes demo [--orders N] [--store URL] [--processes N]
    fes run MODULE:SYSTEM [--store URL] [--processes N] [--apps A,B]
    fes log [--app A] [--after N] [--limit N] [--system MODULE:SYSTEM]
    fes stream ID --app A [--system MODULE:SYSTEM]
    fes apps [--system MODULE:SYSTEM]
    fes reseal MODULE:SYSTEM --app A [--plain] [--batch-size N]

Every command takes ``--store URL`` (default: ``FES_STORE_URL``, then
``sqlite:///fes.db``; ``demo`` uses a temporary file unless given one),
repeatable as ``--store APP=URL``; the inspecting commands also find the
applications each ``<APP>_FES_STORE_URL`` places, as runners do.  A
failure (a bad URL, an unknown module, a store that cannot be reached) is
one line on stderr and a non-zero exit code; ``--traceback`` shows the
traceback as well.  ``fes apps`` and ``fes log`` show what they can read
and then say what they could not (exit code 1).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from fes.errors import ConfigurationError, FesError, PolicyError

from . import _settings as settings
from ._cli_serve import add_serve
from ._settings import DEFAULT_BATCH_BYTES, DEFAULT_BATCH_SIZE

# `fes --help` imports no codec, store or runner: each command imports what it uses
if TYPE_CHECKING:
    from fes.system import System

    from .stores._base import Database

__all__ = ["main"]


# --- opening stores and systems -----------------------------------------------------


def _given(args: argparse.Namespace) -> str | dict[str, str] | None:
    """What ``--store`` names: one URL, a mapping of applications to URLs, or None."""
    return settings.parse_store_option(args.store or ())


def _no_store(url: str, what: str) -> ConfigurationError:
    return ConfigurationError(
        f"there is no store at {_redact(url)}: {what}; check --store or $FES_STORE_URL"
    )


def _open_existing(url: str, env: Mapping[str, str] | None = None) -> Database:
    """Open a store to inspect it: refuse a missing SQLite file or PostgreSQL schema.

    Inspecting creates nothing, and says that there is nothing rather than
    showing an empty store.  ``env`` is where an HTTP leader's token is read.
    """
    from ._placement import is_remote
    from .stores import open_database
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
    ``urls``: every store looked at, in the order of the applications.
    """

    found: list[str] = field(default_factory=list)
    unreachable: dict[str, tuple[str, str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)


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
                    listing.unreachable[variable] = (url, _reason(error))
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
                    candidates += self._at(self.rest, None).apps()
                except (FesError, OSError) as error:
                    if candidates:
                        listing.unreachable["*"] = (self.rest, _reason(error))
                        listing.urls.append(self.rest)
                    else:
                        raise  # the one store there is: the command fails
        for name in dict.fromkeys(candidates):
            url = self.url(name)
            listing.urls.append(url)
            try:
                present = name in self.holds(name)
            except (FesError, OSError) as error:
                listing.unreachable[name] = (url, _reason(error))
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


# --- commands -------------------------------------------------------------------------


def _report(listing: _Listing) -> bool:
    """Print, on stderr, each application that was named but is not where it was placed.

    True if there was one.
    """
    for message in listing.missing:
        print(f"fes: error: {message}", file=sys.stderr)
    return bool(listing.missing)


def _cmd_log(args: argparse.Namespace, out: TextIO) -> int:
    import orjson

    from ._cli_events import EXIT_ERROR, cell, data_cell, fit, reader, table, when

    system = _system(args.system)
    with _Stores(args, system) as stores:
        if args.app:
            stores.check(args.app)
            listing = _Listing(found=[args.app])
        else:
            listing = stores.listing()
        # every application that can be read is printed; what cannot, is said after
        for name in listing.found:
            database = stores.database(name)
            rows = database.store(name).read_log(args.after, limit=args.limit)
            with reader(database, name, system) as describe:
                records = [describe(row) for row in rows]
            if args.json:
                for record in records:
                    out.write(orjson.dumps(record).decode() + "\n")
                continue
            print(f"{name}: {len(rows)} event(s) after position {args.after}", file=out)
            if rows:
                headers = ["position", "stream", "version", "topic", "recorded at", "data"]
                cells = [
                    [r.position, r.stream, r.version, r.topic, when(r.timestamp), data_cell(d)]
                    for r, d in zip(rows, records, strict=True)
                ]
                # the stream and topic lose their middles first, the time its date
                table(headers, fit(headers, cells, cell, middle=(1, 3), left=(4,)), out)
        out.flush()
        for label, (url, reason) in listing.unreachable.items():
            print(f"fes: error: {_what(label)} at {_redact(url)} cannot be read: {reason}",
                  file=sys.stderr)
        missing = _report(listing)
    return EXIT_ERROR if listing.unreachable or missing else 0


def _what(label: str) -> str:
    """How a listing's label reads: an application, a variable, or the other applications."""
    if label == settings.ANY_APP:
        return "the other applications' store"
    if label.endswith(_STORE_VAR):
        return f"the store {label} names"
    return f"application {label!r}"


def _cmd_stream(args: argparse.Namespace, out: TextIO) -> int:
    import orjson

    from ._cli_events import reader

    system = _system(args.system)
    with _Stores(args, system) as stores:
        stores.check(args.app)
        database = stores.database(args.app)
        rows = database.store(args.app).read_stream(args.id)
        if not rows:
            raise ConfigurationError(f"application {args.app!r} has no stream {args.id!r}")
        with reader(database, args.app, system) as describe:
            for row in rows:
                out.write(orjson.dumps(describe(row)).decode() + "\n")
    return 0


def _cmd_apps(args: argparse.Namespace, out: TextIO) -> int:
    from fes.system import tracking_key, unit_names

    from ._cli_events import EXIT_ERROR, EXIT_STOPPED, table
    from ._skips import SKIPS_STREAM, follower_status

    system = _system(args.system)
    with _Stores(args, system) as stores:
        listing = stores.listing()
        names = listing.found
        last = {name: stores.database(name).store(name).last_position() for name in names}
        # a leader served over HTTP shows its log; its own followers run, and are
        # watched, where it is served
        served = {name for name in names if getattr(stores.database(name), "read_only", False)}
        rows: list[tuple[Any, ...]] = []
        stopped = errors = 0
        followers = (
            [a.name for a in system.followers_all] if system is not None
            else [name for name in names if name not in served]
        )
        for name in followers:
            if system is not None and stores.is_remote(name):
                continue  # run, and watched, where it is served
            tracked: dict[str, int] = {}
            stops: dict[tuple[str, str], Any] | None = {}
            trouble: str | None = None
            if name in listing.unreachable:
                trouble = "its store is unreachable (see below)"
            elif name in last:
                store = stores.database(name).store(name)
                tracked = store.tracked()
                stops = _apps_stops(stores.database(name), name, system)
            # every (follower, leader) that tracked a position or recorded a stop;
            # with the system, every one it has, whether it started or not
            units: dict[tuple[str, str], str | None] = {}
            for key in tracked:
                # a partition i of n tracks its leader as leader#i/n, and runs as name#i
                leader, _, part = key.partition("#")
                units[(f"{name}#{part.partition('/')[0]}" if part else name, leader)] = key
            for unit, leader in stops or {}:
                units.setdefault((unit, leader), _tracking_key(unit, leader, tracked))
            if system is not None:
                app = system.app(name)
                for leader in system.leaders(name):
                    for index, unit in enumerate(unit_names(app)):
                        units.setdefault(
                            (unit, leader), tracking_key(leader, index, app.partitions)
                        )
            for unit, leader in sorted(units):
                tracking = units[(unit, leader)]
                position = None if tracking is None else tracked.get(tracking)
                upstream: int | None = None
                if trouble is not None:
                    status = f"unknown: {trouble}"
                elif stops is None:
                    # its stop records cannot be read here: whether it stopped is unknown,
                    # so it is neither shown nor counted as caught up
                    status = "unknown: its stop records are encoded, pass --system to read them"
                else:
                    upstream, why = _leader_last(stores, listing, leader, last)
                    if upstream is not None and position is not None and position > upstream:
                        # the leader may have moved on since its position was read
                        upstream, why = _leader_last(stores, listing, leader, last, fresh=True)
                    status = follower_status(stops.get((unit, leader)), position, upstream, why)
                stopped += status.startswith("stopped")
                errors += status.startswith(("unknown", "ahead"))
                rows.append((unit, leader, "-" if position is None else position,
                             "?" if upstream is None else upstream, status))

        # the stores, in the order of the applications, those that could not be read marked
        down = {url for url, _ in listing.unreachable.values()}
        shown = [_redact(url) + (" (unreachable)" if url in down else "") for url in listing.urls]
        print(f"store: {', '.join(shown) or '(none)'}", file=out)
        print("\napplications", file=out)
        spread = len(listing.urls) > 1
        table(
            ["application", "last position", "skipped events"] + (["store"] if spread else []),
            [
                (name, last[name],
                 "-" if name in served
                 else stores.database(name).store(name).stream_version(SKIPS_STREAM),
                 *([_redact(stores.url(name))] if spread else []))
                for name in names
            ],
            out,
        )
        for label in listing.unreachable:
            print(f"  {_what(label)}: its store is unreachable (see below)", file=out)
        print("\nfollowers", file=out)
        if rows:
            table(["follower", "leader", "tracked", "leader's last", "status"], rows, out)
        else:
            print("  (none has tracked anything yet)", file=out)
        print("\nviews", file=out)
        if system is None:
            print("  (name the system with --system MODULE:SYSTEM to list its views)", file=out)
        else:
            views = []
            for app in system.apps:
                if app.name not in last or app.name in served:
                    continue
                for view in app.views:
                    found = stores.database(app.name).store(app.name).load_view(view.name)
                    position = 0 if found is None else found[1]
                    behind = max(last[app.name] - position, 0)
                    views.append((f"{app.name}/{view.name}", position, last[app.name],
                                  "up to date" if not behind else f"behind {behind}"))
            if views:
                table(["view", "position", "log's last", "status"], views, out)
            else:
                print("  (the system has no views)", file=out)
        if listing.unreachable:
            # each reason once, however many applications share the store
            reasons: dict[tuple[str, str], list[str]] = {}
            for label, (url, reason) in listing.unreachable.items():
                reasons.setdefault((url, reason), []).append(label)
            print("\nunreachable", file=out)
            for (url, reason), labels in reasons.items():
                print(f"  {', '.join(labels)} at {_redact(url)}: {reason}", file=out)
        out.flush()
        missing = _report(listing)
    if stopped:
        return EXIT_STOPPED
    return EXIT_ERROR if errors or listing.unreachable or missing else 0


def _tracking_key(unit: str, leader: str, tracked: Mapping[str, int]) -> str | None:
    """The key under which ``unit`` tracks ``leader``, if it tracked anything."""
    _, sep, index = unit.partition("#")
    if not sep:
        return leader if leader in tracked else None
    return next((k for k in tracked if k.startswith(f"{leader}#{index}/")), None)


def _leader_last(
    stores: _Stores, listing: _Listing, leader: str, known: dict[str, int], fresh: bool = False
) -> tuple[int | None, str | None]:
    """The leader's last position where the leader lives, or why it is unknown.

    A leader in another store (another database, a service over HTTP) is
    asked there; one that cannot be reached makes its followers' state
    unknown rather than caught up (its reason is kept, to be shown once).
    """
    if leader in known and not fresh:
        return known[leader], None
    if leader in listing.unreachable:
        return None, "leader unreachable (see below)"
    try:
        url = stores.url(leader)
    except ConfigurationError:
        return None, (
            f"no store given here holds leader {leader!r}: add --store {leader}=URL "
            f"or --system"
        )
    try:
        if leader not in stores.holds(leader):
            if stores.system is None:
                return None, f"leader {leader!r} is not in {_redact(url)}"
            # placed as its runner places it, with no tables yet: it holds no event
            position = 0
        else:
            position = stores.database(leader).store(leader).last_position()
    except (FesError, OSError) as error:
        listing.unreachable[leader] = (url, _reason(error))
        if url not in listing.urls:
            listing.urls.append(url)
        return None, "leader unreachable (see below)"
    known[leader] = position
    return position, None


def _apps_stops(
    database: Database, name: str, system: System | None
) -> dict[tuple[str, str], Any] | None:
    """Each (unit, leader) of ``name`` whose recorded stop is not cleared; None if unreadable."""
    from ._application import Application
    from ._cli_events import raw_data
    from ._skips import STOPS_STREAM, current_stops, stops_from_json

    store = database.store(name)
    if not store.stream_version(STOPS_STREAM):
        return {}
    if system is not None and any(a.name == name for a in system.apps):
        # decoded by the application's codec: compressed or encrypted records too
        application = Application(system.app(name), store=database)
        return current_stops(r.event for r in application.stream(STOPS_STREAM))
    return stops_from_json((r.topic, raw_data(r.payload)) for r in store.read_stream(STOPS_STREAM))


def _cmd_reseal(args: argparse.Namespace, out: TextIO) -> int:
    from ._application import Application
    from ._resealing import reseal

    system = _system(args.system)
    assert system is not None
    app = system.app(args.app)
    with _Stores(args, system) as stores:
        stores.check(app.name)
        database = stores.database(app.name)
        # the cipher comes from FES_CIPHER_KEYS / FES_CIPHER_KEY_ID, as for `fes run`
        with Application(app, store=database) as application:
            done = reseal(application, plain=args.plain, batch_size=args.batch_size)
            cipher = application.codec.cipher
    assert cipher is not None  # reseal refuses an application without one
    print(
        f"{app.name}: resealed {done.events} event(s), {done.metadata} metadata and "
        f"{done.snapshots} snapshot(s) under key {cipher.current!r} "
        f"(log walked to position {done.position})",
        file=out,
    )
    return 0


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from ._cli_demo import cmd_demo

    return cmd_demo(args, out)


def _cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from fes.system import app_of_unit

    from ._cli_events import EXIT_STOPPED
    from ._serve import run

    system = _system(args.system)
    assert system is not None
    given = _given(args)
    urls = settings.placement(os.environ, given, [a.name for a in system.apps])
    apps = [a for a in args.apps.split(",") if a] if args.apps else None
    if apps:
        # a follower runs its policy, an application its views: one with neither has
        # nothing to run here (its events are written by the code that uses it)
        idle = [a.name for a in (app_of_unit(system, n) for n in apps)
                if a.policy is None and not a.views]
        for name in dict.fromkeys(idle):
            print(f"fes: {name} has no policy or views: nothing to run here", file=sys.stderr)
        apps = [name for name in apps if name.partition("#")[0] not in idle]
        if not apps:
            return 0
    if len(set(urls.values())) == 1:
        where = _redact(next(iter(urls.values())))
    else:
        where = ", ".join(f"{name}={_redact(url)}" for name, url in urls.items())
    print(
        f"fes: running {', '.join(apps or [a.name for a in system.apps])} on "
        f"{where}; stop with Ctrl-C or SIGTERM",
        file=sys.stderr,
    )
    errors = run(
        # worker processes import the system by name rather than receive a copy
        args.system if args.processes else system,
        urls,
        processes=args.processes,
        apps=apps,
        batch_size=args.batch_size,
        batch_bytes=args.batch_bytes,
        poll_interval=args.poll_interval,
    )
    for error in errors.values():
        print(f"fes: {error}", file=sys.stderr)
    if args.traceback and errors:
        _print_tracebacks(errors, urls, system)
    print("fes: stopped", file=sys.stderr)
    return EXIT_STOPPED if errors else 0


def _print_tracebacks(
    errors: dict[str, PolicyError], urls: dict[str, str], system: System
) -> None:
    """For ``fes run --traceback``: each stopped follower's policy traceback.

    A follower of this process kept its exception; a worker process's
    arrives without one, so its stop record (which keeps it) is read.
    """
    import traceback

    from fes.system import app_of_unit

    from .stores import open_database

    for unit, failure in errors.items():
        error = failure.error
        text: str | None = None
        if error.__traceback__ is not None:
            text = "".join(traceback.format_exception(error, chain=False))
        else:
            name = app_of_unit(system, unit).name
            try:
                with open_database(urls[name]) as database:
                    stops = _apps_stops(database, name, system)
            except (FesError, OSError):
                stops = None
            stop = (stops or {}).get((unit, failure.leader))
            text = stop.traceback if stop is not None else None
        print(f"fes: traceback of follower {unit!r}:", file=sys.stderr)
        print((text or "(not recorded)\n").rstrip("\n"), file=sys.stderr)


def _redact(url: str) -> str:
    from .stores import redact

    return redact(url)


# --- the parser ---------------------------------------------------------------------

_SYSTEM_HELP = (
    "decode events with this system's codecs (imported from the current directory or "
    "the import path): data is shown as the event types' fields, upcast to their "
    "current schema, decrypted with $FES_CIPHER_KEYS, and with correlation and "
    "causation ids; without it, plain or compressed JSON is shown as stored and "
    "encrypted data only by its size"
)


def _count(text: str) -> int:
    """Read a position or a limit: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, not {value}")
    return value



def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fes", description="Functional event sourcing: run and inspect fes systems."
    )
    parser.add_argument("--traceback", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str,
        help: str,
        store: str = "the store URL (default: $FES_STORE_URL, then sqlite:///fes.db); "
        "repeat as --store APP=URL to give an application a store of its own "
        "(--store URL or --store '*=URL' then serves the others)",
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--store", metavar="URL", action="append", help=store)
        sub.add_argument("--traceback", action="store_true", help="show tracebacks of errors")
        return sub

    demo = command(
        "demo",
        "run the shop example system and show what happened",
        store="the store URL (default: a temporary SQLite file, deleted at the end)",
    )
    demo.add_argument("--orders", type=int, default=200, help="how many orders (default 200)")
    demo.add_argument("--processes", type=int, default=0,
                      help="run the applications in N processes (default: threads)")
    demo.add_argument("--seed", type=int, default=7, help="seed of the generated orders")
    demo.add_argument("--timeout", type=float, default=300.0, help=argparse.SUPPRESS)
    demo.set_defaults(handler=_cmd_demo)

    run = command("run", "run a system until interrupted")
    run.add_argument("system", metavar="MODULE:SYSTEM", help="e.g. fes.examples.shop:system")
    run.add_argument("--processes", type=int, default=0,
                     help="run the applications in N processes (default: threads)")
    run.add_argument("--apps", help="run only these applications (comma-separated); "
                     "NAME#I runs partition I of a partitioned one")
    run.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                     help=f"notifications per transaction (default {DEFAULT_BATCH_SIZE})")
    run.add_argument("--batch-bytes", type=int, default=DEFAULT_BATCH_BYTES,
                     help="stored bytes per transaction, at least one notification "
                     f"(default {DEFAULT_BATCH_BYTES})")
    run.add_argument("--poll-interval", type=float, default=1.0,
                     help="seconds between polls when no notification comes (default 1)")
    run.set_defaults(handler=_cmd_run)

    log = command(
        "log",
        "show applications' notification logs, each event with its data (cut to the "
        "terminal's width; whole with --json)",
    )
    log.add_argument("--app", help="only this application")
    log.add_argument("--after", type=_count, default=0, metavar="N",
                     help="start after this position (default 0: from the start)")
    log.add_argument("--limit", type=_count, default=None, metavar="N",
                     help="at most this many events per application")
    log.add_argument("--json", action="store_true", help="one JSON object per line")
    log.add_argument("--system", metavar="MODULE:SYSTEM", help=_SYSTEM_HELP)
    log.set_defaults(handler=_cmd_log)

    stream = command("stream", "print one stream's events as JSON lines")
    stream.add_argument("id", metavar="ID", help="the stream id")
    stream.add_argument("--app", required=True, help="the application the stream is in")
    stream.add_argument("--system", metavar="MODULE:SYSTEM", help=_SYSTEM_HELP)
    stream.set_defaults(handler=_cmd_stream)

    apps = command(
        "apps",
        "show each application's log, each follower's state (running, behind N or "
        "stopped at P) and, with --system, each view's position; exit code 3 if a "
        "follower is stopped",
    )
    apps.add_argument("--system", metavar="MODULE:SYSTEM",
                      help="decode stop records and list views with this system")
    apps.set_defaults(handler=_cmd_apps)

    reseal = command(
        "reseal",
        "encrypt an application's stored events, metadata and latest snapshots under the "
        "current key of $FES_CIPHER_KEYS (after a key rotation)",
    )
    reseal.add_argument("system", metavar="MODULE:SYSTEM", help="the system the app is in")
    reseal.add_argument("--app", required=True, help="the application to reseal")
    reseal.add_argument("--plain", action="store_true",
                        help="also encrypt rows written without a cipher")
    reseal.add_argument("--batch-size", type=int, default=500,
                        help="events per transaction (default 500)")
    reseal.set_defaults(handler=_cmd_reseal)
    add_serve(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fes`` command with ``argv`` (default: the process's arguments)."""
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace, TextIO], int] = args.handler
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="fes: %(levelname)s: %(message)s")
    # the pool's own retries are noise here: a failure is reported once, below
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    try:
        return handler(args, sys.stdout)
    except BrokenPipeError:
        # the reader went away (`fes log | head`): stop quietly, as Unix tools do;
        # point stdout at devnull so that the exit's flush does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("fes: interrupted", file=sys.stderr)
        return 130
    except (FesError, OSError) as error:
        if args.traceback:
            raise
        from ._cli_events import EXIT_ERROR

        print(f"fes: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
