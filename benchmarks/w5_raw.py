"""W5's floor: fes's PostgreSQL transactions by hand, with psycopg.

The tables are the ones fes creates (an :class:`~fes.edge.Application` for
each of ``school`` and ``registry`` creates them before the processes
start).  A writer does what fes's ``Application.execute`` does over
PostgreSQL for an id it minted, in as many round trips: no read (the
unique (stream, version) refuses a clash, on either side), ``BEGIN``, then
one message of ``LOCK TABLE school_events IN EXCLUSIVE MODE``, the
``EXECUTE`` of an insert the connection prepared once (which notifies), and
``COMMIT``.  The follower does what fes's follower does: read up to 500
notifications after its tracked position (which it keeps, as fes's does,
once read), then, reading nothing of the certificates' streams (all new:
version 1 is inserted as is, as fes's follower does for the streams it
takes for new), one message of ``BEGIN; LOCK TABLE registry_events …`` and
one statement that inserts the certificates, moves the tracking position
and notifies (its values quoted in the message, as fes quotes a batch's),
then ``COMMIT``: three round trips per batch, as fes's follower makes.  It
polls every millisecond when it finds nothing new.

With ``lock=False`` (a context row, not a floor: a follower reading by
position could then skip an event committed after a later one) the writers
take no table lock, so their commits may share a flush.  With ``hand=True``
(a context row, as W1's) each writer also calls the domain's ``register``
and ``registered`` by hand and encodes the event it returned: what any
library must spend on this domain at the least, with no dispatch, checks,
envelope or connection pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from multiprocessing.synchronize import Event as EventType
from typing import Any

from .raw import new_stream_id

__all__ = ["RawPgSide", "raw_pg_follower", "raw_pg_writer", "raw_registrar"]

BATCH = 500
_PREPARE_ONE = (
    "PREPARE raw_one (text, bytea, bigint) AS"
    " WITH ins AS (INSERT INTO school_events (stream, version, topic, payload, timestamp_us)"
    " VALUES ($1, 1, 'dog.Registered', $2, $3) RETURNING position)"
    " SELECT position, pg_notify('fes:public.school', '') FROM ins"
)
_INSERT_MANY = (
    "WITH ins AS (INSERT INTO registry_events (stream, version, topic, payload, timestamp_us,"
    " meta) SELECT t.stream, 1, 'certificate.Issued', t.payload, %(moment)s, t.meta"
    " FROM unnest(%(streams)s::text[], %(payloads)s::bytea[], %(metas)s::bytea[])"
    " WITH ORDINALITY AS t(stream, payload, meta, ord) ORDER BY t.ord RETURNING position)"
    ", track AS (INSERT INTO registry_tracking (leader, position) VALUES ('school', %(to)s)"
    " ON CONFLICT (leader) DO UPDATE SET position = EXCLUDED.position"
    " WHERE registry_tracking.position = %(previous)s RETURNING 1)"
    " SELECT count(*), (SELECT count(*) FROM track), pg_notify('fes:public.registry', '')"
    " FROM ins"
)

_BEGIN_INSERT_MANY = "BEGIN; LOCK TABLE registry_events IN EXCLUSIVE MODE; " + _INSERT_MANY


def raw_registrar(conn: Any, *, lock: bool, hand: bool = False) -> Callable[[], None]:
    """Prepare ``conn``'s insert; return what registers one dog, in its own transaction.

    With ``hand``, the dog is decided and folded by the domain's own functions.
    """
    import orjson
    import psycopg

    from fes.examples.dogs import register as decide
    from fes.examples.dogs import registered

    dumps = orjson.dumps
    conn.execute(_PREPARE_ONE)
    cursor = psycopg.ClientCursor(conn)
    message = (b"LOCK TABLE school_events IN EXCLUSIVE MODE; " if lock else b"") + (
        b"EXECUTE raw_one(%s, %s, %s); COMMIT"
    )

    def register() -> None:
        stream = new_stream_id()  # minted here: nothing to read
        if hand:
            (event,) = decide(None, "Fido")
            registered(None, event)
            payload = dumps({"name": event.name})
        else:
            payload = dumps({"name": "Fido"})
        conn.execute(b"BEGIN")
        cursor.execute(message, (stream, payload, time.time_ns() // 1000))
        if lock:
            cursor.nextset()
        cursor.fetchall()

    return register


def raw_pg_writer(
    url: str, lock: bool, hand: bool, ready: Any, go: EventType, seconds: float,
    counts: Any, cpu: Any, index: int,
) -> None:
    """Register dogs, one transaction each, for ``seconds``; report how many and the CPU."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        register = raw_registrar(conn, lock=lock, hand=hand)
        register()  # warm: connect, prepare
        with ready.get_lock():
            ready.value += 1
        go.wait()
        deadline = time.monotonic() + seconds
        done = 0
        start = time.process_time()
        while time.monotonic() < deadline:
            register()
            done += 1
        cpu[index] = time.process_time() - start
        counts[index] = done


def raw_pg_follower(url: str, ready: EventType, stop: EventType) -> None:
    """Follow ``school``: one certificate per dog, with the tracking position, polling."""
    import orjson
    import psycopg

    dumps, loads = orjson.dumps, orjson.loads
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT position FROM registry_tracking WHERE leader = 'school'"
        ).fetchone()
        previous = 0 if row is None else int(row[0])
        cursor = psycopg.ClientCursor(conn)
        ready.set()
        while not stop.is_set():
            rows = conn.execute(
                "SELECT position, stream, version, topic, payload FROM school_events"
                " WHERE position > %s ORDER BY position LIMIT %s",
                (previous, BATCH),
            ).fetchall()
            if not rows:
                time.sleep(0.001)
                continue
            # every certificate's stream is new: version 1, with no read of the
            # streams (the unique (stream, version) would refuse a clash), as fes
            streams = [f"certificate-{r[1]}" for r in rows]
            payloads, metas = [], []
            for _position, dog, version, _topic, payload in rows:
                loads(payload)
                cause = f"school:{dog}@{version}"
                payloads.append(dumps({"dog": dog}))
                metas.append(dumps({"correlation_id": cause, "causation_id": cause}))
            to = int(rows[-1][0])
            # BEGIN, the lock and the insert in one message, its values quoted
            cursor.execute(
                _BEGIN_INSERT_MANY,
                {
                    "moment": time.time_ns() // 1000, "streams": streams,
                    "payloads": payloads, "metas": metas, "to": to, "previous": previous,
                },
            )
            while cursor.nextset():
                pass
            cursor.fetchall()
            conn.execute(b"COMMIT")
            previous = to


class RawPgSide:
    """A fresh database with fes's tables, written and followed by hand."""

    def __init__(
        self, server: Any, database: str, *, lock: bool = True, hand: bool = False
    ) -> None:
        from fes.edge import Application
        from fes.edge.stores import open_database

        from .domains import REGISTRY, SCHOOL

        self.url = server.create_database(database)
        self.lock = lock
        self.hand = hand
        self.database = open_database(self.url)
        for app in (SCHOOL, REGISTRY):  # fes creates the tables the floor uses
            Application(app, store=self.database)
        self.school = self.database.store("school")
        self.registry = self.database.store("registry")

    def writer(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        return raw_pg_writer, (self.url, self.lock, self.hand)

    def follower(self) -> tuple[Callable[..., None], tuple[Any, ...]]:
        return raw_pg_follower, (self.url,)

    def positions(self) -> tuple[int, int]:
        return self.school.last_position(), self.registry.last_tracked("school")

    def close(self) -> None:
        self.database.close()
