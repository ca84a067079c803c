"""The SQL of the SQLite store: table names, the schema, and each statement.

Built once per application, as strings, so that the store's operations only
bind parameters; sqlite3 caches their compiled forms (``cached_statements``).
"""

from __future__ import annotations

from operator import attrgetter

__all__ = ["COLUMNS", "ROW", "SCHEMA", "VERSIONS_CHUNK", "Statements", "quote", "table_prefix"]

#: The schema version written to ``fes_apps``; a file from a newer fes is refused.
SCHEMA = 1

#: Streams per query in stream_versions: well under SQLite's limit on parameters.
VERSIONS_CHUNK = 500
#: The columns of an events row, in the order of :class:`fes.edge.stores.StoredEvent`.
COLUMNS = "position, stream, version, topic, payload, timestamp, meta"
#: A NewEvent's values, in the order of the insert's parameters.
ROW = attrgetter("stream", "version", "topic", "payload", "timestamp", "meta")


def quote(name: str) -> str:
    """``name`` as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def table_prefix(app: str) -> str:
    """The prefix of ``app``'s table names.

    SQLite compares table names without regard to ASCII case, and reserves
    names starting with ``sqlite_``; so an upper-case letter ``X`` becomes
    ``^x`` and a name starting with ``sqlite`` gets a leading ``~``.  Neither
    character can occur in an application name, so different applications
    always get different tables.  Most names (``shop``, ``order-history``)
    are their own prefix.
    """
    prefix = "".join("^" + c.lower() if "A" <= c <= "Z" else c for c in app)
    return "~" + prefix if prefix.startswith("sqlite") else prefix


class Statements:
    """One application's table names, the statements creating them, and its queries."""

    def __init__(self, app: str) -> None:
        prefix = table_prefix(app)
        suffixes = ("_events", "_snapshots", "_tracking", "_views")
        self.tables = tuple(prefix + suffix for suffix in suffixes)
        events, snapshots, tracking, views = (quote(t) for t in self.tables)
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
            f"CREATE TABLE IF NOT EXISTS {views} ("
            "name TEXT PRIMARY KEY, payload BLOB NOT NULL, position INTEGER NOT NULL)",
        )
        self.insert = (
            f"INSERT INTO {events} (stream, version, topic, payload, timestamp, meta) "
            "VALUES (?, ?, ?, ?, ?, ?)"
        )
        self.version = f"SELECT max(version) FROM {events} WHERE stream = ?"
        self.versions = (
            f"SELECT stream, max(version) FROM {events} WHERE stream IN ({{}}) GROUP BY stream"
        )
        stream = f"SELECT {COLUMNS} FROM {events} WHERE stream = ? AND version >= ? "
        self.stream = stream + "AND version <= ? ORDER BY version LIMIT ?"
        self.stream_descending = stream + "AND version <= ? ORDER BY version DESC LIMIT ?"
        self.reseal = (
            f"UPDATE {events} SET payload = ?, meta = ? WHERE stream = ? AND version = ? "
            "AND topic = ?"
        )
        self.payloads = (
            f"SELECT version, topic, payload FROM {events} WHERE stream = ? AND version >= ? "
            "AND version <= ? ORDER BY version"
        )
        self.log = (
            f"SELECT {COLUMNS} FROM {events} WHERE position > ? AND position <= ? "
            "ORDER BY position LIMIT ?"
        )
        self.log_topics = (
            f"SELECT {COLUMNS} FROM {events} WHERE position > ? AND position <= ? "
            "AND topic IN ({}) ORDER BY position LIMIT ?"
        )
        self.last = f"SELECT max(position) FROM {events}"
        self.track_first = (
            f"INSERT INTO {tracking} (leader, position) VALUES (?, ?) ON CONFLICT DO NOTHING"
        )
        self.track_next = f"UPDATE {tracking} SET position = ? WHERE leader = ? AND position = ?"
        self.tracked_one = f"SELECT position FROM {tracking} WHERE leader = ?"
        self.tracked_all = f"SELECT leader, position FROM {tracking} ORDER BY leader"
        self.snapshot_save = (
            f"INSERT OR REPLACE INTO {snapshots} "
            "(stream, version, fingerprint, payload, timestamp) VALUES (?, ?, ?, ?, ?)"
        )
        self.snapshot_delete = f"DELETE FROM {snapshots}"
        self.snapshot_load = (
            f"SELECT stream, version, fingerprint, payload, timestamp FROM {snapshots} "
            "WHERE stream = ? AND version <= ? ORDER BY version DESC LIMIT 1"
        )
        self.view_first = (
            f"INSERT INTO {views} (name, payload, position) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
        )
        self.view_next = (
            f"UPDATE {views} SET payload = ?, position = ? WHERE name = ? AND position = ?"
        )
        self.view_load = f"SELECT payload, position FROM {views} WHERE name = ?"
