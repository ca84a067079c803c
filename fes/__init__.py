"""fes: functional event sourcing.

This package is the pure core: events, aggregates, commands, snapshots,
upcasting, policies, views and systems, all values and pure functions.  It
does no I/O.  The edge that stores events and runs systems is
:mod:`fes.edge`; testing tools are in :mod:`fes.testing`.  The exceptions
are in :mod:`fes.errors`; the four met every day are here too.
"""

import typing as _typing
import warnings as _warnings

from fes import errors
from fes.aggregates import (
    Aggregate,
    Command,
    Projector,
    adapt,
    combine,
    contramap_command,
    decide,
    map_state,
    neutral,
    projector,
)
from fes.errors import CommandError, ConcurrencyError, FesError, Rejected
from fes.events import EventSpec, Metadata, Recorded, Upcaster, event, spec_of, upcast
from fes.policies import (
    Directive,
    Do,
    Emit,
    ErrorHandler,
    Intent,
    Policy,
    Retry,
    Skip,
    Stop,
    fan_out,
    merge,
    nothing,
    on,
    retry_then_stop,
    stop_on_error,
    when,
)
from fes.snapshots import Snapshot, fingerprint, restore, take
from fes.system import App, System
from fes.views import View

__all__ = [
    "Aggregate",
    "App",
    "Command",
    "CommandError",
    "ConcurrencyError",
    "Directive",
    "Do",
    "Emit",
    "ErrorHandler",
    "EventSpec",
    "FesError",
    "Intent",
    "Metadata",
    "Policy",
    "Projector",
    "Recorded",
    "Rejected",
    "Retry",
    "Skip",
    "Snapshot",
    "Stop",
    "System",
    "Upcaster",
    "View",
    "adapt",
    "combine",
    "contramap_command",
    "decide",
    "event",
    "fan_out",
    "fingerprint",
    "map_state",
    "merge",
    "neutral",
    "nothing",
    "on",
    "projector",
    "restore",
    "retry_then_stop",
    "spec_of",
    "stop_on_error",
    "take",
    "upcast",
    "when",
]

# Names 0.1.0 exported here, and where they live now.  They still resolve,
# with a DeprecationWarning, so that code written for 0.1.0 keeps running
# while its author moves the imports.
_MOVED = {
    "CipherError": "fes.errors.CipherError",
    "ConfigurationError": "fes.errors.ConfigurationError",
    "DecodeError": "fes.errors.DecodeError",
    "DefinitionError": "fes.errors.DefinitionError",
    "DuplicateTracking": "fes.errors.DuplicateTracking",
    "EncodeError": "fes.errors.EncodeError",
    "PolicyError": "fes.errors.PolicyError",
    "StoreError": "fes.errors.StoreError",
    "StoreURLError": "fes.errors.StoreURLError",
    "SystemDefinitionError": "fes.errors.SystemDefinitionError",
    "UnhandledEvent": "fes.errors.UnhandledEvent",
    "UnknownTopic": "fes.errors.UnknownTopic",
    "UpcastError": "fes.errors.UpcastError",
    "fold": "aggregate.fold(events)",
}


# Hidden from type checkers: to them a module __getattr__ would make every
# misspelt ``fes.<name>`` an Any, so they report the moved names as missing.
if not _typing.TYPE_CHECKING:

    def _fold(aggregate, events, *state):
        """The 0.1.0 ``fes.fold(aggregate, events)``: ``aggregate.fold(events)``."""
        return aggregate.fold(events, *state)

    def __getattr__(name):
        """Resolve a name 0.1.0 exported here, warning where it lives now."""
        new_home = _MOVED.get(name)
        if new_home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        _warnings.warn(
            f"fes.{name} is deprecated; use {new_home}", DeprecationWarning, stacklevel=2
        )
        return _fold if name == "fold" else getattr(errors, name)
