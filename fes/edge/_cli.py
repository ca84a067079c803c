"""The ``fes`` command: run the demo, run a system, inspect a store.

::

    fes demo [--orders N] [--store URL] [--processes N]
    fes run MODULE:SYSTEM [--store URL] [--processes N] [--apps A,B]
    fes log [--app A] [--after N] [--limit N] [--system MODULE:SYSTEM]
    fes stream ID --app A [--system MODULE:SYSTEM]
    fes apps
    fes reseal MODULE:SYSTEM --app A [--plain] [--batch-size N]

Every command takes ``--store URL`` (default: ``FES_STORE_URL``, then
``sqlite:///fes.db``; ``demo`` uses a temporary file unless given one).  A
failure (a bad URL, an unknown module, a store that cannot be reached) is
one line on stderr and a non-zero exit code; ``--traceback`` shows the
traceback as well.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
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




# --- small output helpers --------------------------------------------------------


# --- opening stores and systems -----------------------------------------------------


def _given(args: argparse.Namespace) -> str | dict[str, str] | None:
    """What ``--store`` names: one URL, a mapping of applications to URLs, or None."""
    return settings.parse_store_option(args.store or ())


def _no_store(url: str, what: str) -> ConfigurationError:
    return ConfigurationError(
        f"there is no store at {_redact(url)}: {what}; check --store or $FES_STORE_URL"
    )


def _open_existing(url: str) -> Database:
    """Open a store to inspect it: refuse a missing SQLite file or PostgreSQL schema.

    Inspecting creates nothing, and says that there is nothing rather than
    showing an empty store.
    """
    from .stores import open_database
    if url.lower().startswith("sqlite:"):
        from .stores._sqlite._options import file_path
        from .stores._urls import parse_url

        path = file_path(parse_url(url))
        if not os.path.exists(path):
            raise _no_store(url, f"there is no file {path}")
        database = open_database(url, create=False)
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


class _Stores:
    """The stores a command inspects, each opened once (and created never).

    With a system, each of its applications is placed as a runner would
    place it (``--store``, then ``<APP>_FES_STORE_URL``, ``FES_STORE_URL``);
    without one, the applications ``--store APP=URL`` names are looked for
    in their stores and every other application in the remaining store.
    """

    def __init__(self, args: argparse.Namespace, system: System | None) -> None:
        given = _given(args)
        self.system = system
        self.urls: dict[str, str] = {}
        self.rest: str | None = None
        if system is not None:
            for name, url in settings.placement(
                os.environ, given, [a.name for a in system.apps]
            ).items():
                self.urls[name] = url
        else:
            mapping = given if isinstance(given, dict) else {}
            self.urls = {k: v for k, v in mapping.items() if k != settings.ANY_APP}
            rest = given if isinstance(given, str) else mapping.get(settings.ANY_APP)
            if rest is not None or not self.urls:
                self.rest = settings.store_url(os.environ, rest)
        self._open: dict[str, Database] = {}

    def url(self, name: str) -> str:
        """The URL of the store ``name`` lives in."""
        if name in self.urls:
            return self.urls[name]
        if self.rest is None:
            raise ConfigurationError(
                f"no --store names where {name!r} lives; add --store {name}=URL"
            )
        return self.rest

    def database(self, name: str) -> Database:
        """The database application ``name`` lives in."""
        return self._at(self.url(name))

    def _at(self, url: str) -> Database:
        if url not in self._open:
            self._open[url] = _open_existing(url)
        return self._open[url]

    def apps(self, unreachable: dict[str, str] | None = None) -> list[str]:
        """The applications with tables where they are placed, in a stable order.

        With ``unreachable``, an application whose store cannot be opened is
        put there with the reason, rather than failing the command.
        """
        names = (
            [a.name for a in self.system.apps] if self.system is not None else list(self.urls)
        )
        if self.system is None and self.rest is not None:
            names += self._at(self.rest).apps()
        found = []
        for name in dict.fromkeys(names):
            try:
                present = name in self.database(name).apps()
            except (FesError, OSError) as error:
                if unreachable is None:
                    raise
                unreachable[name] = " ".join(str(error).split()) or type(error).__name__
                continue
            if present:
                found.append(name)
        return found

    def check(self, name: str) -> None:
        """Refuse an application that has no tables where it is placed."""
        database = self.database(name)
        known = database.apps()
        if name not in known:
            raise ConfigurationError(
                f"the store {database.url} has no application {name!r}; "
                f"it has {', '.join(known) or 'none'}"
            )

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


def _cmd_log(args: argparse.Namespace, out: TextIO) -> int:
    import orjson

    from ._cli_events import cell, data_cell, fit, reader, table, when

    system = _system(args.system)
    with _Stores(args, system) as stores:
        names = [args.app] if args.app else stores.apps()
        for name in names:
            stores.check(name)
        for name in names:
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
    return 0


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
    from ._cli_events import EXIT_ERROR, EXIT_STOPPED, table
    from ._skips import SKIPS_STREAM, follower_status

    system = _system(args.system)
    with _Stores(args, system) as stores:
        unreachable: dict[str, str] = {}
        names = stores.apps(unreachable)
        last = {name: stores.database(name).store(name).last_position() for name in names}
        urls = {stores.database(name).url for name in names}
        print(f"store: {', '.join(sorted(urls)) or '(none)'}", file=out)
        print("\napplications", file=out)
        spread = len(urls) > 1
        # a leader served over HTTP shows its log; its own followers run, and are
        # watched, where it is served
        served = {name for name in names if getattr(stores.database(name), "read_only", False)}
        table(
            ["application", "last position", "skipped events"] + (["store"] if spread else []),
            [
                (name, last[name],
                 "-" if name in served
                 else stores.database(name).store(name).stream_version(SKIPS_STREAM),
                 *([stores.database(name).url] if spread else []))
                for name in names
            ],
            out,
        )
        for name, reason in unreachable.items():
            print(f"  {name}: cannot be reached ({reason})", file=out)
        rows = []
        stopped, unknown = 0, len(unreachable)
        for name in names:
            if name in served:
                continue
            stops = _apps_stops(stores.database(name), name, system)
            for key, tracked in sorted(stores.database(name).store(name).tracked().items()):
                # a partition i of n tracks its leader as leader#i/n, and runs as name#i
                leader, _, part = key.partition("#")
                unit = f"{name}#{part.partition('/')[0]}" if part else name
                upstream, trouble = _leader_last(stores, leader, last)
                if trouble is not None:
                    unknown += 1
                    status = f"unknown: leader {leader!r} cannot be reached ({trouble})"
                elif stops is None:
                    # its stop records cannot be read here: whether it stopped is unknown,
                    # so it is neither shown nor counted as caught up
                    unknown += 1
                    status = "unknown: its stop records are encoded, pass --system to read them"
                else:
                    status = follower_status(stops.get((unit, leader)), tracked, upstream)
                stopped += status.startswith("stopped")
                rows.append((unit, leader, tracked, "?" if upstream is None else upstream,
                             status))
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
    return EXIT_STOPPED if stopped else EXIT_ERROR if unknown else 0


def _leader_last(
    stores: _Stores, leader: str, known: dict[str, int]
) -> tuple[int | None, str | None]:
    """The leader's last position where the leader lives, or why it cannot be read.

    A leader in another store (another database, a service over HTTP) is
    asked there; one that cannot be reached makes its followers' state
    unknown rather than caught up.
    """
    if leader in known:
        return known[leader], None
    try:
        stores.url(leader)
    except ConfigurationError:
        return None, None  # placed nowhere this command knows: shown as "?"
    try:
        database = stores.database(leader)
        if leader not in database.apps():
            return None, None  # no tables there (yet): shown as "?", nothing created
        position = database.store(leader).last_position()
    except (FesError, OSError) as error:
        return None, " ".join(str(error).split()) or type(error).__name__
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
    for name in apps or ():
        app_of_unit(system, name)
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
