"""A one-application system whose events hold values JSON has no type for.

For ``fes log`` and ``fes stream`` with ``--system``: bytes, a decimal and
a date must show as the codec stores them, not as Python's ``repr``.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from attrs import frozen

import fes


@frozen
class Deposited:
    """Something put in the vault."""

    blob: bytes
    worth: Decimal
    on: date


def _deposited(state: int, event: Deposited) -> int:
    return state + 1


box: fes.Aggregate[int] = fes.Aggregate("box", 0, fes.projector(_deposited), events=[Deposited])
vault = fes.App("vault", aggregates=[box])
system = fes.System([vault])
