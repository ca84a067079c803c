"""What a simulated system's stores hold once it is quiet, and the invariants over it."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType
from typing import Any

from attrs import field, frozen

from fes.aggregates import Aggregate
from fes.errors import ConfigurationError
from fes.events import Recorded
from fes.system import System
from fes.testing.simulation._inputs import _name_of

#: An invariant: ``state -> bool`` (False fails), or a function that raises AssertionError.
Invariant = Callable[["SystemState"], object]


def _frozen_map(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


@frozen
class SystemState:
    """What a system's stores hold once it is quiet, read-only, for invariants and reports.

    ``logs`` holds each application's recorded events in log order,
    ``views`` each application's stored view states by view name, and
    ``errors`` why each stopped follower stopped.
    """

    system: System
    logs: Mapping[str, tuple[Recorded[Any], ...]] = field(converter=_frozen_map)
    views: Mapping[str, Mapping[str, Any]] = field(converter=_frozen_map)
    errors: Mapping[str, str] = field(converter=_frozen_map)

    def log(self, app: str) -> tuple[Recorded[Any], ...]:
        """Application ``app``'s recorded events, in log order."""
        self.system.app(app)  # names the known applications if there is no such one
        return self.logs.get(app, ())

    def streams(self, app: str, aggregate: Aggregate[Any] | str | None = None) -> list[str]:
        """The streams of ``app`` (of ``aggregate`` only, if given), sorted."""
        topics: Collection[str] | None = None
        if aggregate is not None:
            topics = self.system.app(app).aggregate(_name_of(aggregate)).topics()
        return sorted(
            {r.stream for r in self.log(app) if topics is None or r.topic in topics}
        )

    def events(self, app: str, stream: str) -> list[Any]:
        """The events of one stream of ``app``, in version order."""
        return [r.event for r in self.log(app) if r.stream == stream]

    def get(self, app: str, aggregate: Aggregate[Any] | str, stream: str) -> Any:
        """The state of one stream: its events folded by ``aggregate``."""
        chosen = self.system.app(app).aggregate(_name_of(aggregate))
        return chosen.fold(self.events(app, stream))

    def states(self, app: str, aggregate: Aggregate[Any] | str) -> dict[str, Any]:
        """The state of every stream of ``aggregate`` in ``app``, by stream."""
        return {s: self.get(app, aggregate, s) for s in self.streams(app, aggregate)}

    def view(self, app: str, name: str) -> Any:
        """The stored state of view ``name`` of ``app``."""
        try:
            return self.views[app][name]
        except KeyError:
            known = ", ".join(f"{a}/{v}" for a, vs in self.views.items() for v in vs) or "none"
            raise ConfigurationError(
                f"the system keeps no view {name!r} of {app!r}; it keeps {known}"
            ) from None
