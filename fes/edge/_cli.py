"""The ``fes`` command: run the demo, run a system, inspect a store.

::

    fes demo [--orders N] [--store URL] [--processes N]
    fes run MODULE:SYSTEM [--store URL] [--processes N] [--apps A,B]
    fes log [--app A ...] [--after N] [--limit N] [--system MODULE:SYSTEM]
    fes stream ID --app A [--system MODULE:SYSTEM]
    fes apps [--system MODULE:SYSTEM]
    fes reseal MODULE:SYSTEM --app A [--plain] [--batch-size N]
    fes prune MODULE:SYSTEM --app A

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any, TextIO

from fes.errors import (
    ConfigurationError,
    FesError,
    PolicyError,
    StoreURLError,
    SystemDefinitionError,
    ViewError,
)

from . import _cli_args as parse
from . import _settings as settings
from ._cli_apps import _apps_stops, _apps_view_stops, _cmd_apps
from ._cli_serve import add_serve
from ._cli_stores import _given, _Listing, _redact, _report, _Stores, _system, _what
from ._settings import DEFAULT_BATCH_BYTES, DEFAULT_BATCH_SIZE

# `fes --help` imports no codec, store or runner: each command imports what it uses
if TYPE_CHECKING:
    from fes.system import App, System

    from ._application import Application


__all__ = ["main"]


# --- commands -------------------------------------------------------------------------




def _cmd_log(args: argparse.Namespace, out: TextIO) -> int:
    import orjson

    from ._cli_events import (
        EXIT_ERROR,
        cell,
        data_cell,
        fit,
        reader,
        table,
        text_cell,
        undecoded,
        when,
    )

    system = _system(args.system)
    with _Stores(args, system) as stores:
        if args.app:
            named = list(dict.fromkeys(args.app))  # in the order given, each once
            for name in named:
                stores.check(name)
            listing = _Listing(found=named)
        else:
            listing = stores.listing()
        # every application that can be read is printed; what cannot, is said after
        shown: dict[str, list[dict[str, Any]]] = {}
        for name in listing.found:
            database = stores.database(name)
            rows = database.store(name).read_log(args.after, limit=args.limit)
            with reader(database, name, system) as describe:
                records = [describe(row) for row in rows]
            shown[name] = records
            if args.json:
                for record in records:
                    out.write(orjson.dumps(record).decode() + "\n")
                continue
            print(f"{name}: {len(rows)} event(s) after position {args.after}", file=out)
            if rows:
                headers = ["position", "stream", "version", "topic", "recorded at", "data"]
                cells = [
                    [r.position, text_cell(r.stream), r.version, text_cell(r.topic),
                     when(r.timestamp), data_cell(d)]
                    for r, d in zip(rows, records, strict=True)
                ]
                # the stream and topic lose their middles first, the time its date
                table(headers, fit(headers, cells, cell, middle=(1, 3), left=(4,)), out)
        if not listing.found and not listing.unreachable and not args.json:
            where = ", ".join(map(_redact, listing.urls)) or "this store"
            print(f"no application has written to {where} yet", file=out)
        out.flush()
        for label, (url, reason) in listing.unreachable.items():
            print(f"fes: error: {_what(label)} at {_redact(url)} cannot be read: {reason}",
                  file=sys.stderr)
        # (a list, not any(): each application's undecoded events are said)
        broken = [undecoded(name, records, sys.stderr) for name, records in shown.items()]
        missing = _report(listing)
    return EXIT_ERROR if listing.unreachable or missing or any(broken) else 0




def _cmd_stream(args: argparse.Namespace, out: TextIO) -> int:
    import orjson

    from ._cli_events import EXIT_ERROR, reader, undecoded

    system = _system(args.system)
    with _Stores(args, system) as stores:
        stores.check(args.app)
        database = stores.database(args.app)
        rows = database.store(args.app).read_stream(args.id)
        if not rows:
            raise ConfigurationError(f"application {args.app!r} has no stream {args.id!r}")
        with reader(database, args.app, system) as describe:
            records = [describe(row) for row in rows]
        for record in records:
            out.write(orjson.dumps(record).decode() + "\n")
        out.flush()
    return EXIT_ERROR if undecoded(args.app, records, sys.stderr) else 0


@contextmanager
def _one_application(args: argparse.Namespace) -> Iterator[Application]:
    """The application ``--app`` names in ``args.system``, on its store, for a command on it.

    Its cipher, like its store, comes from the environment, as for `fes run`.
    """
    from ._application import Application

    system = _system(args.system)
    assert system is not None
    app = _named(system, args.app, "--app")
    with _Stores(args, system) as stores:
        stores.check(app.name)
        with Application(app, store=stores.database(app.name)) as application:
            yield application


def _cmd_prune(args: argparse.Namespace, out: TextIO) -> int:
    from ._pruning import prune_snapshots

    with _one_application(args) as application:
        deleted = prune_snapshots(application)
    print(
        f"{application.name}: deleted {deleted} snapshot(s) that no aggregate of this "
        "release reads",
        file=out,
    )
    return 0


def _cmd_reseal(args: argparse.Namespace, out: TextIO) -> int:
    from ._cli_events import EXIT_ERROR
    from ._resealing import reseal

    with _one_application(args) as application:
        name = application.name
        if application.codec.cipher is None:
            raise ConfigurationError(
                f"{name!r} has no cipher to reseal under: set "
                f"{settings.prefixed(name, 'FES_CIPHER_KEYS')} or FES_CIPHER_KEYS "
                "to its keys (id:base64 key, comma-separated), and "
                f"{settings.prefixed(name, 'FES_CIPHER_KEY_ID')} or FES_CIPHER_KEY_ID "
                "to the new key's id"
            )
        done = reseal(application, plain=args.plain, batch_size=args.batch_size)
        cipher = application.codec.cipher
    assert cipher is not None  # reseal refuses an application without one
    left = ""
    if done.snapshots_left:
        left = (
            f"; left {done.snapshots_left} snapshot(s) that no aggregate of this release "
            "opens (of a renamed or removed aggregate, or stored in the clear; see the "
            "warnings) as they were: delete them (fes prune) before an old key leaves the ring"
        )
    print(
        f"{name}: resealed {done.events} event(s), {done.metadata} metadata and "
        f"{done.snapshots} snapshot(s) under key {cipher.current!r} "
        f"(log walked to position {done.position}){left}",
        file=out,
    )
    # not all of it is under the current key: a script retiring the old key must stop
    return EXIT_ERROR if done.snapshots_left else 0


def _named(system: System, unit: str, option: str) -> App:
    """The application ``unit`` names on the command line; a usage error if none."""
    from fes.system import app_of_unit

    try:
        return app_of_unit(system, unit)
    except (ConfigurationError, SystemDefinitionError) as error:
        raise parse.UsageError(option, str(error)) from None


def _as_run(system: System, units: Sequence[str]) -> list[str]:
    """Each unit ``fes run`` runs, with its views, snapshots, compression and cipher.

    An application's views run with its partition 0; its snapshot interval
    is the one its ``Application`` will use: ``FES_SNAPSHOT_EVERY`` (or the
    application's own variable), else the ``App``'s; and so are whether it
    compresses (``FES_COMPRESS``) and the key it encrypts under
    (``FES_CIPHER_KEYS`` and ``FES_CIPHER_KEY_ID``).  A setting the
    application will refuse is left out here: it says why as it starts.
    """
    from .codec import Cipher  # here: `fes --help` loads no codec

    named = []
    for unit in units:
        name, _, part = unit.partition("#")
        app = system.app(name)
        said = []
        views = app.views if part in ("", "0") else ()
        if views:
            said.append(f"view{'s' if len(views) > 1 else ''} {', '.join(v.name for v in views)}")
        try:
            every = settings.snapshot_interval(os.environ, app)
        except ConfigurationError:
            every = None  # the application refuses it, saying why, as it starts
        if every is not None:
            said.append(f"snapshots every {every}")
        with suppress(ConfigurationError):
            if settings.compress(os.environ, app.name):
                said.append("compressed")
        with suppress(ConfigurationError):
            cipher = Cipher.from_env(settings.AppEnv(os.environ, app.name))
            if cipher is not None:
                said.append(f"encrypted under key {cipher.current!r}")
        named.append(f"{unit} ({'; '.join(said)})" if said else unit)
    return named


def _check_places(
    system: System,
    apps: list[str] | None,
    given: str | dict[str, str] | None,
    urls: dict[str, str],
) -> None:
    """Refuse, before ``fes run`` says it is running, a store it could not open.

    Each application run here, and each leader it reads, must be placed,
    and each URL must be one fes can read (not yet opened: a server may be
    down and come back).  A bad URL given with ``--store`` is a usage error.
    """
    from fes.system import app_of_unit

    from ._cli_stores import PRIVATE
    from .stores import SCHEMES, unknown_scheme
    from .stores._urls import parse_url

    running = (
        {app_of_unit(system, unit).name for unit in apps} if apps
        else {a.name for a in system.apps if a.policy is not None or a.views}
    )
    needed = running | {leader for name in running for leader in system.leaders(name)}
    unplaced = settings.unplaced(os.environ, given, [a.name for a in system.apps])
    for name in (a.name for a in system.apps):  # in the system's order
        if name in needed and name in unplaced:
            raise ConfigurationError(unplaced[name])
    from ._placement import is_remote
    from ._runners import check_remote

    remote = {name for name, url in urls.items() if is_remote(url)}
    check_remote(
        {name: _redact(url) for name, url in urls.items()}, remote, [a.name for a in system.apps]
    )
    if not apps and remote and not running - remote:
        raise ConfigurationError(
            "every application this system runs is served by another service over "
            "HTTP: there is nothing to run here (give the followers a store of their own)"
        )
    for url in dict.fromkeys(urls.values()):
        try:
            parsed = parse_url(url)
            if parsed.scheme not in SCHEMES:
                raise unknown_scheme(parsed)
            if parsed.scheme == "memory":
                raise parsed.error(PRIVATE)
        except StoreURLError as error:
            if given is not None and url in (
                given.values() if isinstance(given, dict) else (given,)
            ):
                raise parse.UsageError("--store", str(error)) from None
            raise


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
    names = [a.name for a in system.apps]
    try:
        urls = settings.placement(os.environ, given, names)
    except ConfigurationError as error:
        if isinstance(given, dict) and any(
            key != settings.ANY_APP and key not in names for key in given
        ):  # --store loanz=URL: a name the system does not have, as --apps loanz is
            raise parse.UsageError("--store", str(error)) from None
        raise
    apps: list[str] | None = args.apps  # one or more names, if given (see _cli_args)
    if apps:
        for name in apps:
            _named(system, name, "--apps")
        # a follower runs its policy, an application its views: one with neither has
        # nothing to run here (its events are written by the code that uses it)
        idle = [a.name for a in (app_of_unit(system, n) for n in apps)
                if a.policy is None and not a.views]
        for name in dict.fromkeys(idle):
            print(f"fes: {name} has no policy or views: nothing to run here", file=sys.stderr)
        apps = [name for name in apps if name.partition("#")[0] not in idle]
        if not apps:
            return 0
    _check_places(system, apps, given, urls)
    if len(set(urls.values())) == 1:
        where = _redact(next(iter(urls.values())))
    else:
        where = ", ".join(f"{name}={_redact(url)}" for name, url in urls.items())
    # what runs here: an application with neither policy nor views has nothing to
    # run (its events are written by the code that uses it), so it is not named
    running = apps or [a.name for a in system.apps if a.policy is not None or a.views]
    named = _as_run(system, running or [a.name for a in system.apps])
    said = (
        f"fes: running {', '.join(named)} on {where}; stop with Ctrl-C or SIGTERM"
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
        # said once the stores it drives are open and checked, not before a refusal
        on_start=lambda: print(said, file=sys.stderr),
    )
    for failure in errors.values():
        print(f"fes: {failure}", file=sys.stderr)
    if args.traceback and errors:
        _print_tracebacks(errors, urls, system)
    print("fes: stopped", file=sys.stderr)
    return EXIT_STOPPED if errors else 0


def _print_tracebacks(
    errors: dict[str, PolicyError], urls: dict[str, str], system: System
) -> None:
    """For ``fes run --traceback``: each stopped follower's policy traceback (and each
    stopped view's ``apply`` traceback).

    Each is the text formatted when it stopped (by this process, or by the
    worker process that reported it): formatted now, it would show the
    source file as it is now, which a fix may have changed meanwhile.  A
    report without it falls back on the stop record, which keeps the same.
    """
    from fes.system import app_of_unit

    from .stores import open_database

    for unit, failure in errors.items():
        text = failure.traceback  # formatted when it stopped
        if text is None and isinstance(failure, ViewError):
            try:
                with open_database(urls[failure.app]) as database:
                    view_stop = _apps_view_stops(database, failure.app, system).get(failure.view)
            except (FesError, OSError):
                view_stop = None
            text = view_stop.traceback if view_stop is not None else None
        elif text is None:
            name = app_of_unit(system, unit).name
            try:
                with open_database(urls[name]) as database:
                    stops = _apps_stops(database, name, system)
            except (FesError, OSError):
                stops = None
            stop = (stops or {}).get((unit, failure.leader))
            text = stop.traceback if stop is not None else None
        what = "view" if isinstance(failure, ViewError) else "follower"
        print(f"fes: traceback of {what} {unit!r}:", file=sys.stderr)
        print((text or "(not recorded)\n").rstrip("\n"), file=sys.stderr)




# --- the parser ---------------------------------------------------------------------

_SYSTEM_HELP = (
    "decode events with this system's codecs (imported from the current directory or "
    "the import path): data is shown as the event types' fields, upcast to their "
    "current schema, decrypted with $FES_CIPHER_KEYS, and with correlation and "
    "causation ids; without it, plain or compressed JSON is shown as stored and "
    "encrypted data only by its size"
)


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
        sub.set_defaults(parser=sub)  # for a UsageError found once the system is loaded
        return sub

    demo = command(
        "demo",
        "run the shop example system and show what happened",
        store="the store URL (default: a temporary SQLite file, deleted at the end)",
    )
    demo.add_argument("--orders", type=parse.size, default=200,
                      help="how many orders (default 200)")
    demo.add_argument("--processes", type=parse.count, default=0, metavar="N",
                      help="run the applications in N processes (default 0: threads)")
    demo.add_argument("--seed", type=int, default=7, help="seed of the generated orders")
    demo.add_argument("--timeout", type=float, default=300.0, help=argparse.SUPPRESS)
    demo.set_defaults(handler=_cmd_demo)

    run = command("run", "run a system until interrupted")
    run.add_argument("system", metavar="MODULE:SYSTEM", help="e.g. fes.examples.shop:system")
    run.add_argument("--processes", type=parse.count, default=0, metavar="N",
                     help="run the applications in N processes (default 0: threads)")
    run.add_argument("--apps", type=parse.names, metavar="A,B",
                     help="run only these applications (comma-separated); "
                     "NAME#I runs partition I of a partitioned one")
    run.add_argument("--batch-size", type=parse.size, default=DEFAULT_BATCH_SIZE, metavar="N",
                     help=f"notifications per transaction (default {DEFAULT_BATCH_SIZE})")
    run.add_argument("--batch-bytes", type=parse.size, default=DEFAULT_BATCH_BYTES, metavar="N",
                     help="stored bytes per transaction, at least one notification "
                     f"(default {DEFAULT_BATCH_BYTES})")
    run.add_argument("--poll-interval", type=parse.seconds, metavar="SECONDS", default=1.0,
                     help="longest wait, in seconds, of a thread with nothing to do before "
                     "it reads its log again (default 1); the store URL's poll_interval "
                     "may look sooner")
    run.set_defaults(handler=_cmd_run)

    log = command(
        "log",
        "show applications' notification logs, each event with its data (cut to the "
        "terminal's width; whole with --json)",
    )
    log.add_argument("--app", action="append", metavar="APP",
                     help="only this application (repeat for more)")
    log.add_argument("--after", type=parse.count, default=0, metavar="N",
                     help="start after this position (default 0: from the start)")
    log.add_argument("--limit", type=parse.count, default=None, metavar="N",
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
        "show each application's log, each follower's state (caught up, behind N, "
        "not started, stopped at P, ahead of its leader (a store mixed up?), mismatched "
        "(another number of partitions) or unknown, "
        "with why: the stores cannot tell whether a process runs it now; --watch can) "
        "and, with --system, each view's position (or its stop); exit code 3 if a "
        "follower or view is stopped, else 4 if one is stalled (--watch), else 1 "
        "if one is ahead, mismatched or unknown, a store cannot be read or one named by "
        "--store APP=URL is not in it, else 0 (2: a usage error)",
    )
    apps.add_argument("--system", metavar="MODULE:SYSTEM",
                      help="decode stop records and list views with this system")
    apps.add_argument(
        "--watch", type=parse.seconds, default=0.0, metavar="SECONDS",
        help="read each position again after SECONDS: a follower or view that was behind "
        "and did not move is shown stalled (is anything running it?), with exit code 4",
    )
    apps.set_defaults(handler=_cmd_apps)

    def on_one_app(name: str, about: str, app: str) -> argparse.ArgumentParser:
        """A command on one application of a system: ``MODULE:SYSTEM --app NAME``."""
        sub = command(name, about)
        sub.add_argument("system", metavar="MODULE:SYSTEM", help="the system the app is in")
        sub.add_argument("--app", required=True, help=app)
        return sub

    reseal = on_one_app(
        "reseal",
        "encrypt an application's stored events, metadata and snapshots under the "
        "current key of $FES_CIPHER_KEYS (after a key rotation)",
        "the application to reseal",
    )
    reseal.add_argument("--plain", action="store_true",
                        help="also encrypt rows written without a cipher")
    reseal.add_argument("--batch-size", type=parse.size, default=500, metavar="N",
                        help="events per transaction (default 500)")
    reseal.set_defaults(handler=_cmd_reseal)

    prune = on_one_app(
        "prune",
        "delete an application's snapshots that no aggregate of this release reads "
        "(an earlier definition's, after a deploy changed it); its events are untouched",
        "the application whose snapshots to prune",
    )
    prune.set_defaults(handler=_cmd_prune)
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
    except parse.UsageError as error:
        sub: argparse.ArgumentParser = args.parser
        sub.error(str(error))  # exits with 2, after the command's usage line
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
