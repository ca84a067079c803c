"""The edge parts the simulation drives: imported here only, so a move in the edge is one edit."""

from __future__ import annotations

from fes.edge._application import Application
from fes.edge._follower import DEFAULT_BATCH_SIZE, Follower
from fes.edge._projections import Projection
from fes.edge._runners import SyncRunner
from fes.edge._skips import PolicySkipped, is_internal
from fes.edge.stores._base import NewEvent, Resealed, StoredEvent, StoredSnapshot, Tracking
from fes.edge.stores._memory import MemoryDatabase, MemoryStore

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Application",
    "Follower",
    "MemoryDatabase",
    "MemoryStore",
    "NewEvent",
    "PolicySkipped",
    "Projection",
    "Resealed",
    "StoredEvent",
    "StoredSnapshot",
    "SyncRunner",
    "Tracking",
    "is_internal",
]
