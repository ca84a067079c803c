"""Tools for testing fes domains: specifications, and (with Hypothesis) properties.

``given``/``when``/``then`` specifications need nothing but fes.  The
Hypothesis tools — strategies derived from your types, laws, a generated
state machine per aggregate, and whole-system simulation with faults — need
``fes-events[testing]``; they load on first use, so importing
:mod:`fes.testing` alone does not import Hypothesis.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from fes.testing.specs import PolicySpecification, Specification, given, given_policy, recorded

__all__ = [
    "PolicySpecification",
    "Specification",
    "check_aggregate",
    "check_laws",
    "check_system",
    "events_of",
    "given",
    "given_policy",
    "histories",
    "machine_for",
    "recorded",
    "register_aggregate",
    "register_types",
    "simulate",
    "strategy_for",
]

if TYPE_CHECKING:  # for type checkers: the real imports happen on first use
    from fes.testing.laws import check_laws
    from fes.testing.machines import check_aggregate, machine_for
    from fes.testing.simulation import check_system, simulate
    from fes.testing.strategies import (
        events_of,
        histories,
        register_aggregate,
        register_types,
        strategy_for,
    )

_LAZY = {
    "check_aggregate": "fes.testing.machines",
    "machine_for": "fes.testing.machines",
    "check_laws": "fes.testing.laws",
    "check_system": "fes.testing.simulation",
    "simulate": "fes.testing.simulation",
    "events_of": "fes.testing.strategies",
    "histories": "fes.testing.strategies",
    "register_aggregate": "fes.testing.strategies",
    "register_types": "fes.testing.strategies",
    "strategy_for": "fes.testing.strategies",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fes.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
