"""fes: functional event sourcing.

This package is the pure core: events, aggregates, commands, snapshots,
upcasting, policies, views and systems, all values and pure functions.  It
does no I/O.  The edge that stores events and runs systems is
:mod:`fes.edge`; testing tools are in :mod:`fes.testing`.  The exceptions
are in :mod:`fes.errors`; the four met every day are here too.
"""

import importlib as _importlib
import typing as _typing
import warnings as _warnings

from fes import errors
from fes.errors import CommandError, ConcurrencyError, FesError, Rejected

if _typing.TYPE_CHECKING:
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


# Each public name and the module that defines it, imported on first use
# (PEP 562): ``fes --help`` and a program that only reads ``fes.errors`` do not
# pay for creating every class of the core.  The errors above are eager: they
# are small, and ``except fes.Rejected`` must not import anything.
_HOMES = {
    **dict.fromkeys(
        ("Aggregate", "Command", "Projector", "adapt", "combine", "contramap_command",
         "decide", "map_state", "neutral", "projector"),
        "fes.aggregates",
    ),
    **dict.fromkeys(
        ("EventSpec", "Metadata", "Recorded", "Upcaster", "event", "spec_of", "upcast"),
        "fes.events",
    ),
    **dict.fromkeys(
        ("Directive", "Do", "Emit", "ErrorHandler", "Intent", "Policy", "Retry", "Skip",
         "Stop", "fan_out", "merge", "nothing", "on", "retry_then_stop", "stop_on_error",
         "when"),
        "fes.policies",
    ),
    **dict.fromkeys(("Snapshot", "fingerprint", "restore", "take"), "fes.snapshots"),
    **dict.fromkeys(("App", "System"), "fes.system"),
    "View": "fes.views",
}
_SUBMODULES = frozenset(("aggregates", "events", "policies", "snapshots", "system", "views"))


# Hidden from type checkers: to them a module __getattr__ would make every
# misspelt ``fes.<name>`` an Any, so they report the moved names as missing.
if not _typing.TYPE_CHECKING:

    def _fold(aggregate, events, *state):
        """The 0.1.0 ``fes.fold(aggregate, events)``: ``aggregate.fold(events)``."""
        return aggregate.fold(events, *state)

    def __getattr__(name):
        """Import a public name's module on first use; resolve a name 0.1.0 exported here."""
        if name in _SUBMODULES:  # as the eager imports made them attributes
            return _importlib.import_module(f"{__name__}.{name}")
        home = _HOMES.get(name)
        if home is not None:
            value = getattr(_importlib.import_module(home), name)
            globals()[name] = value
            return value
        new_home = _MOVED.get(name)
        if new_home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        _warnings.warn(
            f"fes.{name} is deprecated; use {new_home}", DeprecationWarning, stacklevel=2
        )
        return _fold if name == "fold" else getattr(errors, name)

    def __dir__():
        """The module's names, the lazily imported ones included."""
        return sorted({*globals(), *__all__})
