"""Tampering with the stored rows, end to end: through an Application and a real store.

Each test writes through :class:`fes.edge.Application` to an SQLite file and to
PostgreSQL (in a schema of its own), changes the rows with raw SQL as an
attacker with access to the database could, and reads them back through
``get``, ``stream`` and ``log``.  Encrypted payloads and metadata are bound to
their row, so moving them between rows is a :class:`fes.errors.CipherError` naming the
row; a topic that no aggregate registered is a :class:`fes.errors.UnknownTopic`, and
reading it imports and runs nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import re
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from guards import CANARY, nothing_imported_or_run
from psycopg import sql
from pyrsistent import pvector

import fes
from fes.edge import Application, Cipher
from fes.edge.stores._sqlite import table_prefix
from fes.examples.dogs import Dog, Registered, TrickAdded, add_trick, dogs, register

SCHOOL = fes.App("school", aggregates=[dogs])
SCHEMA = "vault"

Row = tuple[str, int]  # (stream, version)


class Place:
    """A database holding the school's events, with raw SQL access to its events table."""

    def __init__(self, kind: str, url: str, raw: str) -> None:
        self.kind = kind
        self.url = url
        self.raw = raw  # the SQLite file, or the PostgreSQL URL without fes's options
        self.key = Cipher.generate_key()
        self._opened: list[Application] = []

    def app(self, **options: Any) -> Application:
        """An application on this database with its own connections, encrypting under k1."""
        options.setdefault("cipher", Cipher({"k1": self.key}, current="k1"))
        application = Application(SCHOOL, self.url, env={}, **options)
        self._opened.append(application)
        return application

    def close(self) -> None:
        for application in self._opened:
            application.close()

    def execute(self, query: str, *params: object) -> list[tuple[Any, ...]]:
        """Run ``query`` on the events table (``{events}`` in it) in a transaction of its own."""
        if self.kind == "sqlite":
            table = '"' + table_prefix(SCHOOL.name) + '_events"'
            with contextlib.closing(sqlite3.connect(self.raw)) as conn, conn:
                return conn.execute(query.format(events=table, ts="timestamp"), params).fetchall()
        composed = sql.SQL(query.replace("?", "%s")).format(
            events=sql.Identifier(SCHEMA, f"{SCHOOL.name}_events"),
            ts=sql.Identifier("timestamp_us"),
        )
        with psycopg.connect(self.raw) as conn:
            cursor = conn.execute(composed, params)
            return cursor.fetchall() if cursor.description else []

    def swap(self, column: str, first: Row, second: Row) -> None:
        """Exchange ``column`` (payload or meta) between two rows."""
        assert column in ("payload", "meta")
        where = "stream = ? AND version = ?"
        [(a,)] = self.execute(f"SELECT {column} FROM {{events}} WHERE {where}", *first)
        [(b,)] = self.execute(f"SELECT {column} FROM {{events}} WHERE {where}", *second)
        assert a != b
        for row, value in ((first, b), (second, a)):
            self.execute(f"UPDATE {{events}} SET {column} = ? WHERE {where}", bytes(value), *row)

    def insert(self, stream: str, version: int, topic: str, payload: bytes) -> None:
        """Add a row as no application wrote it."""
        self.execute(
            "INSERT INTO {events} (stream, version, topic, payload, {ts}, meta)"
            " VALUES (?, ?, ?, ?, ?, NULL)",
            stream,
            version,
            topic,
            payload,
            1_714_555_800_000_000,
        )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    """An SQLite file, then a PostgreSQL database whose tables live in schema 'vault'."""
    if request.param == "sqlite":
        path = tmp_path / "school.db"
        opened = Place("sqlite", f"sqlite:///{path}", str(path))
    else:
        url = request.getfixturevalue("pg_url")
        opened = Place("postgres", f"{url}?schema={SCHEMA}", url)
    yield opened
    opened.close()


def positions(app: Application) -> dict[Row, int]:
    """The log position of each (stream, version)."""
    return {(e.stream, e.version): e.position for e in app.log()}


def refused(topic: str, row: Row, meta: bool = False) -> str:
    """The pattern of the CipherError message for ``row`` stored under ``topic``."""
    what = f"the metadata of {topic!r}" if meta else repr(topic)
    stream, version = row
    return re.escape(
        f"cannot decrypt {what} at stream {stream!r} version {version}: authentication failed"
    )


# --- moved ciphertexts -----------------------------------------------------------------


TOPICS = {("a", 1): "dog.Registered", ("a", 2): "dog.TrickAdded", ("b", 1): "dog.Registered"}
EVENTS = {("a", 1): Registered("Ann"), ("a", 2): TrickAdded("sit"), ("b", 1): Registered("Bob")}
STATES = {"a": Dog("Ann", pvector(["sit"])), "b": Dog("Bob")}


