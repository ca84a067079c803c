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
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, TextIO

import attrs
import orjson
import pyrsistent

from fes.errors import ConfigurationError, FesError
from fes.events import Recorded
from fes.system import System, app_of_unit

from . import _settings as settings
from ._application import Application
from ._follower import DEFAULT_BATCH_SIZE
from ._skips import SKIPS_STREAM, follower_status
from .stores import open_database
from .stores._base import Database, StoredEvent

__all__ = ["main"]


#: Exit codes: 0 done, 1 a fes error, 2 bad usage (argparse), 3 a follower stopped.
EXIT_ERROR = 1
EXIT_STOPPED = 3


# --- small output helpers --------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO) -> None:
    """Print rows under headers, numbers right-aligned, columns two spaces apart."""
    cells = [[str(h) for h in headers], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [
        all(isinstance(row[i], int) for row in rows) and bool(rows) for i in range(len(headers))
    ]
    for index, row in enumerate(cells):
        parts = [
            c.rjust(w) if numeric[i] else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  " + "  ".join(parts).rstrip(), file=out)
        if index == 0:
            print("  " + "  ".join("-" * w for w in widths), file=out)


def _cell(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


class _Progress:
    """A plain-text progress bar on a stream: redrawn in place on a terminal."""

    def __init__(self, label: str, total: int, out: TextIO, unit: str = "") -> None:
        self.label = label
        self.total = max(total, 1)
        self.out = out
        self.unit = unit
        self.tty = out.isatty()
        self._drawn = -1.0

    def update(self, done: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and (not self.tty or now - self._drawn < 0.1):
            return
        self._drawn = now
        width = 30
        filled = min(width, width * done // self.total)
        bar = "#" * filled + "." * (width - filled)
        text = f"{self.label:<12} [{bar}] {done}/{self.total}{self.unit}"
        end = "\n" if final else ""
        prefix = "\r" if self.tty else ""
        self.out.write(prefix + text + end)
        self.out.flush()


def _jsonable(value: Any) -> Any:
    """A value as plain JSON data: attrs classes as objects, collections as arrays."""
    if attrs.has(type(value)):
        return {f.name: _jsonable(getattr(value, f.name)) for f in attrs.fields(type(value))}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset, pyrsistent.PSet)):
        return sorted((_jsonable(v) for v in value), key=repr)
    if isinstance(value, (list, tuple, pyrsistent.PVector)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _raw_data(row: StoredEvent) -> Any:
    """The stored payload as JSON data if it is plain JSON; None if it is encoded."""
    if row.payload[:1] != b"{":
        return None
    try:
        return orjson.loads(row.payload)
    except orjson.JSONDecodeError:
        return None


def _when(micros: int) -> str:
    moment = datetime.fromtimestamp(micros / 1e6, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- opening stores and systems -----------------------------------------------------


def _url(args: argparse.Namespace, system: System | None = None) -> str:
    """The store a command works on: --store, else the environment's, else the default."""
    if system is not None:
        return settings.system_store_url(os.environ, args.store, (a.name for a in system.apps))
    return settings.store_url(os.environ, args.store)


@contextmanager
def _open_existing(url: str) -> Iterator[Database]:
    """Open a store to inspect it: an SQLite file is not created if it is missing."""
    database = open_database(url, create=False) if url.startswith("sqlite:") else (
        open_database(url)
    )
    try:
        yield database
    finally:
        database.close()


def _system(spec: str | None) -> System | None:
    if spec is None:
        return None
    from ._loading import load_system

    return load_system(spec)


def _check_app(database: Database, name: str) -> None:
    known = database.apps()
    if name not in known:
        raise ConfigurationError(
            f"the store {database.url} has no application {name!r}; "
            f"it has {', '.join(known) or 'none'}"
        )


@contextmanager
def _reader(
    database: Database, name: str, system: System | None
) -> Iterator[Callable[[StoredEvent], dict[str, Any]]]:
    """A function turning one stored row of ``name`` into a JSON-ready record."""
    application: Application | None = None
    if system is not None:
        application = Application(system.app(name), store=database)

    def describe(row: StoredEvent) -> dict[str, Any]:
        record: dict[str, Any] = {
            "app": name,
            "position": row.position,
            "stream": row.stream,
            "version": row.version,
            "topic": row.topic,
            "timestamp": _when(row.timestamp),
        }
        if application is not None:
            recorded: Recorded[Any] = application.recorded(row)
            record["data"] = _jsonable(recorded.event)
            meta = recorded.metadata
            record["correlation_id"] = meta.correlation_id
            record["causation_id"] = meta.causation_id
        else:
            data = _raw_data(row)
            record["data"] = data
            if data is None:
                record["encoded_bytes"] = len(row.payload)
            if row.meta:
                with suppress(orjson.JSONDecodeError):
                    record.update(
                        {k: v for k, v in orjson.loads(row.meta).items() if k != "headers"}
                    )
        return record

    yield describe


# --- commands -------------------------------------------------------------------------


def _cmd_log(args: argparse.Namespace, out: TextIO) -> int:
    system = _system(args.system)
    with _open_existing(_url(args)) as database:
        names = [args.app] if args.app else database.apps()
        for name in names:
            _check_app(database, name)
        for name in names:
            rows = database.store(name).read_log(args.after, limit=args.limit)
            if args.json:
                with _reader(database, name, system) as describe:
                    for row in rows:
                        out.write(orjson.dumps(describe(row)).decode() + "\n")
                continue
            print(f"{name}: {len(rows)} event(s) after position {args.after}", file=out)
            if rows:
                _table(
                    ["position", "stream", "version", "topic", "recorded at"],
                    [(r.position, r.stream, r.version, r.topic, _when(r.timestamp))
                     for r in rows],
                    out,
                )
    return 0


def _cmd_stream(args: argparse.Namespace, out: TextIO) -> int:
    system = _system(args.system)
    with _open_existing(_url(args)) as database:
        _check_app(database, args.app)
        rows = database.store(args.app).read_stream(args.id)
        if not rows:
            raise ConfigurationError(f"application {args.app!r} has no stream {args.id!r}")
        with _reader(database, args.app, system) as describe:
            for row in rows:
                out.write(orjson.dumps(describe(row)).decode() + "\n")
    return 0


def _cmd_apps(args: argparse.Namespace, out: TextIO) -> int:
    system = _system(args.system)
    with _open_existing(_url(args, system)) as database:
        names = database.apps()
        stores = {name: database.store(name) for name in names}
        last = {name: store.last_position() for name, store in stores.items()}
        print(f"store: {database.url}", file=out)
        print("\napplications", file=out)
        _table(
            ["application", "last position", "skipped events"],
            [(name, last[name], store.stream_version(SKIPS_STREAM))
             for name, store in stores.items()],
            out,
        )
        rows = []
        stopped = 0
        for name, store in stores.items():
            stops = _apps_stops(database, name, system)
            for key, tracked in sorted(store.tracked().items()):
                # a partition i of n tracks its leader as leader#i/n, and runs as name#i
                leader, _, part = key.partition("#")
                unit = f"{name}#{part.partition('/')[0]}" if part else name
                upstream = last.get(leader)
                if stops is None:
                    status = follower_status(None, tracked, upstream)
                    status += " (stop records encoded: pass --system to read them)"
                else:
                    status = follower_status(stops.get((unit, leader)), tracked, upstream)
                stopped += status.startswith("stopped")
                rows.append((unit, leader, tracked, "?" if upstream is None else upstream,
                             status))
        print("\nfollowers", file=out)
        if rows:
            _table(["follower", "leader", "tracked", "leader's last", "status"], rows, out)
        else:
            print("  (none has tracked anything yet)", file=out)
        print("\nviews", file=out)
        if system is None:
            print("  (name the system with --system MODULE:SYSTEM to list its views)", file=out)
        else:
            views = []
            for app in system.apps:
                if app.name not in stores:
                    continue
                for view in app.views:
                    found = stores[app.name].load_view(view.name)
                    position = 0 if found is None else found[1]
                    behind = max(last[app.name] - position, 0)
                    views.append((f"{app.name}/{view.name}", position, last[app.name],
                                  "up to date" if not behind else f"behind {behind}"))
            if views:
                _table(["view", "position", "log's last", "status"], views, out)
            else:
                print("  (the system has no views)", file=out)
    return EXIT_STOPPED if stopped else 0


def _apps_stops(
    database: Database, name: str, system: System | None
) -> dict[tuple[str, str], Any] | None:
    """Each (unit, leader) of ``name`` whose recorded stop is not cleared; None if unreadable."""
    from ._skips import STOPS_STREAM, current_stops, stops_from_json

    store = database.store(name)
    if not store.stream_version(STOPS_STREAM):
        return {}
    if system is not None and any(a.name == name for a in system.apps):
        # decoded by the application's codec: compressed or encrypted records too
        application = Application(system.app(name), store=database)
        return current_stops(r.event for r in application.stream(STOPS_STREAM))
    return stops_from_json((r.topic, _raw_data(r)) for r in store.read_stream(STOPS_STREAM))


def _cmd_reseal(args: argparse.Namespace, out: TextIO) -> int:
    from ._resealing import reseal

    system = _system(args.system)
    assert system is not None
    app = system.app(args.app)
    with _open_existing(_url(args)) as database:
        _check_app(database, app.name)
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


def _cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from ._serve import run

    system = _system(args.system)
    assert system is not None
    url = _url(args, system)
    apps = [a for a in args.apps.split(",") if a] if args.apps else None
    for name in apps or ():
        app_of_unit(system, name)
    print(
        f"fes: running {', '.join(apps or [a.name for a in system.apps])} on "
        f"{_redact(url)}; stop with Ctrl-C or SIGTERM",
        file=sys.stderr,
    )
    errors = run(
        # worker processes import the system by name rather than receive a copy
        args.system if args.processes else system,
        url,
        processes=args.processes,
        apps=apps,
        batch_size=args.batch_size,
        poll_interval=args.poll_interval,
    )
    for error in errors.values():
        print(f"fes: {error}", file=sys.stderr)
    print("fes: stopped", file=sys.stderr)
    return EXIT_STOPPED if errors else 0


def _redact(url: str) -> str:
    from .stores import redact

    return redact(url)


# --- the demo -----------------------------------------------------------------------


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from fes.examples import shop

    from ._processes import ProcessRunner
    from ._runners import ThreadedRunner

    temporary: str | None = None
    if args.store:
        url = args.store
    else:
        temporary = tempfile.mkdtemp(prefix="fes-demo-")
        url = f"sqlite:///{os.path.join(temporary, 'demo.db')}"
    err = sys.stderr
    count = args.orders
    try:
        print(
            f"fes demo: {count} orders through orders -> reservations -> payments -> orders",
            file=out,
        )
        where = " (a temporary file, deleted at the end)" if temporary else ""
        print(f"store: {_redact(url)}{where}\n", file=out)
        started = time.monotonic()
        runner: ThreadedRunner | ProcessRunner
        if args.processes:
            runner = ProcessRunner(
                "fes.examples.shop:system", url, processes=args.processes, poll_interval=0.2
            )
        else:
            runner = ThreadedRunner(shop.system, url, poll_interval=0.2)
        try:
            orders = runner.app("orders")
            reservations = runner.app("reservations")
            chance = random.Random(args.seed)
            skus = ["kettle", "lamp", "mug", "radio", "teapot"]
            for sku in skus:
                reservations.execute(
                    shop.stock, shop.stock_stream(sku), shop.restock, sku, count * 2 // 5 + 5
                )
            bar = _Progress("placing", count, err)
            for first in range(0, count, 10):
                # ten new orders per transaction: one atomic append across ten streams
                batch = orders.batch()
                for _ in range(min(10, count - first)):
                    batch.execute(
                        shop.order,
                        orders.new_id(),
                        shop.place,
                        f"customer-{chance.randrange(1, count // 4 + 2)}",
                        chance.choice(skus),
                        chance.randint(1, 3),
                        chance.randint(10, 700) * 100,
                    )
                orders.commit(batch)
                done = min(first + 10, count)
                bar.update(done, final=done == count)
            placed_in = time.monotonic() - started
            statuses = runner.view("orders", "statuses")
            bar = _Progress("processing", count, err, " settled")
            begun = time.monotonic()
            runner.start()
            while True:
                state = statuses.state()
                settled = state.get("paid", 0) + state.get("cancelled", 0)
                bar.update(settled)
                if settled >= count and runner.wait_until_quiet(timeout=0.5):
                    break
                if runner.errors:
                    break
                if time.monotonic() - begun > args.timeout:
                    raise FesError(f"the demo did not settle in {args.timeout:.0f}s")
                time.sleep(0.05)
            bar.update(settled, final=True)
            processed_in = time.monotonic() - begun
            runner.stop()
            _demo_report(runner, shop, count + len(skus), placed_in, processed_in, out)
        finally:
            runner.close()
        if temporary:
            print(
                "\nto keep the store and look around: fes demo --store sqlite:///fes-demo.db, "
                "then fes apps --store sqlite:///fes-demo.db",
                file=out,
            )
        return EXIT_STOPPED if runner.errors else 0
    finally:
        if temporary:
            shutil.rmtree(temporary, ignore_errors=True)


def _demo_report(
    runner: Any, shop: Any, inputs: int, placed_in: float, processed_in: float, out: TextIO
) -> None:
    orders_log = runner.app("orders").log()
    status = runner.view("orders", "statuses").state()
    reasons: Counter[str] = Counter()
    for recorded in orders_log:
        if isinstance(recorded.event, shop.OrderCancelled):
            reasons[recorded.event.reason.split(" (")[0].split(":")[0]] += 1
    print("\norders by status", file=out)
    rows: list[tuple[str, int]] = [("paid", status.get("paid", 0))]
    rows.append(("cancelled", status.get("cancelled", 0)))
    rows.extend((f"  {reason}", n) for reason, n in sorted(reasons.items()))
    rows.append(("still open", status.get("placed", 0)))
    _table(["status", "orders"], rows, out)

    print("\nevents per application", file=out)
    event_rows = []
    total = 0
    for name, application in runner.applications.items():
        counts = Counter(type(r.event).__name__ for r in application.log())
        total += sum(counts.values())
        for index, (kind, n) in enumerate(sorted(counts.items())):
            event_rows.append((name if index == 0 else "", kind, n))
    _table(["application", "event", "count"], event_rows, out)

    print("\nfollowers", file=out)
    follow_rows = []
    for (leader, follower), behind in sorted(runner.lags().items(), key=lambda x: x[0][1]):
        tracked = runner.app(follower).store.last_tracked(leader)
        follow_rows.append((follower, leader, tracked, behind))
    _table(["follower", "leader", "tracked position", "lag"], follow_rows, out)

    revenue = runner.view("payments", "revenue").state()
    print(f"\nrevenue (view payments/revenue): {revenue / 100:,.2f}", file=out)
    caused = total - inputs
    rate = caused / processed_in if processed_in else 0.0
    print(
        f"time: placing {placed_in:.2f}s, processing {processed_in:.2f}s: "
        f"{inputs:,} events written by hand caused {caused:,} more "
        f"({rate:,.0f} events/s)",
        file=out,
    )


# --- the parser ---------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fes", description="Functional event sourcing: run and inspect fes systems."
    )
    parser.add_argument("--traceback", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str,
        help: str,
        store: str = "the store URL (default: $FES_STORE_URL, then sqlite:///fes.db)",
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--store", metavar="URL", help=store)
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
    run.add_argument("--poll-interval", type=float, default=1.0,
                     help="seconds between polls when no notification comes (default 1)")
    run.set_defaults(handler=_cmd_run)

    log = command("log", "show applications' notification logs")
    log.add_argument("--app", help="only this application")
    log.add_argument("--after", type=int, default=0, help="start after this position")
    log.add_argument("--limit", type=int, default=None, help="at most this many events")
    log.add_argument("--json", action="store_true", help="one JSON object per line")
    log.add_argument("--system", metavar="MODULE:SYSTEM", help="decode events with this system")
    log.set_defaults(handler=_cmd_log)

    stream = command("stream", "print one stream's events as JSON lines")
    stream.add_argument("id", metavar="ID", help="the stream id")
    stream.add_argument("--app", required=True, help="the application the stream is in")
    stream.add_argument("--system", metavar="MODULE:SYSTEM",
                        help="decode events with this system")
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
    except KeyboardInterrupt:
        print("fes: interrupted", file=sys.stderr)
        return 130
    except (FesError, OSError) as error:
        if args.traceback:
            raise
        print(f"fes: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
