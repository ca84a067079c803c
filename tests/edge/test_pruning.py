"""Pruning: the snapshots an earlier definition of an aggregate wrote are deleted, no other.

After a deploy that changed an aggregate, its earlier snapshots stay in the
store, unread (their fingerprint is the earlier definition's).
``prune_snapshots`` deletes them and keeps the current definition's; every
stream still loads, folded from its events.  Runs on every store.
"""

from __future__ import annotations

import attrs

import fes
from fes.edge import Application, prune_snapshots
from fes.examples.bank import accounts
from fes.examples.dogs import add_trick, dogs, register
from fes.snapshots import fingerprint

from .conftest import Place

CHANGED_DOG = attrs.evolve(dogs, snapshot_version=2)
SCHOOL = fes.App("school", aggregates=[accounts, dogs])
NEXT_RELEASE = fes.App("school", aggregates=[accounts, CHANGED_DOG])


def snapshots(application: Application, streams: list[str]) -> dict[str, list[str]]:
    """Each stream's snapshots, newest first, as 'version fingerprint'."""
    found: dict[str, list[str]] = {}
    for stream in streams:
        snapshot = application.store.load_snapshot(stream)
        while snapshot is not None:
            found.setdefault(stream, []).append(f"{snapshot.version} {snapshot.fingerprint}")
            snapshot = application.store.load_snapshot(stream, to_version=snapshot.version - 1)
    return found


def test_prune_deletes_the_earlier_definitions_snapshots_and_keeps_the_current_ones(
    any_place: Place,
) -> None:
    """Four snapshots of the earlier dog go; the next release's stay; every dog loads as before."""
    old, new = fingerprint(dogs), fingerprint(CHANGED_DOG)
    earlier = any_place.app(SCHOOL, snapshot_every=2)
    streams = ["dog-0", "dog-1"]
    for stream in streams:
        earlier.execute(dogs, stream, register, "Rex")
        for trick in ["sit", "paw", "beg", "roll"]:
            earlier.execute(dogs, stream, add_trick, trick)
    states = {s: earlier.get(dogs, s) for s in streams}
    release = any_place.app(NEXT_RELEASE, snapshot_every=2)
    release.execute(CHANGED_DOG, "dog-1", add_trick, "stay")  # version 6: a snapshot of its own
    assert snapshots(release, streams) == {
        "dog-0": [f"4 {old}", f"2 {old}"], "dog-1": [f"6 {new}", f"4 {old}", f"2 {old}"],
    }

    assert prune_snapshots(release) == 4
    assert snapshots(release, streams) == {"dog-1": [f"6 {new}"]}
    assert release.get(CHANGED_DOG, "dog-0") == states["dog-0"]  # folded from its events
    assert release.get(CHANGED_DOG, "dog-1").tricks[-1] == "stay"
    assert prune_snapshots(release) == 0
