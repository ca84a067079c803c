"""The SQL of one application's tables: names, table definitions and statements.

Every identifier is composed with :class:`psycopg.sql.Identifier`, so no
schema or application name can smuggle SQL into a statement.  Why an append
is one statement after a table lock: see ``docs/ordering.md``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from fes.edge.stores._base import NewEvent, Tracking
from fes.edge.stores._checks import check_app_name
from fes.edge.stores._postgres._options import MAX_IDENTIFIER
from fes.errors import StoreError

_Cursor = psycopg.ClientCursor[TupleRow]


class Conn(psycopg.Connection[TupleRow]):
    """A pooled connection (one server session), with what the store keeps on it.

    The pool makes these (``connection_class``), so the state lives and dies
    with its session and costs an attribute lookup to find.
    """

    #: the statements this session has prepared, by text (see
    #: PostgresStore._begin_one); replaced, never changed in place
    prepared: frozenset[bytes] = frozenset()
    #: the client-side cursors of a single event's append, BEGIN's and the
    #: message's, made on first use: a cursor that runs the same query again
    #: keeps its adapters
    one_cursors: tuple[_Cursor, _Cursor] | None = None
    #: the client-side cursor of a batch's append message, made on first use
    batch_cursor: _Cursor | None = None
    #: since when the connection has been kept from its pool, parked between
    #: requests (0 while it is not): see Connections._putconn
    parked_since: float = 0.0


_LONGEST_SUFFIX = len("_snapshots")
EVENTS_MARK = "fes events v1"  # table comment by which apps() recognises our tables
EVENT_COLUMNS = "position, stream, version, topic, payload, timestamp_us, meta"
TABLE_SUFFIXES = ("_events", "_snapshots", "_tracking", "_views")


def check_app(app: str) -> None:
    """Refuse application names every store refuses, or that PostgreSQL would truncate."""
    check_app_name(app)
    if len(app.encode()) > MAX_IDENTIFIER - _LONGEST_SUFFIX:
        raise StoreError(
            f"application name {app!r} is too long for PostgreSQL: at most "
            f"{MAX_IDENTIFIER - _LONGEST_SUFFIX} bytes (table names hold 63)"
        )


def channel(schema: str, app: str) -> str:
    """The NOTIFY channel of an application: readable when it fits in 63 bytes."""
    name = f"fes:{schema}.{app}"
    if len(name.encode()) <= MAX_IDENTIFIER:
        return name
    return "fes:" + hashlib.blake2b(f"{schema}\x00{app}".encode(), digest_size=16).hexdigest()


_TRACK_FIRST = (
    "INSERT INTO {tracking} (leader, position) VALUES (%(leader)s, %(position)s)"
    " ON CONFLICT (leader) DO NOTHING"
)
_TRACK_NEXT = (
    "UPDATE {tracking} SET position = %(position)s"
    " WHERE leader = %(leader)s AND position = %(previous)s"
)
# Markers in the first column of an append's result rows that are not positions.
CONFLICT, TRACKED, NOTIFIED = -1, -2, -3


def _append_statement(tracking: str) -> str:
    """The one statement of an append, for tracking ``none``, ``first`` or ``next``.

    It runs after the lock is taken, so its snapshot sees every earlier
    append.  ``cur`` holds each stream's actual version; the insert inserts
    nothing unless all are as expected (and the tracking compare-and-set
    held), and ``note`` notifies only when something was inserted.  The
    result rows are the new positions, plus marker rows: each conflicting
    stream with its actual version, the tracking row count, the notification.
    """
    track = {
        "none": ("", ""),
        "first": (f", track AS ({_TRACK_FIRST} RETURNING 1)", " AND EXISTS (SELECT 1 FROM track)"),
        "next": (f", track AS ({_TRACK_NEXT} RETURNING 1)", " AND EXISTS (SELECT 1 FROM track)"),
    }[tracking]
    tracked = (
        f" UNION ALL SELECT {TRACKED}, NULL, count(*) FROM track" if tracking != "none" else ""
    )
    return (
        "WITH cur AS ("
        " SELECT f.stream, f.expected,"
        "  COALESCE((SELECT max(e.version) FROM {events} e WHERE e.stream = f.stream), 0)"
        "  AS actual"
        " FROM unnest(%(streams)s::text[], %(expected)s::bigint[]) AS f(stream, expected))"
        ", ok AS (SELECT NOT EXISTS (SELECT 1 FROM cur WHERE expected <> actual) AS fine)"
        f"{track[0]}"
        ", ins AS ("
        " INSERT INTO {events} (stream, version, topic, payload, timestamp_us, meta)"
        " SELECT t.stream, t.version, t.topic, t.payload, t.timestamp_us, t.meta"
        " FROM unnest(%(e_stream)s::text[], %(e_version)s::bigint[], %(e_topic)s::text[],"
        "  %(e_payload)s::bytea[], %(e_timestamp)s::bigint[], %(e_meta)s::bytea[])"
        "  WITH ORDINALITY AS t(stream, version, topic, payload, timestamp_us, meta, ord)"
        f" WHERE (SELECT fine FROM ok){track[1]}"
        " ORDER BY t.ord"
        " RETURNING position, stream, version)"
        ", note AS (SELECT pg_notify(%(channel)s, '') FROM (SELECT 1 FROM ins LIMIT 1) AS one)"
        " SELECT position, stream, version FROM ins"
        f" UNION ALL SELECT {CONFLICT}, stream, actual FROM cur WHERE expected <> actual"
        f"{tracked}"
        f" UNION ALL SELECT {NOTIFIED}, NULL, NULL FROM note"
    )


#: The append of one event with no tracking (a command's on one stream, the
#: common case): no arrays to unnest and no CTE of streams' versions.  The
#: unique (stream, version) refuses a version already taken (an error, which
#: aborts the transaction), and the look at the version before it refuses a
#: gap (nothing returned).  No ON CONFLICT: its speculative insertion cost the
#: server 3 to 7 us more per insert, spent holding the log's lock.
_APPEND_ONE = (
    "WITH ins AS ("
    " INSERT INTO {events} (stream, version, topic, payload, timestamp_us, meta)"
    " SELECT %(stream)s::text, %(version)s::bigint, %(topic)s::text, %(payload)s::bytea,"
    "  %(timestamp)s::bigint, %(meta)s::bytea"
    " WHERE %(version)s::bigint = 1 OR EXISTS (SELECT 1 FROM {events}"
    "  WHERE stream = %(stream)s::text AND version = %(version)s::bigint - 1)"
    " RETURNING position)"
    " SELECT position, pg_notify(%(channel)s, '') FROM ins"
)


#: The same insert as a statement each connection prepares once, by name, so
#: that a single event's append can send the lock, this statement's EXECUTE and
#: COMMIT in one simple-protocol message (``Queries.one_message``).  Its
#: parameters are a NewEvent's fields, in their order.
_PREPARE_ONE = (
    "PREPARE {one} (text, bigint, text, bytea, bigint, bytea) AS"
    " WITH ins AS ("
    " INSERT INTO {events} (stream, version, topic, payload, timestamp_us, meta)"
    " SELECT $1, $2, $3, $4, $5, $6"
    " WHERE $2 = 1 OR EXISTS (SELECT 1 FROM {events} WHERE stream = $1 AND version = $2 - 1)"
    " RETURNING position)"
    " SELECT position, pg_notify({channel}, '') FROM ins"
)
_EXECUTE_ONE = "EXECUTE {one}(%s, %s, %s, %s, %s, %s); COMMIT"


#: The parameters of each kind of append's statement, in the order its
#: prepared form (``Queries.prepare_append``) takes them, with their types.
APPEND_PARAMETERS: dict[str, tuple[tuple[str, str], ...]] = {
    "none": (
        ("streams", "text[]"), ("expected", "bigint[]"), ("e_stream", "text[]"),
        ("e_version", "bigint[]"), ("e_topic", "text[]"), ("e_payload", "bytea[]"),
        ("e_timestamp", "bigint[]"), ("e_meta", "bytea[]"),
    ),
}
APPEND_PARAMETERS["first"] = (
    *APPEND_PARAMETERS["none"], ("leader", "text"), ("position", "bigint")
)
APPEND_PARAMETERS["next"] = (*APPEND_PARAMETERS["first"], ("previous", "bigint"))


# A batch's arrays go to the server as array literals built here, each then
# quoted by psycopg as one string: psycopg's own quoting of a list runs in
# Python per element (a regular expression each), 110 us for six events
# against 18 (a follower's batch, measured over W5's follower).  Every
# element of a text or bytea array is double-quoted, so no text (the checks
# refuse NUL) reads as NULL, a separator or a brace; a backslash and a
# double quote are escaped inside the quotes, as the array syntax wants.

_replace = str.replace


def text_array(items: Sequence[str]) -> str:
    """``items`` as a PostgreSQL array literal, each kept exactly."""
    if not items:
        return "{}"
    return '{"' + '","'.join(
        [_replace(_replace(item, "\\", "\\\\"), '"', '\\"') for item in items]
    ) + '"}'


def int_array(items: Sequence[int]) -> str:
    """``items`` (ints, or subclasses of int) as a PostgreSQL array literal."""
    # int.__repr__, not str: an int subclass may render itself otherwise
    return "{" + ",".join(map(int.__repr__, items)) + "}"


def bytea_array(items: Sequence[bytes | None]) -> str:
    """``items`` as a PostgreSQL bytea array literal in hex, None as NULL."""
    return "{" + ",".join(
        ["NULL" if item is None else '"\\\\x' + bytes.hex(item) + '"' for item in items]
    ) + "}"


def batch_values(
    events: Sequence[NewEvent], firsts: dict[str, int], tracking: Tracking | None
) -> tuple[object, ...]:
    """A batch append's parameters in :data:`APPEND_PARAMETERS` order, arrays as literals.

    ``firsts``: each stream's first version in the batch (``check_batch``'s).
    """
    cas: tuple[object, ...] = ()
    if tracking is not None:
        cas = (tracking.leader, tracking.position)
        if tracking.previous:  # the "next" statement's compare-and-set
            cas = (*cas, tracking.previous)
    return (
        text_array(list(firsts)),
        int_array([first - 1 for first in firsts.values()]),
        text_array([event.stream for event in events]),
        int_array([event.version for event in events]),
        text_array([event.topic for event in events]),
        bytea_array([event.payload for event in events]),
        int_array([event.timestamp for event in events]),
        bytea_array([event.meta for event in events]),
        *cas,
    )


def _prepare_append(kind: str) -> tuple[str, str]:
    """The PREPARE of ``kind``'s append statement, and the message that runs it.

    The message opens the transaction, takes the lock and EXECUTEs the
    statement in one simple-protocol query, its values quoted by psycopg:
    one round trip before COMMIT, where the statement with parameters takes
    two, holding the lock across the second.
    """
    parameters = APPEND_PARAMETERS[kind]
    text = _append_statement(kind).replace("%(channel)s", "{channel}")
    for number, (name, _type) in enumerate(parameters, 1):
        text = text.replace(f"%({name})s", f"${number}")
    assert "%(" not in text, "every parameter is numbered"
    name = f"{{append_{kind}}}"
    types = ", ".join(t for _, t in parameters)
    execute = f"EXECUTE {name}({', '.join(['%s'] * len(parameters))})"
    return f"PREPARE {name} ({types}) AS {text}", execute


class Queries:
    """The fixed statements of one application's tables, rendered once."""

    def __init__(self, conn: Conn, schema: str, app: str) -> None:
        def table(suffix: str) -> sql.Identifier:
            return sql.Identifier(schema, f"{app}{suffix}")

        digest = hashlib.blake2b(f"{schema}\x00{app}".encode(), digest_size=8).hexdigest()
        self.names: dict[str, sql.Composable] = {
            "one": sql.Identifier(f"fes_append_one_{digest}"),
            **{
                f"append_{kind}": sql.Identifier(f"fes_append_{kind}_{digest}")
                for kind in ("none", "first", "next")
            },
            "channel": sql.Literal(channel(schema, app)),
            "schema": sql.Identifier(schema),
            "events": table("_events"),
            "snapshots": table("_snapshots"),
            "tracking": table("_tracking"),
            "views": table("_views"),
        }

        def q(text: str) -> bytes:
            return sql.SQL(text).format(**self.names).as_bytes(conn)

        self.begin_locked = q("BEGIN; LOCK TABLE {events} IN EXCLUSIVE MODE")
        self.versions = q(
            "SELECT s, COALESCE((SELECT max(e.version) FROM {events} e WHERE e.stream = s), 0)"
            " FROM unnest(%s::text[]) AS s"
        )
        self.append = {kind: q(_append_statement(kind)) for kind in ("none", "first", "next")}
        # each kind's PREPARE (its text is its key in Conn.prepared), and the
        # message that runs it: BEGIN, the lock and its EXECUTE; a connection
        # that has not prepared it yet sends the PREPARE after the lock
        self.prepare_append: dict[str, bytes] = {}
        self.append_message: dict[str, bytes] = {}
        self.append_message_preparing: dict[str, bytes] = {}
        for kind in ("none", "first", "next"):
            prepare, execute = _prepare_append(kind)
            self.prepare_append[kind] = q(prepare)
            self.append_message[kind] = q(
                "BEGIN; LOCK TABLE {events} IN EXCLUSIVE MODE; " + execute
            )
            self.append_message_preparing[kind] = q(
                "BEGIN; LOCK TABLE {events} IN EXCLUSIVE MODE; " + prepare + "; " + execute
            )
        self.append_one = q(_APPEND_ONE)
        self.prepare_one = q(_PREPARE_ONE)
        # the lock, the prepared insert and COMMIT; and the last two alone
        self.one_message = q("LOCK TABLE {events} IN EXCLUSIVE MODE; " + _EXECUTE_ONE)
        self.one_locked = q(_EXECUTE_ONE)
        self.track_first = q(_TRACK_FIRST + " RETURNING 1")
        self.track_next = q(_TRACK_NEXT + " RETURNING 1")
        self.last_tracked = q("SELECT position FROM {tracking} WHERE leader = %s")
        self.tracked = q("SELECT leader, position FROM {tracking} ORDER BY leader")
        self.last_position = q("SELECT COALESCE(max(position), 0) FROM {events}")
        self.save_snapshot = q(
            "INSERT INTO {snapshots} (stream, version, fingerprint, payload, timestamp_us)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (stream, version) DO UPDATE SET"
            " fingerprint = EXCLUDED.fingerprint, payload = EXCLUDED.payload,"
            " timestamp_us = EXCLUDED.timestamp_us"
        )
        self.delete_snapshots = q(
            "DELETE FROM {snapshots} WHERE NOT (fingerprint = ANY(%s::text[]))"
        )
        self.reseal = q(
            "UPDATE {events} SET payload = %s, meta = %s"
            " WHERE stream = %s AND version = %s AND topic = %s"
        )
        self.load_snapshot = q(
            "SELECT stream, version, fingerprint, payload, timestamp_us FROM {snapshots}"
            " WHERE stream = %s AND version <= %s ORDER BY version DESC LIMIT 1"
        )
        self.view_first = q(
            "INSERT INTO {views} (name, leader, position, payload)"
            " VALUES (%(name)s, %(leader)s, %(position)s, %(payload)s)"
            " ON CONFLICT (name) DO NOTHING"
        )
        self.view_next = q(
            "UPDATE {views} SET leader = %(leader)s, position = %(position)s,"
            " payload = %(payload)s WHERE name = %(name)s AND position = %(previous)s"
        )
        self.load_view = q("SELECT payload, position FROM {views} WHERE name = %s")
        self._variants: dict[tuple[str, ...], bytes] = {}
        self._variants_lock = threading.Lock()

    def variant(self, key: tuple[str, ...], build: Callable[[], str], conn: Conn) -> bytes:
        """A statement whose clauses depend on the arguments, rendered once per shape."""
        with self._variants_lock:
            found = self._variants.get(key)
        if found is None:
            found = sql.SQL(build()).format(**self.names).as_bytes(conn)
            with self._variants_lock:
                self._variants[key] = found
        return found

    def ddl(self) -> list[sql.Composed]:
        """The statements creating the tables, idempotently."""
        texts = [
            "CREATE TABLE IF NOT EXISTS {events} ("
            " position bigint GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,"
            " stream text NOT NULL, version bigint NOT NULL, topic text NOT NULL,"
            " payload bytea NOT NULL, timestamp_us bigint NOT NULL, meta bytea,"
            " UNIQUE (stream, version))",
            "CREATE TABLE IF NOT EXISTS {snapshots} ("
            " stream text NOT NULL, version bigint NOT NULL, fingerprint text NOT NULL,"
            " payload bytea NOT NULL, timestamp_us bigint NOT NULL,"
            " PRIMARY KEY (stream, version))",
            "CREATE TABLE IF NOT EXISTS {tracking} ("
            " leader text PRIMARY KEY, position bigint NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {views} ("
            " name text PRIMARY KEY, leader text NOT NULL, position bigint NOT NULL,"
            " payload bytea NOT NULL)",
        ]
        statements = [sql.SQL(text).format(**self.names) for text in texts]
        statements.append(
            sql.SQL("COMMENT ON TABLE {events} IS {mark}").format(
                events=self.names["events"], mark=sql.Literal(EVENTS_MARK)
            )
        )
        return statements


def stream_query(
    columns: str,
    stream: str,
    from_version: int | None,
    to_version: int | None,
    descending: bool = False,
    limit: int | None = None,
) -> tuple[tuple[str, ...], Callable[[], str], list[object]]:
    """A SELECT of ``columns`` of one stream's events: its cache key, builder and parameters."""
    params: list[object] = [stream]
    key = [columns]
    clauses = ""
    if from_version is not None:
        key.append("from")
        params.append(from_version)
        clauses += " AND version >= %s"
    if to_version is not None:
        key.append("to")
        params.append(to_version)
        clauses += " AND version <= %s"
    key.append("desc" if descending else "asc")
    clauses += " ORDER BY version DESC" if descending else " ORDER BY version"
    if limit is not None:
        key.append("limit")
        params.append(limit)
        clauses += " LIMIT %s"

    def build() -> str:
        return f"SELECT {columns} FROM {{events}} WHERE stream = %s{clauses}"

    return tuple(key), build, params
