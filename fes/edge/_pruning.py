"""Pruning: deleting the snapshots no aggregate of a release reads; see :func:`prune_snapshots`."""

from __future__ import annotations

from fes.edge._application import Application

__all__ = ["prune_snapshots"]


def prune_snapshots(application: Application) -> int:
    """Delete ``application``'s snapshots that none of its aggregates reads; return how many.

    A snapshot is read only by the definition of its aggregate that wrote it
    (its fingerprint): after a deploy that changed an aggregate, the
    snapshots of the earlier definition stay in the store, unread.  This
    deletes them, in one transaction, and keeps every snapshot of the
    application's aggregates as they are now defined.  Nothing is lost: a
    snapshot is a shortcut, and a stream without one is folded from its
    events.  Run it once no process of the earlier release runs (those
    would fold their streams from the events, which is slower, not wrong),
    for instance to delete snapshots that :func:`reseal` could not move to
    the current key before that key leaves the ring.
    """
    keep = set(application._fingerprints.values())
    return application.store.delete_snapshots(keep=keep)
