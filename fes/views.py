"""Views (read models): pure folds of recorded events into a queryable state.

A view's state is rebuilt from position 0 or kept up to date incrementally;
both give the same value because the fold is pure.  The edge stores the
view's state together with the position it has reached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from attrs import frozen

from fes.aggregates import _Initial
from fes.errors import DefinitionError
from fes.events import Recorded

__all__ = ["MAX_VIEW_NAME", "View"]

#: The longest view name, in characters.
MAX_VIEW_NAME = 200

V = TypeVar("V")


@frozen
class View(Generic[V]):
    """A named read model: ``apply(view_state, recorded) -> view_state``.

    Events the view does not care about should leave its state as it is.
    """

    name: str
    initial: V
    apply: Callable[[V, Recorded[Any]], V]

    def __attrs_post_init__(self) -> None:
        # the edge keys the view's stored state by name, in every store alike
        name = self.name
        if not (isinstance(name, str) and 0 < len(name) <= MAX_VIEW_NAME and name.isprintable()):
            raise DefinitionError(
                f"view name {name!r} must be 1 to {MAX_VIEW_NAME} printable characters"
            )

    def fold(
        self, records: Iterable[Recorded[Any]], state: V | _Initial = _Initial.INITIAL
    ) -> V:
        """Fold recorded events into the view's state (from the initial one by default)."""
        current: V = self.initial if state is _Initial.INITIAL else state
        for record in records:
            current = self.apply(current, record)
        return current