@pytest.mark.parametrize(
    ("first", "second"),
    [(("a", 1), ("b", 1)), (("a", 2), ("b", 1))],
    ids=["same-topic-and-version", "other-topic-and-version"],
)
def test_payloads_swapped_between_streams_are_refused_naming_each_row(
    place: Place, first: Row, second: Row
) -> None:
    """Payloads swapped between two streams fail to decrypt in get, stream and log, each
    error naming the row read; swapped back, they read as before."""
    writer = place.app()
    writer.execute(dogs, "a", register, "Ann")
    writer.execute(dogs, "a", add_trick, "sit")
    writer.execute(dogs, "b", register, "Bob")
    reader = place.app(cipher=Cipher({"k1": place.key}, current="k1"))
    assert {s: reader.get(dogs, s) for s in STATES} == STATES
    at = positions(reader)
    assert at[first] < at[second]

    place.swap("payload", first, second)
    for row in (first, second):
        stream = row[0]
        with pytest.raises(fes.errors.CipherError, match=refused(TOPICS[row], row)):
            reader.get(dogs, stream)
        with pytest.raises(fes.errors.CipherError, match=refused(TOPICS[row], row)):
            reader.stream(stream)
    with pytest.raises(fes.errors.CipherError, match=refused(TOPICS[first], first)):
        reader.log()
    with pytest.raises(fes.errors.CipherError, match=refused(TOPICS[second], second)):
        reader.log(at[first])
    # The row the swap did not touch still reads.
    [untouched] = [row for row in EVENTS if row not in (first, second)]
    [recorded] = reader.log(at[untouched] - 1, limit=1)
    assert (recorded.stream, recorded.version, recorded.event) == (*untouched, EVENTS[untouched])

    place.swap("payload", first, second)
    assert {s: reader.get(dogs, s) for s in STATES} == STATES
    assert [(e.stream, e.version) for e in reader.log()] == list(at)


def test_metadata_swapped_between_streams_is_refused_naming_each_row(place: Place) -> None:
    """Metadata swapped between two streams fails to decrypt in stream and log, naming the
    row read; get, which folds events only, still reads; swapped back, all read as before."""
    writer = place.app()
    writer.execute(dogs, "a", register, "Ann", metadata=fes.Metadata(correlation_id="corr-a"))
    writer.execute(dogs, "b", register, "Bob", metadata=fes.Metadata(correlation_id="corr-b"))
    reader = place.app(cipher=Cipher({"k1": place.key}, current="k1"))
    first, second = ("a", 1), ("b", 1)
    at = positions(reader)
    assert at[first] < at[second]
    assert [e.metadata.correlation_id for e in reader.log()] == ["corr-a", "corr-b"]

    place.swap("meta", first, second)
    for row in (first, second):
        with pytest.raises(fes.errors.CipherError, match=refused("dog.Registered", row, meta=True)):
            reader.stream(row[0])
    with pytest.raises(fes.errors.CipherError, match=refused("dog.Registered", first, meta=True)):
        reader.log()
    with pytest.raises(fes.errors.CipherError, match=refused("dog.Registered", second, meta=True)):
        reader.log(at[first])
    assert reader.get(dogs, "a") == Dog("Ann")
    assert reader.get(dogs, "b") == Dog("Bob")

    place.swap("meta", first, second)
    assert [e.metadata.correlation_id for e in reader.log()] == ["corr-a", "corr-b"]
    assert [e.metadata.correlation_id for e in reader.stream("b")] == ["corr-b"]


# --- hostile topics --------------------------------------------------------------------




@pytest.mark.parametrize("topic", ["os:system", "builtins:eval", "fes_canary:x"])
def test_a_hostile_topic_in_the_store_is_refused_without_imports(
    place: Place, topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row inserted under a topic naming a callable is an UnknownTopic in log and stream,
    and reading it imports nothing and runs nothing."""
    canary_dir = tmp_path / "canary"
    canary_dir.mkdir()
    (canary_dir / "fes_canary.py").write_text(CANARY)
    monkeypatch.syspath_prepend(str(canary_dir))
    assert importlib.util.find_spec("fes_canary") is not None
    app = place.app()
    app.execute(dogs, "a", register, "Ann")
    place.insert("evil", 1, topic, b'{"args": ["echo pwned"], "command": "echo pwned"}')
    # Read once, so that whatever the store and codec load lazily is loaded.
    with pytest.raises(fes.errors.UnknownTopic):
        app.log()
    before = set(sys.modules)

    failures: list[fes.errors.UnknownTopic] = []
    with nothing_imported_or_run(monkeypatch) as calls:
        for read in (app.log, lambda: app.log(1), lambda: app.stream("evil")):
            try:
                read()
            except fes.errors.UnknownTopic as exc:
                failures.append(exc)
    assert calls == []
    assert [(e.topic, "not registered" in str(e)) for e in failures] == [(topic, True)] * 3
    assert set(sys.modules) == before
    assert "fes_canary" not in sys.modules
    assert not (canary_dir / "fes_canary.imported").exists()
    assert not (canary_dir / "fes_canary.called").exists()
    assert [e.event for e in app.log(limit=1)] == [app.stream("a")[0].event]
