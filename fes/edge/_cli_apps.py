"""``fes apps``: each application's log, each follower's state, each view's position.

A follower's tracked position is read where the follower lives and its
leader's last position where the leader lives (another database, or a
service over HTTP); a stop record, an unreachable leader or a follower
ahead of its leader is said, and the exit code says it too.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, TextIO

from fes.errors import ConfigurationError, DecodeError, FesError

if TYPE_CHECKING:
    from fes.system import System

    from .stores._base import Database

from . import _settings as settings
from ._cli_stores import _Listing, _reason, _redact, _report, _Stores, _system, _what


def _cmd_apps(args: argparse.Namespace, out: TextIO) -> int:
    from fes.system import foreign_tracking, tracking_key, unit_names

    from ._cli_events import EXIT_ERROR, EXIT_STALLED, EXIT_STOPPED, table
    from ._skips import SKIPS_STREAM, follower_status

    system = _system(args.system)
    with _Stores(args, system) as stores:
        listing = stores.listing()
        names = listing.found
        # only the applications found with tables: opening another's store would create them
        last = {name: stores.database(name).store(name).last_position() for name in names}
        # the leaders' last positions, asked for as followers need them; kept apart from
        # ``last``, since with the system a leader whose store holds no tables yet counts
        # as position 0 there, and must not be taken for an application that was found
        leaders = dict(last)
        # a leader served over HTTP shows its log; its own followers run, and are
        # watched, where it is served
        served = {name for name in names if getattr(stores.database(name), "read_only", False)}
        rows: list[tuple[Any, ...]] = []
        # with --watch: each row that is behind, its position, and how to read that again
        again: list[Watched] = []
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
                trouble = f"its store {listing.trouble(name)} (see below)"
            elif name in last:
                store = stores.database(name).store(name)
                tracked = store.tracked()
                try:
                    stops = _apps_stops(stores.database(name), name, system)
                except DecodeError as error:
                    # its keys do not fit its store: whether it stopped is unknown
                    keys = settings.prefixed(name, "FES_CIPHER_KEYS")
                    trouble = (
                        f"its stop records cannot be read ({_reason(error)}): check {keys} "
                        "or FES_CIPHER_KEYS"
                    )
            mismatched = ""
            if system is not None and trouble is None:
                # positions tracked under another number of partitions: fes run
                # refuses to start this follower, so it is not shown as healthy
                parts = system.app(name).partitions
                other = [key for leader in system.leaders(name)
                         for key in foreign_tracking(tracked, leader, parts)]
                if other:
                    mismatched = (
                        f"mismatched: tracked under {', '.join(other)}, but the system gives "
                        f"{name!r} {parts} partition(s): fes run refuses to start it"
                    )
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
                if trouble is not None or mismatched or stops is None:
                    if trouble is not None:
                        status = f"unknown: {trouble}"
                    elif mismatched:
                        status = mismatched
                    else:
                        # its stop records cannot be read here: whether it stopped is
                        # unknown, so it is neither shown nor counted as caught up
                        status = (
                            "unknown: its stop records are encrypted, pass --system to read them"
                        )
                    if name not in listing.unreachable:
                        # what it is behind is still told, where its leader can be read
                        upstream, _ = _leader_last(stores, listing, leader, leaders)
                else:
                    upstream, why = _leader_last(stores, listing, leader, leaders)
                    if upstream is not None and position is not None and position > upstream:
                        # the leader may have moved on since its position was read
                        upstream, why = _leader_last(stores, listing, leader, leaders, fresh=True)
                    status = follower_status(stops.get((unit, leader)), position, upstream, why)
                    if tracking is not None and _behind(status):
                        # a follower with no tables yet is not opened (inspecting creates
                        # nothing): nothing has run it, and it counts as not moving
                        reread = (
                            partial(_tracked, stores.database(name).store(name), tracking)
                            if name in last else _nothing
                        )
                        again.append((rows, len(rows), position, reread))
                stopped += status.startswith("stopped")
                errors += status.startswith(("unknown", "ahead", "mismatched"))
                rows.append((unit, leader, "-" if position is None else position,
                             "?" if upstream is None else upstream, status))

        views = (
            _view_rows(stores, system, last, served, again) if system is not None
            # a view's stop is recorded in its application's store: shown, so that a
            # health check without --system does not pass a stopped view
            else _stopped_views(stores, [name for name in names if name not in served])
        )
        stalled = 0
        if args.watch and again:
            # the store cannot say whether a process serves a follower: whether
            # its position moves, while it has work, can (nothing behind: no wait)
            time.sleep(args.watch)
            for listed, at, seen, read_again in again:
                now, row = read_again(), listed[at]
                if now == seen:
                    listed[at] = (*row[:-1], _stalled(row[-1], args.watch))
                    stalled += 1
                else:  # its numbers are the first look's: say that it moved, and how far
                    moved = (now or 0) - (seen or 0)
                    listed[at] = (*row[:-1], f"{row[-1]}, moving: {moved:+,} in {args.watch:g} s")
        # the stores, in the order of the applications, those that could not be read marked
        down = {url for url, _ in listing.unreachable.values()}
        shown = [
            _redact(url) + (f" ({listing.state(url)})" if url in down else "")
            for url in listing.urls
        ]
        print(f"store: {', '.join(shown) or '(none)'}", file=out)
        print("\napplications", file=out)
        spread = len(listing.urls) > 1
        if names:
            table(
                ["application", "last position", "skipped events"]
                + (["store"] if spread else []),
                [
                    # a leader's position read again for its followers, if it was: a
                    # follower is never shown tracked past its leader's last position
                    (name, max(last[name], leaders.get(name, 0)),
                     "-" if name in served
                     else stores.database(name).store(name).stream_version(SKIPS_STREAM),
                     *([_redact(stores.url(name))] if spread else []))
                    for name in names
                ],
                out,
            )
        for label in listing.unreachable:
            print(f"  {_what(label)}: its store {listing.trouble(label)} (see below)", file=out)
        if not names and not listing.unreachable:
            where = "these stores" if spread else "this store"
            print(f"  (none yet: no application has written to {where})", file=out)
        print("\nfollowers", file=out)
        if rows:
            table(["follower", "leader", "tracked", "leader's last", "status"], rows, out)
        else:
            print("  (none has tracked anything yet)", file=out)
        print("\nviews", file=out)
        stopped += sum(row[3].startswith("stopped") for row in views)
        errors += sum(row[3].startswith("unknown") for row in views)
        if system is None:
            if views:
                table(["view", "position", "log's last", "status"], views, out)
            print("  (name the system with --system MODULE:SYSTEM to list its views)", file=out)
        else:
            if views:
                table(["view", "position", "log's last", "status"], views, out)
            elif any(app.views for app in system.apps):
                print("  (none to show: their applications have no tables yet, or cannot be "
                      "read here)", file=out)
            else:
                print("  (the system has no views)", file=out)
        if listing.unreachable:
            # each reason once, however many applications share the store
            reasons: dict[tuple[str, str], list[str]] = {}
            for label, (url, reason) in listing.unreachable.items():
                reasons.setdefault((url, reason), []).append(label)
            print("\ncannot be read", file=out)
            for (url, reason), labels in reasons.items():
                print(f"  {', '.join(labels)} at {_redact(url)}: {reason}", file=out)
        out.flush()
        missing = _report(listing)
    if stopped:
        return EXIT_STOPPED
    if stalled:
        return EXIT_STALLED
    return EXIT_ERROR if errors or listing.unreachable or missing else 0


#: A row of ``fes apps --watch`` that is behind: its table, its index there, its
#: position when read, and how to read that position again.
Watched = tuple[list[tuple[Any, ...]], int, "int | None", Callable[[], "int | None"]]


def _behind(status: str) -> bool:
    """Whether a follower's or a view's status says it has work left (and nothing stopped it)."""
    return status.startswith(("behind", "not started: behind"))


def _tracked(store: Any, key: str) -> int | None:
    """The position a follower's store holds under tracking ``key`` now."""
    return store.tracked().get(key)  # type: ignore[no-any-return]


