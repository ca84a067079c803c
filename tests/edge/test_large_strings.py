"""An event with a long string is written in memory a small multiple of its size.

orjson reserves several bytes per character of a string before writing it;
fes writes long strings a slice at a time and splices their JSON into
orjson's output, byte for byte what orjson writes itself.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import orjson
import pytest
from attrs import frozen
from hypothesis import given
from hypothesis import strategies as st
from pyrsistent import PVector, pvector

import fes
from fes.edge.codec import Codec
from fes.edge.codec._large import LARGE, dumps_large, encode_str
from fes.errors import EncodeError
from fes.events import Metadata

from .conftest import Place

# every code point, lone surrogates too; escapes and astral characters often
_SPECIAL = st.sampled_from(
    ['"', "\\", "\n", "\x00", "\x1f", "\x7f", "\u2028", "é", "€", "\U0001f600", "\ud800"]
)
_CHARACTERS = st.one_of(_SPECIAL, st.characters(codec=None, categories=None))
_TEXT = st.text(_CHARACTERS, max_size=40)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


def _orjson(value: Any) -> bytes | type[Exception]:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:
        return orjson.JSONEncodeError


def _spliced(value: Any, large: int, size: int) -> bytes | type[Exception]:
    try:
        return dumps_large(value, large, size)
    except orjson.JSONEncodeError:
        return orjson.JSONEncodeError


@given(_JSON, st.integers(0, 6), st.integers(1, 5))
def test_long_strings_written_a_slice_at_a_time_are_orjsons_bytes(
    value: Any, large: int, size: int
) -> None:
    """Any JSON value, whatever counts as long and however it is sliced: orjson's bytes."""
    assert _spliced(value, large, size) == _orjson(value)


@given(_TEXT, st.integers(1, 5))
def test_a_string_in_slices_is_orjsons_string(text: str, size: int) -> None:
    """A string in slices of any size: orjson's JSON of it, or its refusal (lone surrogates)."""
    try:
        expected: bytes | type[Exception] = orjson.dumps(text)
    except orjson.JSONEncodeError:
        expected = orjson.JSONEncodeError
    try:
        got: bytes | type[Exception] = encode_str(text, size)
    except orjson.JSONEncodeError:
        got = orjson.JSONEncodeError
    assert got == expected


@frozen
class Noted:
    title: str
    text: str
    note: str | None = None
    count: int = 0


@frozen
class Tagged:
    tags: PVector[str]


@frozen
class Counted:
    n: int
    ratio: float


def _apply(state: int | None, event: object) -> int:
    return (state or 0) + 1


def _note(state: int | None, text: str) -> list[Noted]:
    return [Noted("big", text)]


docs = fes.Aggregate("doc", initial=None, apply=_apply, events=[Noted, Tagged, Counted])
DOCS = fes.App("docs", aggregates=[docs])


def test_only_classes_that_can_hold_a_string_are_checked() -> None:
    """A class of numbers is written as before; one with strings by its generated writer."""
    writers = {kind: w[3] for kind, w in Codec([docs])._writers.items()}
    assert writers[Counted] is None
    assert writers[Noted] is not None and writers[Tagged] is not None


@pytest.mark.parametrize(
    "event",
    [
        Noted("t", "x" * (LARGE + 1)),
        Noted("t", "a", note="é\n\"" * LARGE),
        Tagged(pvector(["s", "\U0001f600" * (LARGE + 1), "t"])),
    ],
    ids=["str", "optional", "nested"],
)
def test_events_with_a_long_string_are_stored_as_orjson_writes_them(event: object) -> None:
    """A long string in any field: the payload is orjson's, and it reads back equal."""
    codec = Codec([docs])
    topic, payload = codec.encode(event, stream="s", version=1)
    assert payload == orjson.dumps(codec._writers[type(event)][1](event))
    assert codec.decode(topic, payload, stream="s", version=1) == event


def test_a_long_string_with_a_lone_surrogate_is_refused_with_its_field() -> None:
    """A lone surrogate deep in a long string: an EncodeError naming the field, as in short."""
    codec = Codec([docs])
    for text in ("a\ud800", "x" * (3 * LARGE) + "\udfff" + "y"):
        with pytest.raises(EncodeError, match=r"field 'text':.*surrogates.*nothing was stored"):
            codec.encode(Noted("t", text), stream="s", version=1)


def test_long_metadata_headers_are_written_as_orjson_writes_them() -> None:
    """Metadata whose header is long: orjson's bytes, read back equal."""
    codec = Codec([docs])
    meta = Metadata("c", None, {"trace": "€" * (LARGE + 3)})
    data = codec.encode_meta(meta, topic="t", stream="s", version=1)
    assert data == orjson.dumps({"correlation_id": "c", "headers": dict(meta.headers)})
    assert codec.decode_meta(data, topic="t", stream="s", version=1) == meta


@frozen
class Document:
    title: str
    text: str


def _edit(state: Document, event: object) -> Document:
    return state


documents = fes.Aggregate("document", initial=Document("", ""), apply=_edit, events=[Counted])


def test_a_snapshot_of_a_long_string_is_orjsons_in_a_small_multiple_of_its_size() -> None:
    """A state holding 8 MiB of text: orjson's bytes, at most 4 times that allocated."""
    codec = Codec([documents])
    state = Document("t", "é\n" * (4 * 2**20))
    codec.encode_state(documents, Document("", ""), stream="s", version=1)  # hooks made
    payloads: list[bytes] = []
    peak = _peak_of(lambda: payloads.append(
        codec.encode_state(documents, state, stream="s", version=1)
    ))
    assert payloads[0] == orjson.dumps({"title": "t", "text": state.text})
    assert codec.decode_state(documents, payloads[0], stream="s", version=1) == state
    assert peak <= 4 * len(payloads[0]), f"{peak / 2**20:.0f} MiB"


def _peak_of(write: Any) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        write()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("char", ["x", "€"])
def test_writing_a_big_event_peaks_at_a_small_multiple_of_its_size(
    place: Place, char: str
) -> None:
    """Executing a command whose event holds 8 MiB of text allocates at most 4 times that."""
    app = place.app(DOCS)
    app.execute(docs, "warm", _note, "a")  # connections, statements, generated code
    size = 8 * 2**20
    text = char * (size // len(char.encode()))
    peak = _peak_of(lambda: app.execute(docs, "big", _note, text))
    assert app.get(docs, "big") == 1
    assert peak <= 4 * size, f"{peak / 2**20:.0f} MiB for an event of {size / 2**20:.0f} MiB"
