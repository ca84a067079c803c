"""Systems: applications and the pipes between them, as one validated value.

An :class:`App` names its aggregates and, if it follows other applications,
its policy.  A :class:`System` lists applications and pipes: each pipe is a
chain of application names, ``["orders", "reservations", "orders"]``, whose
consecutive pairs are leader → follower edges.  Cycles are allowed: an
application may follow one that follows it.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from attrs import field, frozen

from fes.aggregates import Aggregate
from fes.errors import ConfigurationError, SystemDefinitionError
from fes.policies import ErrorHandler, Policy, stop_on_error
from fes.views import View

__all__ = [
    "App",
    "System",
    "app_of_unit",
    "partition_of",
    "tracking_key",
    "unit_names",
]


# --- checking what a definition is given ------------------------------------------
#
# A system is written by hand, and a name where a definition belongs (or one value
# where a list does) would otherwise fail far from the mistake, as an AttributeError
# or a TypeError of Python's, or pass and fail when the system runs.


def _shown(value: object) -> str:
    """A refused value as a message names it: a definition by its kind and name, else its repr."""
    if isinstance(value, App | Aggregate | View):
        return f"fes.{type(value).__name__} {value.name!r}"
    text = repr(value)
    return f"{text if len(text) <= 80 else text[:77] + '...'} (type {type(value).__name__})"


def _listed(value: object, what: str, example: str) -> tuple[Any, ...]:
    """``value``'s entries as a tuple; a string or a lone value is refused.

    ``tuple("orders")`` would make an entry of each letter, and a lone
    value would fail with Python's own TypeError, naming neither.
    """
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise SystemDefinitionError(
            f"{what} must be a list, such as {example}; got {_shown(value)}"
        )
    return tuple(value)


def _check_kind(entries: tuple[Any, ...], kind: type, what: str) -> None:
    """Refuse the first of ``entries`` that is not a ``kind``, naming it and its place."""
    for index, entry in enumerate(entries):
        if not isinstance(entry, kind):
            hint = (
                f"; give the fes.{kind.__name__} itself, not its name"
                if isinstance(entry, str) else ""
            )
            raise SystemDefinitionError(
                f"{what} must be fes.{kind.__name__} values, but entry {index} is "
                f"{_shown(entry)}{hint}"
            )


def _check_callable(app: str, what: str, value: object, takes: str) -> None:
    """Refuse a policy or error handler that cannot be called (a name, a list of them)."""
    if not callable(value):
        raise SystemDefinitionError(
            f"application {app!r}: {what} must be a function of {takes}, got {_shown(value)}"
        )


def _aggregates(value: Iterable[Aggregate[Any]]) -> tuple[Aggregate[Any], ...]:
    # typed converters: with a bare ``tuple`` mypy's attrs plugin rejects list arguments
    return _listed(value, "an application's aggregates", "[order]")


def _views(value: Iterable[View[Any]]) -> tuple[View[Any], ...]:
    return _listed(value, "an application's views", "[statuses]")


def _tuple_of_tuples(value: Iterable[Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    pipes = _listed(value, "a system's pipes", "[['orders', 'stock']]")
    return tuple(
        _listed(
            pipe, f"pipe {index} of the system",
            "['orders', 'stock'] (pipes is a list of such lists)",
        )
        for index, pipe in enumerate(pipes)
    )


@frozen
class App:
    """An application: a name, the aggregates it keeps, and its policy.

    ``policy`` is applied to every event of every leader the system pipes
    into this application; ``on_error`` decides, purely, what happens when
    it raises.  ``views`` are read models of this application's own log.
    ``partitions`` splits the follower's work by upstream stream: partition
    ``i`` of ``n`` processes the events of the streams that hash to ``i``,
    and tracks its own position, so the partitions can run in different
    processes or hosts.  Events of one stream stay in order; events of
    different streams may be processed in any order.

    ``snapshot_every`` is how often the application snapshots a stream (when
    an append takes its version to or past a multiple of it), in every
    process that builds it from this definition: the web process's
    ``Application``, ``fes run`` and its workers alike, so that none loads
    whole streams for want of the setting.  ``FES_SNAPSHOT_EVERY`` in a
    process's environment overrides it there, and an ``Application``'s own
    argument overrides both.
    """

    name: str
    aggregates: tuple[Aggregate[Any], ...] = field(default=(), converter=_aggregates)
    policy: Policy | None = None
    on_error: ErrorHandler = stop_on_error
    views: tuple[View[Any], ...] = field(default=(), converter=_views)
    partitions: int = 1
    snapshot_every: int | None = None

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise SystemDefinitionError(
                f"an application's name must be a str, such as 'orders'; got {_shown(self.name)}"
            )
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise SystemDefinitionError(
                f"application name {self.name!r} must be non-empty letters, digits, '_' or '-'"
            )
        if not isinstance(self.partitions, int) or self.partitions < 1:
            raise SystemDefinitionError(
                f"application {self.name!r}: partitions must be an integer of at least 1, "
                f"got {self.partitions!r}"
            )
        every = self.snapshot_every
        if every is not None and (type(every) is not int or every < 1):
            raise SystemDefinitionError(
                f"application {self.name!r}: snapshot_every must be an integer of at least 1 "
                f"(or None, for no snapshots), got {every!r}"
            )
        _check_kind(self.aggregates, Aggregate, f"application {self.name!r}: its aggregates")
        _check_kind(self.views, View, f"application {self.name!r}: its views")
        if self.policy is not None:
            _check_callable(self.name, "policy", self.policy, "a recorded event")
        _check_callable(
            self.name, "on_error", self.on_error, "an error, a recorded event and an attempt"
        )
        if self.partitions > 1 and self.policy is None:
            raise SystemDefinitionError(
                f"application {self.name!r} has {self.partitions} partitions but no policy: "
                "partitions split the work of a follower"
            )
        names = [a.name for a in self.aggregates]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SystemDefinitionError(
                f"application {self.name!r} has two aggregates named {dupes[0]!r}"
            )

    def aggregate(self, name: str) -> Aggregate[Any]:
        """The aggregate called ``name``."""
        for candidate in self.aggregates:
            if candidate.name == name:
                return candidate
        raise SystemDefinitionError(
            f"application {self.name!r} has no aggregate {name!r}; "
            f"it has {', '.join(repr(a.name) for a in self.aggregates) or 'none'}"
        )


def _apps(value: Iterable[App]) -> tuple[App, ...]:
    return _listed(value, "a system's applications", "[fes.App('orders')]")


@frozen
class System:
    """Applications wired by pipes; validated when built."""

    apps: tuple[App, ...] = field(converter=_apps)
    pipes: tuple[tuple[str, ...], ...] = field(default=(), converter=_tuple_of_tuples)

    def __attrs_post_init__(self) -> None:
        _check_kind(self.apps, App, "a system's applications")
        if not self.apps:
            # a runner of it would have nothing to run and report it caught up
            raise SystemDefinitionError(
                "a system needs at least one application: System([fes.App('orders', ...)])"
            )
        names = [a.name for a in self.apps]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise SystemDefinitionError(f"two applications are named {name!r}")
            seen.add(name)
        for index, pipe in enumerate(self.pipes):
            for entry in pipe:
                if not isinstance(entry, str):
                    named = f"; write {entry.name!r}" if isinstance(entry, App) else ""
                    raise SystemDefinitionError(
                        f"pipe {index} of the system names applications by their names, "
                        f"but has {_shown(entry)}{named}"
                    )
            if len(pipe) < 2:
                raise SystemDefinitionError(
                    f"pipe {list(pipe)!r} needs at least a leader and a follower"
                )
            for name in pipe:
                if name not in seen:
                    raise SystemDefinitionError(
                        f"pipe {list(pipe)!r} names unknown application {name!r}; "
                        f"known: {', '.join(sorted(seen))}"
                    )
        for leader, follower in self.edges:
            if leader == follower:
                raise SystemDefinitionError(f"application {leader!r} cannot follow itself")
        followers = {f for _, f in self.edges}
        for app in self.apps:
            if app.name in followers and app.policy is None:
                raise SystemDefinitionError(
                    f"application {app.name!r} follows {', '.join(self.leaders(app.name))} "
                    "but has no policy"
                )
            if app.policy is not None and app.name not in followers:
                raise SystemDefinitionError(
                    f"application {app.name!r} has a policy but no leader: "
                    "add a pipe into it"
                )

    @property
    def edges(self) -> tuple[tuple[str, str], ...]:
        """Every (leader, follower) pair, once each, in the order of the pipes."""
        found: list[tuple[str, str]] = []
        for pipe in self.pipes:
            for pair in itertools.pairwise(pipe):
                if pair not in found:
                    found.append(pair)
        return tuple(found)

    def app(self, name: str) -> App:
        """The application called ``name``."""
        for app in self.apps:
            if app.name == name:
                return app
        raise SystemDefinitionError(
            f"no application {name!r} in this system; known: "
            f"{', '.join(a.name for a in self.apps)}"
        )

    def leaders(self, name: str) -> tuple[str, ...]:
        """The applications ``name`` follows."""
        return tuple(leader for leader, follower in self.edges if follower == name)

    def followers(self, name: str) -> tuple[str, ...]:
        """The applications that follow ``name``."""
        return tuple(follower for leader, follower in self.edges if leader == name)

    @property
    def followers_all(self) -> tuple[App, ...]:
        """The applications that follow at least one other."""
        names = {f for _, f in self.edges}
        return tuple(a for a in self.apps if a.name in names)


# --- partitions: a follower's work split by upstream stream -------------------------


def partition_of(stream: str, partitions: int) -> int:
    """The partition of ``partitions`` that processes the events of ``stream``.

    A CRC-32 of the stream id: the same in every process and on every host.
    """
    return zlib.crc32(stream.encode("utf-8", "surrogatepass")) % partitions


def tracking_key(leader: str, partition: int, partitions: int) -> str:
    """The name under which a follower's partition tracks ``leader``.

    The leader's name when there is one partition; ``leader#i/n`` otherwise
    (``#`` cannot occur in application names).
    """
    return leader if partitions == 1 else f"{leader}#{partition}/{partitions}"


def foreign_tracking(tracked: Iterable[str], leader: str, partitions: int) -> list[str]:
    """The keys among ``tracked`` under which another number of partitions tracked ``leader``.

    A follower with ``partitions`` parts would start those parts from
    position 0 and process the leader's events again.
    """
    mine = {tracking_key(leader, i, partitions) for i in range(partitions)}
    return sorted(
        key for key in tracked
        if (key == leader or key.startswith(leader + "#")) and key not in mine
    )


def unit_names(app: App) -> list[str]:
    """The names of an application's runnable parts: ``name``, or ``name#i`` per partition."""
    if app.partitions == 1:
        return [app.name]
    return [f"{app.name}#{i}" for i in range(app.partitions)]


def app_of_unit(system: System, unit: str) -> App:
    """The application a unit name (``name`` or ``name#i``) belongs to; refuses others."""
    name, sep, _ = unit.partition("#")
    app = system.app(name)
    if sep and unit not in unit_names(app):
        raise ConfigurationError(
            f"{unit!r} names no partition of {name!r}, which has "
            f"{app.partitions} (name one of {', '.join(unit_names(app))})"
        )
    return app