def _nothing() -> None:
    return None


def _view_position(store: Any, name: str) -> int:
    """The position view ``name``'s stored state reached, now."""
    found = store.load_view(name)
    return 0 if found is None else int(found[1])


def _stalled(status: str, seconds: float) -> str:
    """A status that was ``behind`` and did not move in ``seconds``."""
    return f"stalled: {status}, and its position did not move in {seconds:g} s: is it running?"


def _view_rows(
    stores: _Stores, system: System, last: Mapping[str, int], served: set[str],
    again: list[Watched],
) -> list[tuple[Any, ...]]:
    """Each view's position against its application's log, where the application was found.

    An application with no tables yet (or whose store cannot be reached, said
    above) is left out: its store is not opened, since opening it creates its
    tables, and inspecting creates nothing.  One served over HTTP keeps its
    views where it is served.  A view whose recorded stop it has not got
    past is ``stopped at P: …``, never ``behind N``; one whose stop records
    cannot be read is ``unknown``.
    """
    rows: list[tuple[Any, ...]] = []
    for app in system.apps:
        if not app.views or app.name not in last or app.name in served:
            continue
        database = stores.database(app.name)
        store = database.store(app.name)
        trouble: str | None = None
        try:
            stops = _apps_view_stops(database, app.name, system)
        except DecodeError as error:
            stops = {}
            keys = settings.prefixed(app.name, "FES_CIPHER_KEYS")
            trouble = (
                f"unknown: its stop records cannot be read ({_reason(error)}): check {keys} "
                "or FES_CIPHER_KEYS"
            )
        latest = last[app.name]
        for view in app.views:
            found = store.load_view(view.name)
            position = 0 if found is None else found[1]
            if position > latest:
                # the log moved on since its last position was read: read it again,
                # so that no view is shown past its own log
                latest = store.last_position()
            behind = max(latest - position, 0)
            stop = stops.get(view.name)
            if trouble is not None:
                status = trouble
            elif stop is not None and position < stop.position:
                from ._skips import stop_status  # here: `fes --help` loads no store

                status = stop_status(stop)
            else:
                status = "up to date" if not behind else f"behind {behind}"
                if behind:
                    again.append(
                        (rows, len(rows), position, partial(_view_position, store, view.name))
                    )
            rows.append((f"{app.name}/{view.name}", position, latest, status))
    return rows


