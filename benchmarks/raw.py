"""The floor: the SQL fes issues, by hand, with the standard library's sqlite3.

The schema is the one :mod:`fes.edge.stores._sqlite` creates for an
application (copied here as text, and compared with what fes creates by
:func:`same_schema`); the pragmas are fes's (WAL, ``synchronous=FULL``);
payloads are the same JSON, encoded and decoded by orjson.  Every write is
``BEGIN IMMEDIATE; INSERT …; COMMIT`` as in fes; a command first reads the
version, topic and payload of its stream's events, as fes's ``execute``
does, except on a stream id the floor minted itself (W1's streams, W4's
leader), where fes, given an id its ``new_id()`` minted, reads nothing
either.  No library can do the same work in less.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["RawStore", "connect", "new_stream_id", "now_micros", "same_schema"]

_COLUMNS = "position, stream, version, topic, payload, timestamp, meta"
_MAX = 2**63 - 1

Row = tuple[str, int, str, bytes, int, bytes | None]


def now_micros() -> int:
    """The current time in microseconds since the epoch (fes stores the same)."""
    return time.time_ns() // 1000


def new_stream_id() -> str:
    """The text of a random (version 4) UUID, written as cheaply as it can be.

    ``str(uuid.uuid4())`` builds a :class:`uuid.UUID` only to format it; fes's
    ``new_id()`` writes the same 36 characters from 16 bytes of
    ``os.urandom`` itself, and so does the floor, or fes's saving would count
    as fes being nearer its floor.
    """
    data = bytearray(os.urandom(16))
    data[6] = data[6] & 0x0F | 0x40  # version 4
    data[8] = data[8] & 0x3F | 0x80  # the RFC 4122 variant
    h = data.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def connect(path: Path | str, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection with fes's settings: autocommit, WAL, ``synchronous=FULL``."""
    conn = sqlite3.connect(
        path, timeout=5.0, isolation_level=None, check_same_thread=False, cached_statements=256
    )
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


class RawStore:
    """One application's tables, created and used with plain SQL."""

    def __init__(
        self, conn: sqlite3.Connection, app: str, writer: threading.Lock | None = None
    ) -> None:
        self.conn = conn
        # writers of one process that share a lock queue on it, as fes's do on its
        # database's writer lock, rather than on SQLite's busy handler
        self.writer = writer
        events, snapshots, tracking = f'"{app}_events"', f'"{app}_snapshots"', f'"{app}_tracking"'
        self.schema = (
            f"CREATE TABLE IF NOT EXISTS {events} ("
            "position INTEGER PRIMARY KEY AUTOINCREMENT, "
            "stream TEXT NOT NULL, version INTEGER NOT NULL, topic TEXT NOT NULL, "
            "payload BLOB NOT NULL, timestamp INTEGER NOT NULL, meta BLOB, "
            "UNIQUE (stream, version))",
            f"CREATE TABLE IF NOT EXISTS {snapshots} ("
            "stream TEXT NOT NULL, version INTEGER NOT NULL, fingerprint TEXT NOT NULL, "
            "payload BLOB NOT NULL, timestamp INTEGER NOT NULL, "
            "PRIMARY KEY (stream, version)) WITHOUT ROWID",
            f"CREATE TABLE IF NOT EXISTS {tracking} ("
            "leader TEXT PRIMARY KEY, position INTEGER NOT NULL) WITHOUT ROWID",
        )
        self.insert = (
            f"INSERT INTO {events} (stream, version, topic, payload, timestamp, meta) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        )
        self.select_payloads = (
            f"SELECT version, topic, payload FROM {events} WHERE stream = ? AND version >= ? "
            "AND version <= ? ORDER BY version"
        )
        self.select_log = (
            f"SELECT {_COLUMNS} FROM {events} WHERE position > ? AND position <= ? "
            "ORDER BY position LIMIT ?"
        )
        self.versions = (
            f"SELECT stream, max(version) FROM {events} WHERE stream IN ({{}}) GROUP BY stream"
        )
        self.last = f"SELECT max(position) FROM {events}"
        self.tracked = f"SELECT position FROM {tracking} WHERE leader = ?"
        self.track_first = (
            f"INSERT INTO {tracking} (leader, position) VALUES (?, ?) ON CONFLICT DO NOTHING"
        )
        self.track_next = f"UPDATE {tracking} SET position = ? WHERE leader = ? AND position = ?"

    def create(self) -> RawStore:
        self.conn.execute("BEGIN IMMEDIATE")
        for statement in self.schema:
            self.conn.execute(statement)
        self.conn.execute("COMMIT")
        return self

    def read_payloads(self, stream: str) -> list[Any]:
        """A stream's ``(version, topic, payload)`` rows: what fes reads to load it."""
        return self.conn.execute(self.select_payloads, (stream, 0, _MAX)).fetchall()

    def stream_versions(self, streams: Sequence[str]) -> dict[str, int]:
        """The versions of those of ``streams`` that have events (at most 500 streams)."""
        sql = self.versions.format(", ".join("?" * len(streams)))
        return dict(self.conn.execute(sql, tuple(streams)).fetchall())

    def read_log(self, after: int, limit: int) -> list[Any]:
        return self.conn.execute(self.select_log, (after, _MAX, limit)).fetchall()

    def last_position(self) -> int:
        return int(self.conn.execute(self.last).fetchone()[0] or 0)

    def last_tracked(self, leader: str) -> int:
        row = self.conn.execute(self.tracked, (leader,)).fetchone()
        return int(row[0]) if row else 0

    def append(
        self, rows: Sequence[Row], tracking: tuple[str, int, int] | None = None
    ) -> None:
        """Insert ``rows`` (and move the tracking position) in one transaction."""
        if self.writer is None:
            self._append(rows, tracking)
            return
        with self.writer:
            self._append(rows, tracking)

    def _append(self, rows: Sequence[Row], tracking: tuple[str, int, int] | None) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            if tracking is not None:
                leader, position, previous = tracking
                if previous == 0:
                    done = conn.execute(self.track_first, (leader, position))
                else:
                    done = conn.execute(self.track_next, (position, leader, previous))
                if done.rowcount != 1:
                    raise RuntimeError(f"tracking {leader}@{position} was recorded before")
            if len(rows) == 1:
                conn.execute(self.insert, rows[0])
            else:
                conn.executemany(self.insert, rows)
                conn.execute("SELECT last_insert_rowid()").fetchone()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def _events_sql(path: Path | str, table: str) -> str:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    finally:
        conn.close()
    return " ".join(str(row[0] if row else "").split())


def same_schema(fes_file: Path | str, raw_file: Path | str, app: str) -> str:
    """Compare the tables fes created with the raw floor's: a note for the report."""
    differing = [
        suffix
        for suffix in ("_events", "_snapshots", "_tracking")
        if _events_sql(fes_file, app + suffix) != _events_sql(raw_file, app + suffix)
    ]
    if differing:
        return (
            "WARNING: the raw floor's schema differs from fes's for "
            + ", ".join(app + s for s in differing)
        )
    return "raw sqlite3 uses exactly the tables fes creates (compared in sqlite_master)"
