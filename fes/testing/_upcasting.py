"""The upcasting law: every older stored shape of an event still decodes and folds.

An event type at schema version n > 1 declares n - 1 upcasters (see
:func:`fes.event`).  Stored payloads of the older versions exist only in
production: the domain's commands never emit them, so no other law ever
runs the upcasters.  :func:`upcasters_fold` draws payloads in each older
shape, brings them up to date with :func:`fes.upcast`, decodes them into
the current type and folds them on the aggregate.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import hypothesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st

from fes._shapes import _Dispatch, state_filter
from fes.aggregates import Aggregate
from fes.errors import DefinitionError
from fes.events import Upcaster, spec_of, upcast
from fes.testing.strategies import Overrides, histories

#: A strategy of stored payloads per event type and older schema version.
OldShapes = Mapping[tuple[type, int], st.SearchStrategy[Mapping[str, Any]]]

#: Decodes an up-to-date payload into an event of the given type.
Decode = Callable[[type, Mapping[str, Any]], Any]


def _construct(cls: type, data: Mapping[str, Any]) -> Any:
    return cls(**data)


def _annotated_shape(upcaster: Upcaster) -> st.SearchStrategy[Mapping[str, Any]] | None:
    """Payloads of the TypedDict ``upcaster``'s argument is annotated with, if it is."""
    try:
        params = list(inspect.signature(upcaster).parameters.values())
        hints = typing.get_type_hints(upcaster)
    except (TypeError, ValueError, NameError):
        return None
    hint = hints.get(params[0].name) if params else None
    if hint is not None and typing.is_typeddict(hint):
        return st.from_type(hint)
    return None


def _old_shapes(
    aggregate: Aggregate[Any], old: OldShapes | None
) -> list[tuple[type, int, st.SearchStrategy[Mapping[str, Any]]]]:
    given_shapes = dict(old or {})
    found = []
    for cls in aggregate.events:
        spec = spec_of(cls)
        for stored in range(1, spec.version):
            shape = given_shapes.pop((cls, stored), None)
            if shape is None:
                shape = _annotated_shape(spec.upcasters[stored - 1])
            if shape is None:
                raise DefinitionError(
                    f"the upcaster of {cls.__qualname__} from version {stored} does not "
                    "annotate its argument with a TypedDict: give the shape of the stored "
                    f"payloads with old={{({cls.__qualname__}, {stored}): "
                    "st.fixed_dictionaries(...)}"
                )
            found.append((cls, stored, shape))
    if given_shapes:
        cls, stored = next(iter(given_shapes))
        raise DefinitionError(
            f"old= names version {stored} of {getattr(cls, '__qualname__', cls)!r}, which is "
            f"not an older schema version of an event type of {aggregate.name!r}"
        )
    if not found:
        raise DefinitionError(
            f"aggregate {aggregate.name!r} has no event type at a schema version above 1: "
            "there are no upcasters to check"
        )
    return found


def upcast_folds(
    aggregate: Aggregate[Any],
    cls: type,
    stored: int,
    payload: Mapping[str, Any],
    history: Sequence[Any] = (),
    decode: Decode | None = None,
) -> Any:
    """A ``payload`` of ``cls`` stored at version ``stored`` upcasts, decodes and folds.

    The event decoded (by ``decode``, by default ``cls(**data)``) must be a
    ``cls`` and apply where the last event of its type in ``history`` was
    (at the end if none was); returns it.
    """
    __tracebackhide__ = True
    law = f"upcasting law of {cls.__qualname__}"
    where = f"a payload stored at version {stored}, {dict(payload)!r}"
    try:
        data = upcast(cls, payload, stored)
    except Exception as exc:
        raise AssertionError(f"{law}: {where} could not be upcast: {exc}") from exc
    try:
        item = (decode or _construct)(cls, data)
    except Exception as exc:
        raise AssertionError(
            f"{law}: {where} upcast to {dict(data)!r}, which does not decode: "
            f"{type(exc).__name__}: {exc}\n  (does an upcaster drop or misname a field?)"
        ) from exc
    if type(item) is not cls:
        raise AssertionError(f"{law}: {where} decoded to {item!r}, not a {cls.__qualname__}")
    last = [i for i, e in enumerate(history) if type(e) is cls]
    before = history[: last[-1]] if last else history
    try:
        aggregate.evolve(aggregate.fold(before), item)
    except Exception as exc:
        raise AssertionError(
            f"{law}: {where} decoded to {item!r}, which the projector of "
            f"{aggregate.name!r} cannot fold: {type(exc).__name__}: {exc}\n"
            f"  history before it: {list(before)!r}"
        ) from exc
    return item