def _stopped_views(stores: _Stores, names: list[str]) -> list[tuple[Any, ...]]:
    """Without the system: each view whose recorded stop it has not got past.

    Its name comes from the stop record; an application whose records are
    encoded gives one row saying that they cannot be read without --system.
    """
    from ._cli_events import raw_data
    from ._skips import STOPS_STREAM, stop_status, view_stops_from_json

    rows: list[tuple[Any, ...]] = []
    for name in names:
        store = stores.database(name).store(name)
        if not store.stream_version(STOPS_STREAM):
            continue
        stops = view_stops_from_json(
            (r.topic, raw_data(r.payload)) for r in store.read_stream(STOPS_STREAM)
        )
        last = store.last_position()
        if stops is None:
            rows.append((f"{name}/?", "-", last,
                         "unknown: its stop records are encrypted, pass --system to read them"))
            continue
        for view, stop in sorted(stops.items()):
            found = store.load_view(view)
            position = 0 if found is None else found[1]
            if position < stop.position:
                rows.append((f"{name}/{view}", position, last, stop_status(stop)))
    return rows


def _apps_view_stops(database: Database, name: str, system: System) -> dict[str, Any]:
    """Each view of ``name`` whose recorded stop is not cleared, with its record."""
    from ._application import Application
    from ._skips import STOPS_STREAM, current_view_stops

    if not database.store(name).stream_version(STOPS_STREAM):
        return {}
    application = Application(system.app(name), store=database)
    return current_view_stops(r.event for r in application.stream(STOPS_STREAM))


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
    ``known`` holds the positions read so far, and gets this one; with the
    system, a leader placed in a store that holds no tables for it yet is at
    0, and its store is not opened (opening it would create its tables).
    """
    if leader in known and not fresh:
        return known[leader], None
    if leader in listing.unreachable:
        return None, _leader_trouble(listing, leader)
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
                return None, (
                    f"leader {leader!r} is not in {_redact(url)}: give its store with "
                    f"--store {leader}=URL"
                )
            # placed as its runner places it, with no tables yet: it holds no event
            position = 0
        else:
            position = stores.database(leader).store(leader).last_position()
    except (FesError, OSError) as error:
        listing.cannot_read(leader, url, error)
        if url not in listing.urls:
            listing.urls.append(url)
        return None, _leader_trouble(listing, leader)
    known[leader] = position
    return position, None


def _leader_trouble(listing: _Listing, leader: str) -> str:
    """A follower's status while its leader's store cannot be read."""
    if listing.trouble(leader) == "does not exist":
        return "leader's store does not exist (see below)"
    return "leader unreachable (see below)"


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
