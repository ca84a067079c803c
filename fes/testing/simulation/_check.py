"""The checks of a run: what differs from the fault-free run, and which invariants fail."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from attrs import evolve

from fes.testing.simulation._edge import PolicySkipped
from fes.testing.simulation._state import Invariant, SystemState
from fes.testing.simulation._text import _cut, _label, _shown


def _comparable(item: Any) -> Any:
    # a skip names the upstream position and the attempts made, which differ between
    # interleavings and restarts; what was skipped and why does not
    if isinstance(item, PolicySkipped):
        return evolve(item, position=0, attempts=0)
    return item


def _contents(state: SystemState, ordered: bool) -> dict[str, dict[str, tuple[Any, ...]]]:
    """Per application, per stream, its events (sorted by their repr unless ``ordered``)."""
    found: dict[str, dict[str, tuple[Any, ...]]] = {}
    for app in state.system.apps:
        streams: dict[str, list[Any]] = {}
        for recorded in state.log(app.name):
            streams.setdefault(recorded.stream, []).append(_comparable(recorded.event))
        found[app.name] = {
            stream: tuple(events if ordered else sorted(events, key=repr))
            for stream, events in streams.items()
        }
    return found


def _effects(
    state: SystemState, ordered: bool
) -> dict[str, dict[str, tuple[tuple[str, Any], ...]]]:
    """Per follower, per upstream event (its causation id), the (stream, event) it caused."""
    found: dict[str, dict[str, tuple[tuple[str, Any], ...]]] = {}
    for app in state.system.followers_all:
        caused: dict[str, list[tuple[str, Any]]] = {}
        for recorded in state.log(app.name):
            cause = recorded.metadata.causation_id
            if cause is not None:
                caused.setdefault(cause, []).append(
                    (recorded.stream, _comparable(recorded.event))
                )
        # by stream, keeping each stream's order (unless unordered): the order of the
        # streams in a commit depends on the other causes that shared its batch
        key: Callable[[tuple[str, Any]], Any] = (
            (lambda pair: pair[0]) if ordered else (lambda pair: (pair[0], repr(pair[1])))
        )
        found[app.name] = {c: tuple(sorted(pairs, key=key)) for c, pairs in caused.items()}
    return found


def _in_stream(pair: tuple[str, Any]) -> str:
    return f"{pair[1]!r} in {pair[0]}"


def _differences(
    expected: SystemState, final: SystemState, *, ordered: bool
) -> list[str]:
    """What the simulated run holds that the fault-free run does not, as report lines."""
    found: list[str] = []
    want, got = _contents(expected, ordered), _contents(final, ordered)
    for app in expected.system.apps:
        streams_want, streams_got = want[app.name], got[app.name]
        for stream in sorted(set(streams_want) | set(streams_got)):
            a, b = streams_want.get(stream, ()), streams_got.get(stream, ())
            if a == b:
                continue
            first = next(
                (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
                min(len(a), len(b)),
            )
            found.append(
                f"{app.name}/{stream}: {len(b)} events where the fault-free run has {len(a)}; "
                f"they differ from event {first + 1}:\n"
                f"      fault-free: {_shown(a[first:])}\n"
                f"      simulated:  {_shown(b[first:])}"
            )
    want_effects, got_effects = _effects(expected, ordered), _effects(final, ordered)
    for app in expected.system.followers_all:
        a_causes, b_causes = want_effects[app.name], got_effects[app.name]
        for cause in sorted(set(a_causes) | set(b_causes)):
            a, b = a_causes.get(cause, ()), b_causes.get(cause, ())
            if a != b:
                found.append(
                    f"{app.name}: the effects of {cause} differ:\n"
                    f"      fault-free: {_shown(a, show=_in_stream)}\n"
                    f"      simulated:  {_shown(b, show=_in_stream)}"
                )
    if dict(expected.errors) != dict(final.errors):
        found.append(
            f"stopped followers differ: fault-free {dict(expected.errors) or 'none'}, "
            f"simulated {dict(final.errors) or 'none'}"
        )
    return found


def _check_invariants(invariants: Sequence[Invariant], state: SystemState) -> list[str]:
    failures = []
    for check in invariants:
        name = _label(check)
        try:
            result = check(state)
        except AssertionError as exc:
            # the first line: pytest's rewritten asserts add the whole state after it
            said = str(exc).partition("\n")[0]
            failures.append(f"{name} failed" + (f": {_cut(said)}" if said else ""))
            continue
        except Exception as exc:
            failures.append(f"{name} raised {type(exc).__name__}: {_cut(str(exc))}")
            continue
        if result is not None and not result:
            failures.append(f"{name} failed")
    return failures