def _handler_admits(aggregate: Aggregate[Any], cls: type) -> Callable[[Any], bool]:
    """Whether the state annotation of the projector's handler of ``cls`` admits a state.

    An event that cannot begin a stream (its handler takes a ``Rental``, not
    the initial ``None``) is only folded where such a state is: a history
    with none of its kind ends somewhere it may never come.
    """
    apply = aggregate.apply
    if type(apply) is _Dispatch:
        handler = apply.handlers.get(cls)
        if handler is None:
            try:
                handler = apply.inherited(cls)
            except Exception:
                return lambda state: True  # the fold says what is wrong
        return state_filter(handler)
    return lambda state: True  # one function for every event: it says nothing of cls


def _case(
    aggregate: Aggregate[Any],
    cls: type,
    stored: int,
    shape: st.SearchStrategy[Mapping[str, Any]],
    runs: st.SearchStrategy[tuple[Any, ...]],
    decode: Decode | None,
) -> Callable[[st.DataObject], None]:
    admits = _handler_admits(aggregate, cls)

    def check(data: st.DataObject) -> None:
        __tracebackhide__ = True
        payload = data.draw(shape, label=f"{cls.__qualname__} v{stored}")
        history = data.draw(runs, label="history")
        if not any(type(e) is cls for e in history):
            # folded at the end: only where its handler takes the state there
            hypothesis.assume(admits(aggregate.fold(history)))
        upcast_folds(aggregate, cls, stored, payload, history, decode)

    return check


def upcasters_fold(
    aggregate: Aggregate[Any],
    *,
    old: OldShapes | None = None,
    decode: Decode | None = None,
    args: Mapping[str, st.SearchStrategy[tuple[Any, ...]]] | None = None,
    overrides: Overrides | None = None,
    settings: hypothesis.settings | None = None,
    seed: int | None = None,
) -> None:
    """Check, for every older schema version of every event type, :func:`upcast_folds`.

    The stored payloads of each older version are drawn from the TypedDict
    its upcaster's argument is annotated with, or from ``old[(cls,
    version)]``; each is folded after a history of the aggregate's own
    commands (``args`` and ``overrides`` as in :func:`check_laws`), in place
    of the last event of its type there or, with none, at the end when the
    state annotation of its handler admits the state there (an event that
    cannot begin a stream is not folded on the initial state).  Raises
    ``DefinitionError`` if there is nothing to check or a shape is unknown,
    and the first broken case, shrunk, as an ``AssertionError``.
    """
    __tracebackhide__ = True
    shapes = _old_shapes(aggregate, old)
    runs: st.SearchStrategy[tuple[Any, ...]] = (
        histories(aggregate, args=args, overrides=overrides) if aggregate.commands else st.just(())
    )
    chosen = settings if settings is not None else hypothesis.settings(
        deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    phases = [phase for phase in chosen.phases if phase is not Phase.explain]
    for cls, stored, shape in shapes:
        check = _case(aggregate, cls, stored, shape, runs, decode)
        test = given(st.data())(check)
        if seed is not None:
            test = hypothesis.seed(seed)(test)
        try:
            hypothesis.settings(chosen, report_multiple_bugs=False, phases=phases)(test)()
        except AssertionError as exc:
            notes = getattr(exc, "__notes__", [])
            notes[:] = [n for n in notes if not n.startswith(("Failing test case", "Falsifying"))]
            raise
