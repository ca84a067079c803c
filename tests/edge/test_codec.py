"""The codec: events, states and metadata to bytes and back, and every way that can fail."""

from __future__ import annotations

import ast
import base64
import enum
import importlib
import importlib.util
import linecache
import math
import os
import random
import string
import sys
import traceback
import zlib
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import attrs
import orjson
import pytest
from attrs import evolve, field, frozen
from guards import CANARY, nothing_imported_or_run
from hypothesis import given
from hypothesis import strategies as st
from pyrsistent import PMap, PSet, PVector, pmap, pset, pvector

import fes
import fes.edge.codec
from fes.edge import Application
from fes.edge.codec import Cipher, Codec
from fes.events import NO_METADATA, Metadata
from fes.examples import bank, dogs

EXAMPLES = [dogs.dogs, bank.accounts]
INT64 = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(max_size=30)
KEY_A = bytes(range(32))
KEY_B = bytes(range(100, 132))


# --- event types with many kinds of field ------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Size(enum.IntEnum):
    SMALL = 1
    LARGE = 2


@frozen
class Point:
    x: int
    y: int


@frozen
class Card:
    number: str


@frozen
class Cash:
    pass


@frozen
class Voucher:
    number: str  # the same fields as Card: only a tag tells them apart


@frozen
class Everything:
    text: str
    number: int
    ratio: float
    flag: bool
    amount: Decimal
    ident: UUID
    when: datetime
    day: date
    clock: time
    blob: bytes
    colour: Colour
    size: Size
    maybe_text: str | None
    maybe_number: int | None
    maybe_point: Point | None
    maybe_ratio: float | None
    points: PVector[Point]
    numbers: PVector[int]
    counts: PMap[str, int]
    by_id: PMap[UUID, str]
    by_point: PMap[int, Point]
    tags: PSet[str]
    seq: tuple[int, ...]
    pair: tuple[str, int]
    unique: frozenset[int]
    names: list[str]
    scores: dict[str, float]
    payment: Card | Cash | Voucher
    either: int | str | None
    mode: Literal["fast", "slow"]
    nested: PVector[PMap[str, PVector[Point]]]
    anything: Any
    _secret: str = "hidden"
    later: int = 7
    labels: PVector[str] = field(factory=pvector)
    keyword: str = field(default="kw", kw_only=True)


@frozen
class Tree:
    label: str
    children: PVector[Tree] = field(factory=pvector)


def _apply_any(state: Any, event: Any) -> Any:
    return state


kitchen = fes.Aggregate(
    name="kitchen", initial=None, apply=_apply_any, events=[Everything, Tree, Point]
)

timezones = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)
floats = st.floats(allow_nan=False)
points = st.builds(Point, INT64, INT64)
json_values = st.recursive(
    st.none() | st.booleans() | INT64 | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)

everything = st.builds(
    Everything,
    text=TEXT,
    number=INT64,
    ratio=floats,
    flag=st.booleans(),
    amount=st.decimals(allow_nan=False),
    ident=st.uuids(),
    when=st.datetimes(timezones=st.none() | timezones),
    day=st.dates(),
    clock=st.times(),
    blob=st.binary(max_size=20),
    colour=st.sampled_from(Colour),
    size=st.sampled_from(Size),
    maybe_text=st.none() | TEXT,
    maybe_number=st.none() | INT64,
    maybe_point=st.none() | points,
    maybe_ratio=st.none() | floats,
    points=st.lists(points, max_size=3).map(pvector),
    numbers=st.lists(INT64, max_size=5).map(pvector),
    counts=st.dictionaries(TEXT, INT64, max_size=3).map(pmap),
    by_id=st.dictionaries(st.uuids(), TEXT, max_size=3).map(pmap),
    by_point=st.dictionaries(INT64, points, max_size=3).map(pmap),
    tags=st.frozensets(TEXT, max_size=3).map(pset),
    seq=st.lists(INT64, max_size=3).map(tuple),
    pair=st.tuples(TEXT, INT64),
    unique=st.frozensets(INT64, max_size=3),
    names=st.lists(TEXT, max_size=3),
    scores=st.dictionaries(TEXT, floats, max_size=3),
    payment=st.builds(Card, TEXT) | st.just(Cash()) | st.builds(Voucher, TEXT),
    either=st.none() | INT64 | TEXT,
    mode=st.sampled_from(["fast", "slow"]),
    nested=st.lists(
        st.dictionaries(TEXT, st.lists(points, max_size=2).map(pvector), max_size=2).map(pmap),
        max_size=2,
    ).map(pvector),
    anything=json_values,
    secret=TEXT,
    later=INT64,
    labels=st.lists(TEXT, max_size=3).map(pvector),
    keyword=TEXT,
)

trees = st.recursive(
    st.builds(Tree, TEXT),
    lambda inner: st.builds(Tree, TEXT, st.lists(inner, max_size=3).map(pvector)),
    max_leaves=10,
)


def _codecs() -> dict[str, Codec]:
    ring = Cipher({"a": KEY_A}, "a")
    aggregates = [*EXAMPLES, kitchen]
    return {
        "plain": Codec(aggregates),
        "compressed": Codec(aggregates, compress=True),
        "encrypted": Codec(aggregates, cipher=ring),
        "both": Codec(aggregates, compress=9, cipher=ring),
    }


CODECS = _codecs()
TOPIC_TYPES = {t: k for a in [*EXAMPLES, kitchen] for t, k in a.topics().items()}
codecs = pytest.mark.parametrize("codec", list(CODECS.values()), ids=list(CODECS))


def _example_events() -> st.SearchStrategy[Any]:
    options = []
    for aggregate in EXAMPLES:
        for kind in aggregate.events:
            ints = {a.name: INT64 for a in attrs.fields(kind) if a.type in (int, "int")}
            options.append(st.builds(kind, **ints))
    return st.one_of(options)


def _round_trip(codec: Codec, event: Any, stream: str = "s", version: int = 1) -> Any:
    topic, payload = codec.encode(event, stream=stream, version=version)
    return codec.decode(topic, payload, stream=stream, version=version)


# --- round trips ------------------------------------------------------------------------


@codecs
@given(event=_example_events(), stream=TEXT, version=st.integers(1, 2**40))
def test_example_events_round_trip(codec: Codec, event: Any, stream: str, version: int) -> None:
    """Every event of the example domains decodes to an equal event, in every configuration."""
    assert _round_trip(codec, event, stream, version) == event


@codecs
@given(event=everything)
def test_many_field_kinds_round_trip(codec: Codec, event: Everything) -> None:
    """An event with every supported kind of field decodes to an equal event."""
    decoded = _round_trip(codec, event)
    assert decoded == event
    assert decoded.when.utcoffset() == event.when.utcoffset()
    assert type(decoded.payment) is type(event.payment)
    assert isinstance(decoded.points, PVector) and isinstance(decoded.counts, PMap)


@pytest.mark.parametrize(
    "offset",
    [timedelta(microseconds=1), timedelta(seconds=-1, microseconds=5), timedelta(seconds=59)],
    ids=["+1us", "-0.999995s", "+59s"],
)
def test_utc_offsets_with_seconds_and_microseconds_round_trip(offset: timedelta) -> None:
    """A datetime or time whose UTC offset has seconds or microseconds keeps it exactly.

    Python 3.11's fromisoformat read "+00:00:00.000001" as UTC; found by the
    round-trip property above.
    """
    event = evolve(
        everything_example(),
        when=datetime(2026, 12, 2, 4, 30, 15, 123456, tzinfo=timezone(offset)),
        clock=time(23, 59, 59, 999999, tzinfo=timezone(offset)),
    )
    for codec in CODECS.values():
        decoded = _round_trip(codec, event)
        assert decoded.when.utcoffset() == offset and decoded.when == event.when
        assert decoded.clock.utcoffset() == offset and decoded.clock == event.clock


@given(tree=trees)
def test_recursive_types_round_trip(tree: Tree) -> None:
    """A type that contains itself (a tree of PVectors) round-trips."""
    assert _round_trip(CODECS["plain"], tree) == tree


@given(event=everything)
def test_non_finite_floats_round_trip(event: Everything) -> None:
    """NaN and the infinities survive, though JSON has no spelling for them."""
    for special in (math.inf, -math.inf):
        assert _round_trip(CODECS["plain"], attrs.evolve(event, ratio=special)).ratio == special
    assert math.isnan(_round_trip(CODECS["plain"], attrs.evolve(event, ratio=math.nan)).ratio)
    nan_maybe = _round_trip(CODECS["plain"], attrs.evolve(event, maybe_ratio=math.nan))
    assert math.isnan(nan_maybe.maybe_ratio)


def test_plain_payload_is_bare_json() -> None:
    """Uncompressed, unencrypted schema-1 events are stored as plain JSON objects."""
    topic, payload = CODECS["plain"].encode(bank.Deposited(250), stream="s", version=1)
    assert (topic, payload) == ("account.Deposited", b'{"amount":250}')
    assert CODECS["plain"].topic_of(bank.Deposited(1)) == "account.Deposited"


def test_tagged_unions_tell_same_shaped_classes_apart() -> None:
    """Union members with the same fields are written with a tag naming the class."""
    event = attrs.evolve(everything_example(), payment=Voucher("7"), either=5)
    data = orjson.loads(_round_trip_payload(event))
    assert data["payment"] == {"$type": "Voucher", "number": "7"}
    assert data["either"] == 5  # distinct JSON kinds need no tag
    payload = orjson.dumps(data)
    decoded = CODECS["plain"].decode("kitchen.Everything", payload, stream="s", version=1)
    assert type(decoded.payment) is Voucher and decoded == event


def test_tracebacks_through_generated_code_show_its_source() -> None:
    """An error inside generated structure or unstructure code shows the generated line."""
    with pytest.raises(fes.errors.DecodeError) as read:
        CODECS["plain"].decode("account.Deposited", b'{"amount":"5"}', stream="s", version=1)
    text = "".join(traceback.format_exception(read.value))
    assert 'File "<fes generated structure fes.examples.bank.Deposited' in text
    assert "    return __cl((_v0 if (_v0 := o['amount'])" in text
    with pytest.raises(fes.errors.EncodeError) as written:
        CODECS["plain"].encode(bank.Deposited(10.5), stream="s", version=1)  # type: ignore[arg-type]
    text = "".join(traceback.format_exception(written.value))
    assert 'File "<fes generated unstructure fes.examples.bank.Deposited' in text
    assert "    return {'amount': (_v0 if (_v0 := i.amount)" in text


def test_generated_source_is_registered_once_per_class_not_per_codec() -> None:
    """Another codec of the same classes reuses their linecache entries instead of adding more."""
    Codec(EXAMPLES)

    def generated() -> set[str]:
        return {name for name in linecache.cache if name.startswith("<fes generated")}

    before = generated()
    Codec(EXAMPLES)
    assert generated() == before
    assert "<fes generated structure fes.examples.bank.Deposited>" in before


def test_unknown_union_tag_is_a_decode_error() -> None:
    """A tagged union member naming no member type is refused."""
    data = orjson.loads(_round_trip_payload(everything_example()))
    data["payment"] = {"$type": "Bitcoin", "number": "1"}
    with pytest.raises(fes.errors.DecodeError, match="Card"):
        CODECS["plain"].decode("kitchen.Everything", orjson.dumps(data), stream="s", version=1)


def test_missing_defaulted_field_reads_as_default() -> None:
    """A payload stored before a defaulted field existed decodes with the default."""
    data = orjson.loads(_round_trip_payload(everything_example()))
    del data["later"], data["labels"], data["keyword"]
    decoded = CODECS["plain"].decode(
        "kitchen.Everything", orjson.dumps(data), stream="s", version=1
    )
    assert (decoded.later, decoded.labels, decoded.keyword) == (7, pvector(), "kw")


def everything_example() -> Everything:
    return Everything(
        text="t", number=1, ratio=0.5, flag=True, amount=Decimal("1.10"),
        ident=UUID(int=1), when=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        day=date(2024, 1, 2), clock=time(3, 4), blob=b"\x00\xff", colour=Colour.RED,
        size=Size.LARGE, maybe_text=None, maybe_number=3, maybe_point=Point(1, 2),
        maybe_ratio=None, points=pvector([Point(0, 0)]), numbers=pvector([1, 2]),
        counts=pmap({"a": 1}), by_id=pmap({UUID(int=2): "two"}),
        by_point=pmap({1: Point(1, 1)}), tags=pset(["x"]), seq=(1, 2), pair=("p", 2),
        unique=frozenset({3}), names=["n"], scores={"s": 1.5}, payment=Card("42"),
        either="e", mode="fast", nested=pvector([pmap({"k": pvector([Point(5, 6)])})]),
        anything={"free": [1, "form"]},
    )  # fmt: skip


def _round_trip_payload(event: Any) -> bytes:
    return CODECS["plain"].encode(event, stream="s", version=1)[1]


def test_kitchen_payload_is_readable_json() -> None:
    """Rich values are stored in their natural JSON spellings."""
    data = orjson.loads(_round_trip_payload(everything_example()))
    assert data["amount"] == "1.10"
    assert data["ident"] == "00000000-0000-0000-0000-000000000001"
    assert data["when"] == "2024-01-02T03:04:05+00:00"
    assert data["blob"] == "AP8="
    assert (data["colour"], data["size"]) == ("red", 2)
    assert data["by_id"] == {"00000000-0000-0000-0000-000000000002": "two"}
    assert data["by_point"] == [[1, {"x": 1, "y": 1}]]  # keys JSON objects cannot hold
    assert data["payment"] == {"$type": "Card", "number": "42"}
    assert data["_secret"] == "hidden"


# --- snapshot states ------------------------------------------------------------------


dog_states = st.builds(dogs.Dog, TEXT, st.lists(TEXT, max_size=5).map(pvector))
accounts = st.builds(bank.Account, TEXT, INT64, INT64, st.booleans())
pair = fes.combine(dogs.dogs, bank.accounts)


@codecs
@given(dog=st.none() | dog_states, account=st.none() | accounts, version=st.integers(1, 99))
def test_states_round_trip(codec: Codec, dog: Any, account: Any, version: int) -> None:
    """Example states, None, and tuples of combined aggregates survive a snapshot."""
    for aggregate, state in [(dogs.dogs, dog), (bank.accounts, account), (pair, (dog, account))]:
        payload = codec.encode_state(aggregate, state, stream="s", version=version)
        assert codec.decode_state(aggregate, payload, stream="s", version=version) == state


def test_neutral_and_nested_combined_states_round_trip() -> None:
    """The neutral aggregate's unit state and nested combinations round-trip."""
    codec = CODECS["plain"]
    nested = fes.combine(pair, fes.neutral)
    state = ((dogs.Dog("rex", pvector(["sit"])), None), ())
    for aggregate, value in [(fes.neutral, ()), (nested, state)]:
        payload = codec.encode_state(aggregate, value, stream="s", version=1)
        assert codec.decode_state(aggregate, payload, stream="s", version=1) == value


def test_state_of_unannotated_projector_is_refused_clearly() -> None:
    """A state type that cannot be read from the projector is a DefinitionError."""
    opaque = fes.Aggregate(name="opaque", initial=None, apply=lambda s, e: s)
    with pytest.raises(fes.errors.DefinitionError, match="opaque"):
        CODECS["plain"].encode_state(opaque, 1, stream="s", version=1)


def test_corrupt_state_is_a_decode_error() -> None:
    """A snapshot payload that does not fit the state type names stream and version."""
    with pytest.raises(fes.errors.DecodeError, match=r"'dog'.*'s'.*version 4"):
        CODECS["plain"].decode_state(dogs.dogs, b'{"name": 1}', stream="s", version=4)


# --- metadata ---------------------------------------------------------------------------


metadata = st.builds(
    Metadata, st.none() | TEXT, st.none() | TEXT, st.dictionaries(TEXT, TEXT, max_size=3)
)


WHERE = {"topic": "dog.Registered", "stream": "s", "version": 1}


@codecs
@given(meta=metadata)
def test_metadata_round_trips(codec: Codec, meta: Metadata) -> None:
    """Metadata decodes to equal metadata; empty metadata is stored as nothing."""
    data = codec.encode_meta(meta, **WHERE)
    assert (data is None) == (meta == NO_METADATA)
    assert codec.decode_meta(data, **WHERE) == meta


def test_empty_metadata_is_none() -> None:
    """The common case, no metadata, stores nothing and reads back as empty."""
    for codec in CODECS.values():
        assert codec.encode_meta(NO_METADATA, **WHERE) is None
        assert codec.encode_meta(Metadata(), **WHERE) is None
        assert codec.decode_meta(None, **WHERE) is NO_METADATA
        assert codec.decode_meta(b"", **WHERE) is NO_METADATA


@pytest.mark.parametrize(
    "data", [b"{", b"[]", b'{"correlation_id": 5}', b'{"headers": {"a": 1}}', b'{"headers": []}']
)
def test_corrupt_metadata_is_a_decode_error(data: bytes) -> None:
    """Metadata that is not what the codec writes is refused with a DecodeError."""
    with pytest.raises(fes.errors.DecodeError, match=r"metadata of 'dog.Registered' at stream 's'"):
        CODECS["plain"].decode_meta(data, **WHERE)


def test_large_metadata_is_compressed() -> None:
    """A compressing codec compresses large headers too, and reads them back."""
    meta = Metadata("c", "d", {"trace": "x" * 500})
    data = CODECS["compressed"].encode_meta(meta, **WHERE)
    assert data is not None and len(data) < 200 and data[0] != ord("{")
    assert CODECS["compressed"].decode_meta(data, **WHERE) == meta


META_ROW = r"cannot decrypt the metadata of 'dog\.Registered' at stream 's' version 1: "


def test_encrypted_metadata_hides_its_headers_and_is_bound_to_its_row() -> None:
    """With a cipher, headers are not readable in the stored bytes; moved or flipped, refused."""
    codec = _encrypted()
    meta = Metadata("order-7", "orders:o-7@1", {"user": "ann@example.com"})
    data = codec.encode_meta(meta, **WHERE)
    assert data is not None and b"ann@example.com" not in data and b"order-7" not in data
    assert codec.decode_meta(data, **WHERE) == meta
    for other in ({"stream": "t"}, {"version": 2}, {"topic": "dog.TrickAdded"}):
        with pytest.raises(fes.errors.CipherError, match="metadata of"):
            codec.decode_meta(data, **{**WHERE, **other})
    for index in range(len(data)):
        tampered = bytearray(data)
        tampered[index] ^= 0x01
        with pytest.raises(fes.errors.CipherError, match=META_ROW):
            codec.decode_meta(bytes(tampered), **WHERE)
    with pytest.raises(fes.errors.CipherError, match="not encrypted"):
        codec.decode_meta(b'{"correlation_id": "forged"}', **WHERE)
    with pytest.raises(fes.errors.CipherError, match="no cipher"):
        CODECS["plain"].decode_meta(data, **WHERE)


# --- compression ------------------------------------------------------------------------


def test_compressible_payload_is_compressed() -> None:
    """A repetitive payload is stored compressed, flagged, smaller, and reads back."""
    codec = CODECS["compressed"]
    event = dogs.Registered("woof " * 200)
    topic, payload = codec.encode(event, stream="s", version=1)
    assert payload[0] == 0x81 and len(payload) < 100
    assert codec.decode(topic, payload, stream="s", version=1) == event
    assert Codec(EXAMPLES).decode(topic, payload, stream="s", version=1) == event


def test_incompressible_and_small_payloads_stay_plain() -> None:
    """Compression is used only when it makes the payload smaller."""
    codec = CODECS["compressed"]
    alphabet = string.ascii_letters + string.digits + string.punctuation.replace('"', "")
    noise = "".join(random.Random(1).choices(alphabet, k=120))
    assert len(zlib.compress(orjson.dumps({"name": noise}))) > len(noise) + 11
    for event in (dogs.Registered(noise), dogs.Registered("rex")):
        topic, payload = codec.encode(event, stream="s", version=1)
        assert payload == CODECS["plain"].encode(event, stream="s", version=1)[1]
        assert codec.decode(topic, payload, stream="s", version=1) == event


def test_decompression_bomb_is_refused() -> None:
    """A small payload that would inflate beyond max_payload is a DecodeError."""
    bomb = b"\x81" + zlib.compress(b'{"name": "' + b"a" * (20 * 1024 * 1024) + b'"}', 9)
    assert len(bomb) < 30_000
    for codec in (Codec([dogs.dogs]), Codec([dogs.dogs], max_payload=1024)):
        with pytest.raises(fes.errors.DecodeError, match="max_payload"):
            codec.decode("dog.Registered", bomb, stream="s", version=1)


def test_codec_never_writes_what_it_refuses_to_read() -> None:
    """A payload larger than max_payload is stored uncompressed, so it still reads back."""
    codec = Codec([dogs.dogs], compress=True, max_payload=200)
    event = dogs.Registered("a" * 1000)
    topic, payload = codec.encode(event, stream="s", version=1)
    assert codec.decode(topic, payload, stream="s", version=1) == event


#: Values of every kind the fields of Everything hold, and then some: put into
#: a field of another type they are what a buggy command might build (attrs
#: does not check field types).
any_value = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(),
    TEXT,
    st.booleans(),
    st.none(),
    st.binary(max_size=4),
    st.decimals(),
    st.uuids(),
    st.datetimes(),
    st.dates(),
    st.times(),
    st.sampled_from(Colour),
    st.sampled_from(Size),
    points,
    st.just(Cash()),
    st.builds(Card, TEXT),
    st.lists(INT64 | TEXT | st.booleans(), max_size=3),
    st.lists(INT64 | TEXT, max_size=3).map(pvector),
    st.lists(INT64 | TEXT, max_size=3).map(tuple),
    st.dictionaries(TEXT, INT64 | TEXT, max_size=2),
    st.dictionaries(TEXT, INT64, max_size=2).map(pmap),
)
#: Every field of Everything but ``anything`` (typed Any: written as given).
typed_fields = [a.alias for a in attrs.fields(Everything) if a.name != "anything"]


@given(event=everything, name=st.sampled_from(typed_fields), value=any_value)
def test_whatever_encode_accepts_decodes(event: Everything, name: str, value: Any) -> None:
    """Law: a field holding a value of another type is refused on write, or it reads back.

    attrs does not check types, so ``Paid(10.5)`` for an ``int`` field gets as
    far as the codec; stored, it would fail every later read of its stream.
    """
    odd = attrs.evolve(event, **{name: value})
    codec = CODECS["plain"]
    try:
        topic, payload = codec.encode(odd, stream="s", version=1)
    except fes.errors.EncodeError as error:
        assert "field" in str(error) or "cannot encode" in str(error)
        return
    assert type(codec.decode(topic, payload, stream="s", version=1)) is Everything


@pytest.mark.parametrize(
    ("field_name", "value"),
    [
        ("number", 10.5),
        ("number", True),
        ("number", "5"),
        ("ratio", True),
        ("ratio", "1.5"),
        ("text", 5),
        ("flag", 1),
        ("amount", 1.5),
        ("ident", "not-a-uuid"),
        ("when", date(2024, 1, 1)),
        ("day", datetime(2024, 1, 1)),
        ("colour", Size.SMALL),
        ("colour", "red"),
        ("mode", "medium"),
        ("maybe_point", Card("x")),
        ("numbers", pvector([1, "2"])),
        ("tags", pset([1])),
        ("labels", pvector([True])),
        ("either", True),
        ("payment", Point(1, 2)),
        ("payment", None),  # a union without None: null would not read back
    ],
)
def test_ill_typed_fields_are_refused_on_write(field_name: str, value: Any) -> None:
    """A value that would not read back is an EncodeError naming the field; nothing is stored."""
    event = attrs.evolve(_an_everything(), **{field_name: value})
    with pytest.raises(fes.errors.EncodeError, match=f"field '{field_name}'"):
        CODECS["plain"].encode(event, stream="s", version=1)


def test_values_that_read_back_equal_are_written() -> None:
    """An int for a float, an IntEnum for an int, a str subclass for a str: they read back equal."""

    class Name(str):
        pass

    event = attrs.evolve(_an_everything(), ratio=3, number=Size.LARGE, text=Name("Rex"))
    assert _round_trip(CODECS["plain"], event) == event


def test_an_ill_typed_event_is_not_stored() -> None:
    """Through an application: the command's append fails and the stream stays readable."""
    app = Application(fes.App("shop", aggregates=[bank.accounts]), "memory://")
    app.execute(bank.accounts, "acc", bank.open_account, "ann")
    with pytest.raises(fes.errors.EncodeError, match="field 'amount'"):
        app.execute(bank.accounts, "acc", lambda state: [bank.Deposited(10.5)])  # type: ignore[arg-type]
    assert app.load(bank.accounts, "acc")[1] == 1
    assert len(app.log()) == 1


def _an_everything() -> Everything:
    return Everything(
        text="t", number=1, ratio=1.0, flag=False, amount=Decimal(1), ident=UUID(int=1),
        when=datetime(2024, 1, 1), day=date(2024, 1, 1), clock=time(1), blob=b"",
        colour=Colour.RED, size=Size.SMALL, maybe_text=None, maybe_number=None,
        maybe_point=None, maybe_ratio=None, points=pvector(), numbers=pvector(),
        counts=pmap(), by_id=pmap(), by_point=pmap(), tags=pset(), seq=(), pair=("a", 1),
        unique=frozenset(), names=[], scores={}, payment=Cash(), either=None, mode="fast",
        nested=pvector(), anything=None,
    )


# --- encryption ------------------------------------------------------------------------


def _encrypted(**kw: Any) -> Codec:
    return Codec(EXAMPLES, cipher=Cipher(kw.pop("keys", {"a": KEY_A}), kw.pop("current", "a")))


def test_encrypted_payload_hides_the_event() -> None:
    """An encrypted payload names its key id but not the event's contents; nonces differ."""
    codec = _encrypted()
    _, first = codec.encode(dogs.Registered("Fido"), stream="s", version=1)
    _, second = codec.encode(dogs.Registered("Fido"), stream="s", version=1)
    assert first[:3] == b"\x82\x01a" and b"Fido" not in first
    assert first != second


def test_every_flipped_byte_is_refused() -> None:
    """Changing any byte of an encrypted payload is a CipherError naming its row."""
    codec = _encrypted()
    topic, payload = codec.encode(dogs.Registered("Fido"), stream="s", version=1)
    for index in range(len(payload)):
        tampered = bytearray(payload)
        tampered[index] ^= 0x01
        with pytest.raises(
            fes.errors.CipherError,
            match=r"cannot decrypt 'dog\.Registered' at stream 's' version 1: ",
        ):
            codec.decode(topic, bytes(tampered), stream="s", version=1)
    tampered = bytearray(payload)
    tampered[-1] ^= 0x80
    with pytest.raises(fes.errors.CipherError, match=r"stream 's' version 1"):
        codec.decode(topic, bytes(tampered), stream="s", version=1)


@pytest.mark.parametrize(
    "where",
    [("other", 1, "dog.Registered"), ("s", 2, "dog.Registered"), ("s", 1, "dog.TrickAdded")],
)
def test_ciphertext_moved_to_another_row_is_refused(where: tuple[str, int, str]) -> None:
    """A payload copied to another stream, version or topic fails authentication."""
    codec = _encrypted()
    _, payload = codec.encode(dogs.Registered("Fido"), stream="s", version=1)
    stream, version, topic = where
    with pytest.raises(fes.errors.CipherError, match=f"stream '{stream}' version {version}"):
        codec.decode(topic, payload, stream=stream, version=version)


def test_ciphertext_of_another_application_is_refused() -> None:
    """The same row of another application, under the same keyring, fails authentication."""
    ring = Cipher({"a": KEY_A}, "a")
    school, office = (Codec(EXAMPLES, cipher=ring, app=name) for name in ("school", "office"))
    topic, payload = school.encode(dogs.Registered("Fido"), stream="s", version=1)
    assert school.decode(topic, payload, stream="s", version=1) == dogs.Registered("Fido")
    with pytest.raises(fes.errors.CipherError, match="copied from another row or application"):
        office.decode(topic, payload, stream="s", version=1)
    with pytest.raises(fes.errors.ConfigurationError, match="app must be"):
        Codec(EXAMPLES, app=5)  # type: ignore[arg-type]


def test_snapshot_moved_to_another_row_is_refused() -> None:
    """An encrypted snapshot is bound to its aggregate, stream and version."""
    codec = _encrypted()
    payload = codec.encode_state(dogs.dogs, dogs.Dog("rex"), stream="s", version=3)
    assert codec.decode_state(dogs.dogs, payload, stream="s", version=3) == dogs.Dog("rex")
    for stream, version in [("t", 3), ("s", 4)]:
        with pytest.raises(fes.errors.CipherError):
            codec.decode_state(dogs.dogs, payload, stream=stream, version=version)


def test_rotated_keys_still_read_old_payloads() -> None:
    """After rotation, old payloads decode with the retired key; new ones use the new key."""
    old = _encrypted()
    topic, before = old.encode(bank.Deposited(5), stream="s", version=1)
    rotated = _encrypted(keys={"a": KEY_A, "b": KEY_B}, current="b")
    _, after = rotated.encode(bank.Deposited(6), stream="s", version=2)
    assert after[:3] == b"\x82\x01b"
    assert rotated.decode(topic, before, stream="s", version=1) == bank.Deposited(5)
    assert rotated.decode(topic, after, stream="s", version=2) == bank.Deposited(6)


def test_unknown_key_id_is_named() -> None:
    """A payload under a key id the keyring lacks is a CipherError naming that id."""
    topic, payload = _encrypted().encode(bank.Deposited(5), stream="s", version=1)
    with pytest.raises(fes.errors.CipherError, match=r"key id 'a', which is not in the keyring"):
        _encrypted(keys={"b": KEY_B}, current="b").decode(topic, payload, stream="s", version=1)


def test_wrong_key_is_refused_without_revealing_keys() -> None:
    """A payload decrypted with another key under the same id fails; no key is shown."""
    topic, payload = _encrypted().encode(bank.Deposited(5), stream="s", version=1)
    wrong = _encrypted(keys={"a": KEY_B})
    with pytest.raises(fes.errors.CipherError) as caught:
        wrong.decode(topic, payload, stream="s", version=1)
    message = str(caught.value)
    assert "stream 's' version 1" in message
    for key in (KEY_A, KEY_B):
        assert base64.b64encode(key).decode() not in message and repr(key) not in message
    assert repr(KEY_B) not in repr(wrong) and "'a'" in repr(wrong.cipher)


def test_plaintext_is_refused_by_a_codec_with_a_cipher() -> None:
    """With a cipher, unencrypted payloads are refused: they could come from anyone."""
    codec = _encrypted()
    for payload in (b'{"amount": 5}', b'\x80{"amount": 5}', b"\x81" + zlib.compress(b"{}")):
        with pytest.raises(fes.errors.CipherError, match="not encrypted"):
            codec.decode("account.Deposited", payload, stream="s", version=1)
    with pytest.raises(fes.errors.CipherError, match="not encrypted"):
        codec.decode_state(bank.accounts, b"\x80null", stream="s", version=1)


def test_encrypted_payload_without_cipher_is_refused() -> None:
    """A codec without a cipher says so when it meets an encrypted payload."""
    topic, payload = _encrypted().encode(bank.Deposited(5), stream="s", version=1)
    with pytest.raises(fes.errors.CipherError, match="no cipher"):
        CODECS["plain"].decode(topic, payload, stream="s", version=1)


@pytest.mark.parametrize(
    ("keys", "current", "problem"),
    [
        ({}, "a", "at least one key"),
        ({"a": b"short"}, "a", "16, 24 or 32 bytes"),
        ({"a b": KEY_A}, "a b", "key id"),
        ({"a": KEY_A}, "b", "not in the keyring"),
    ],
)
def test_bad_keyrings_are_refused(keys: dict[str, bytes], current: str, problem: str) -> None:
    """Keys of the wrong size, bad ids and a missing current key are ConfigurationErrors."""
    with pytest.raises(fes.errors.ConfigurationError, match=problem):
        Cipher(keys, current)


def test_cipher_from_env() -> None:
    """FES_CIPHER_KEYS and FES_CIPHER_KEY_ID configure a keyring; nothing set means none."""
    a, b = base64.b64encode(KEY_A).decode(), base64.urlsafe_b64encode(KEY_B).decode()
    assert Cipher.from_env({}) is None
    single = Cipher.from_env({"FES_CIPHER_KEYS": f" one:{a} "})
    assert single is not None and single.current == "one"
    both = Cipher.from_env({"FES_CIPHER_KEYS": f"one:{a},two:{b}", "FES_CIPHER_KEY_ID": "two"})
    assert both is not None and (both.current, both.key_ids) == ("two", {"one", "two"})
    assert len(Cipher.generate_key()) == 32


def test_one_application_can_say_it_has_no_cipher() -> None:
    """<APP>_FES_CIPHER_KEYS=none: that application reads plain where the others encrypt."""
    from fes.edge._settings import AppEnv

    a = base64.b64encode(KEY_A).decode()
    env = {"FES_CIPHER_KEYS": f"one:{a}", "SCHOOL_FES_CIPHER_KEYS": "None"}
    assert Cipher.from_env(AppEnv(env, "school")) is None
    assert Cipher.from_env(AppEnv(env, "orders")) is not None


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"FES_CIPHER_KEYS": "one:AAAA,two:AAAA"}, "FES_CIPHER_KEY_ID"),
        ({"FES_CIPHER_KEYS": "one"}, "id:base64key"),
        ({"FES_CIPHER_KEYS": "one:not*base64"}, "not valid base64"),
        ({"FES_CIPHER_KEY_ID": "one"}, "FES_CIPHER_KEYS is empty"),
        ({"FES_CIPHER_KEYS": "one:AAAA,one:AAAA", "FES_CIPHER_KEY_ID": "one"}, "twice"),
        ({"FES_CIPHER_KEYS": "none", "FES_CIPHER_KEY_ID": "one"}, "says none"),
    ],
)
def test_bad_cipher_env_is_refused(env: dict[str, str], problem: str) -> None:
    """Malformed key settings are ConfigurationErrors that say what to fix."""
    with pytest.raises(fes.errors.ConfigurationError, match=problem):
        Cipher.from_env(env)


def test_missing_cryptography_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the optional 'cryptography' package a cipher says how to install it."""
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    with pytest.raises(fes.errors.CipherError, match=r"fes-events\[crypto\]"):
        Cipher({"a": KEY_A}, "a")


# --- schema versions, upcasting and aliases -------------------------------------------------


def _cents(data: Any) -> Any:
    return {"cents": data["price"] * 100}


def _currency(data: Any) -> Any:
    return {**data, "currency": "EUR"}


@fes.event(upcasters=[_cents, _currency], aliases=["shop.OldPriceSet"])
@frozen
class PriceSet:
    cents: int
    currency: str


shop = fes.Aggregate(
    name="shop", initial=None, apply=_apply_any, events=[PriceSet], snapshot_version=1
)


@pytest.mark.parametrize(
    "stored",
    [b'{"price": 5}', b'\x84\x01{"price": 5}', b'\x84\x02{"cents": 500}'],
    ids=["v1-bare", "v1-header", "v2"],
)
def test_old_schema_versions_are_upcast(stored: bytes) -> None:
    """Payloads stored at schema versions 1 and 2 are upcast to version 3 when read."""
    codec = Codec([shop])
    assert codec.decode("shop.PriceSet", stored, stream="s", version=1) == PriceSet(500, "EUR")


def test_current_schema_version_is_written_in_the_header() -> None:
    """An event at schema version 3 is written with its version; compressed or not."""
    for codec in (Codec([shop]), Codec([shop], compress=True)):
        topic, payload = codec.encode(PriceSet(1, "EUR"), stream="s", version=1)
        assert (topic, payload) == ("shop.PriceSet", b'\x84\x03{"cents":1,"currency":"EUR"}')
        assert codec.decode(topic, payload, stream="s", version=1) == PriceSet(1, "EUR")


def test_future_or_failing_schema_is_an_upcast_error() -> None:
    """A version newer than the code, or an upcaster that fails, names stream and version."""
    codec = Codec([shop])
    with pytest.raises(fes.errors.UpcastError, match=r"stored version 4.*stream 's' version 9"):
        codec.decode("shop.PriceSet", b'\x84\x04{"cents": 1}', stream="s", version=9)
    with pytest.raises(fes.errors.UpcastError, match="stream 's' version 9"):
        codec.decode("shop.PriceSet", b'{"cost": 5}', stream="s", version=9)


@pytest.mark.parametrize("options", [{}, {"compress": True}, {"cipher": Cipher({"a": KEY_A}, "a")}])
def test_schema_header_combines_with_compression_and_encryption(options: dict[str, Any]) -> None:
    """A schema-3 event round-trips whatever else the header says."""
    codec = Codec([shop], **options)
    event = PriceSet(7, "EUR " * 100)
    topic, payload = codec.encode(event, stream="s", version=2)
    assert payload[0] & 0x04 and codec.decode(topic, payload, stream="s", version=2) == event


def test_renamed_class_reads_its_old_topic() -> None:
    """An alias keeps old rows readable; new rows use the current topic."""
    codec = Codec([shop])
    assert {"shop.PriceSet", "shop.OldPriceSet"} == codec.topics
    old = codec.decode("shop.OldPriceSet", b'{"price": 2}', stream="s", version=1)
    assert old == PriceSet(200, "EUR")
    assert codec.topic_of(old) == "shop.PriceSet"


def test_a_topic_comes_with_the_topics_read_as_its_type() -> None:
    """Asking for a renamed class's events means its old topic too, whichever is named."""
    codec = Codec([shop, *EXAMPLES])
    assert codec.with_aliases(["shop.PriceSet"]) == ["shop.PriceSet", "shop.OldPriceSet"]
    assert codec.with_aliases(["shop.OldPriceSet"]) == ["shop.OldPriceSet", "shop.PriceSet"]
    assert codec.with_aliases(["dog.Registered", "nope"]) == ["dog.Registered", "nope"]
    assert codec.with_aliases(["dog.Registered", 5]) == ["dog.Registered", 5]  # type: ignore[list-item]


# --- topics --------------------------------------------------------------------------------


def test_topics_are_exactly_the_registered_ones() -> None:
    """The allow-list is the aggregates' topics plus extra types."""
    codec = Codec(EXAMPLES, extra_types={"extra.Point": Point})
    expected = set(dogs.dogs.topics()) | set(bank.accounts.topics()) | {"extra.Point"}
    assert codec.topics == expected
    assert _round_trip(codec, Point(1, 2)) == Point(1, 2)
    assert codec.topic_of(Point(1, 2)) == "extra.Point"




@pytest.mark.parametrize(
    "topic",
    [
        "os:system",
        "builtins:eval",
        "subprocess:Popen",
        "dog.Dog",
        "antigravity",
        "fes_canary",
        "fes_canary:x",
        "fes_canary.X",
        "fes_canary:X",
    ],
)
def test_unknown_and_hostile_topics_are_refused_without_imports(
    topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored topic that is not registered is refused, and nothing is imported or run.

    ``fes_canary`` is importable here, and would leave a mark if imported or called.
    """
    (tmp_path / "fes_canary.py").write_text(CANARY)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert importlib.util.find_spec("fes_canary") is not None
    before = set(sys.modules)
    with (
        pytest.raises(fes.errors.UnknownTopic, match="not registered") as caught,
        nothing_imported_or_run(monkeypatch) as calls,
    ):
        CODECS["plain"].decode(topic, b'{"args": ["echo hi"]}', stream="s", version=1)
    assert caught.value.topic == topic
    assert calls == []
    assert set(sys.modules) == before
    assert not (tmp_path / "fes_canary.imported").exists()
    assert not (tmp_path / "fes_canary.called").exists()


def test_the_import_guard_catches_imports_and_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard of the test above refuses and records an import, eval and os.system."""
    attempts: list[Callable[[], object]] = [
        lambda: __import__("os"),
        lambda: importlib.import_module("os"),
        lambda: eval("1"),
        lambda: os.system("true"),
    ]
    with nothing_imported_or_run(monkeypatch) as calls:
        for attempt in attempts:
            with pytest.raises(AssertionError, match="was called inside the guard"):
                attempt()
    assert calls == [
        "__import__('os')",
        "importlib.import_module('os')",
        "eval('1')",
        "os.system('true')",
    ]
    assert __import__("os") is os


def test_unregistered_type_is_refused_on_encode() -> None:
    """Encoding a value whose type no aggregate owns is a DefinitionError naming it."""
    with pytest.raises(fes.errors.DefinitionError, match="Dog is not an event type"):
        CODECS["plain"].encode(dogs.Dog("rex"), stream="s", version=1)
    with pytest.raises(fes.errors.DefinitionError, match="Dog"):
        CODECS["plain"].topic_of(dogs.Dog("rex"))


def test_two_types_claiming_one_topic_are_refused() -> None:
    """Two types under the same topic is a DefinitionError at construction."""
    with pytest.raises(fes.errors.DefinitionError, match=r"'shop\.OldPriceSet' is claimed by both"):
        Codec([], extra_types={"shop.OldPriceSet": Card, "p": PriceSet})
    with pytest.raises(fes.errors.DefinitionError, match=r"'dog\.Registered' is claimed by both"):
        Codec([dogs.dogs], extra_types={"dog.Registered": Card})


def test_one_type_under_two_topics_is_refused() -> None:
    """A type that would be written under two topics is a DefinitionError."""
    with pytest.raises(fes.errors.DefinitionError, match="two topics"):
        Codec([dogs.dogs], extra_types={"other": dogs.Registered})


class Opaque:
    """A class cattrs knows nothing about."""


@frozen
class HoldsOpaque:
    thing: Opaque


def test_unstorable_event_types_are_refused_when_the_codec_is_built() -> None:
    """A field type fes cannot store is a DefinitionError of the event type."""
    with pytest.raises(fes.errors.DefinitionError, match="HoldsOpaque"):
        Codec(EXAMPLES, extra_types={"h": HoldsOpaque})


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"compress": 12}, "compress"),
        ({"compress": "yes"}, "compress"),
        ({"max_payload": 0}, "max_payload"),
        ({"cipher": "secret"}, "cipher"),
    ],
)
def test_bad_codec_options_are_refused(kwargs: dict[str, Any], problem: str) -> None:
    """Bad settings are ConfigurationErrors when the codec is built."""
    with pytest.raises(fes.errors.ConfigurationError, match=problem):
        Codec(EXAMPLES, **kwargs)


# --- corrupt payloads ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("account.Deposited", b""),
        ("account.Deposited", b'{"amount": 1'),
        ("account.Deposited", b"{nope}"),
        ("account.Deposited", b'{"amount": "lots"}'),
        ("account.Deposited", b'{"amount": 1.5}'),
        ("account.Deposited", b'{"amount": 18446744073709551616}'),
        ("account.Deposited", b"{}"),
        ("account.Deposited", b"\x80[1]"),
        ("account.Deposited", b"\x90{}"),
        ("account.Deposited", b"\x88{}"),
        ("account.Deposited", b"\x84"),
        ("account.Deposited", b"\x81not zlib"),
        ("account.Deposited", b"\x81" + zlib.compress(b'{"amount": 1}')[:-3]),
        ("account.Deposited", b"\x81" + zlib.compress(b'{"amount": 1}') + b"more"),
        ("account.Deposited", b"\x82"),
        ("dog.Registered", b'{"name": 5}'),
        ("account.AccountOpened", b'{"owner": null}'),
        ("account.Deposited", b"\x82\x05ab"),
        ("kitchen.Everything", b'{"later": 1}'),
        ("kitchen.Point", b'{"x": 1, "y": true}'),
    ],
)
def test_corrupt_payloads_are_decode_errors(topic: str, payload: bytes) -> None:
    """Truncated, malformed or ill-typed payloads raise a DecodeError naming the row."""
    with pytest.raises(fes.errors.DecodeError, match=rf"'{topic}' at stream 's' version 3"):
        CODECS["plain"].decode(topic, payload, stream="s", version=3)


@codecs
@given(payload=st.binary(max_size=64), topic=st.sampled_from(sorted(CODECS["plain"].topics)))
def test_arbitrary_bytes_never_escape_as_bare_exceptions(
    codec: Codec, payload: bytes, topic: str
) -> None:
    """Whatever the stored bytes, decoding returns an event of the topic's type or a fes error."""
    try:
        event = codec.decode(topic, payload, stream="s", version=1)
    except fes.FesError:
        return
    assert type(event) is TOPIC_TYPES[topic]


@pytest.mark.parametrize(
    ("event", "problem"),
    [(bank.Deposited(2**64), "64-bit"), (dogs.Registered("\ud800"), "surrogates")],
)
def test_unencodable_values_are_refused_on_encode(event: Any, problem: str) -> None:
    """Values JSON cannot hold are refused when written, not corrupted silently."""
    with pytest.raises(fes.errors.StoreError, match=problem):
        CODECS["plain"].encode(event, stream="s", version=1)


def test_decode_stream_agrees_with_decode_row_by_row() -> None:
    """Decoding a stream at once gives what decoding row by row gives, errors included."""
    codec = Codec([dogs.dogs], compress=True)
    events = [dogs.Registered("Fido"), dogs.TrickAdded("sit"), dogs.TrickAdded("x" * 500)]
    rows = []
    for version, event in enumerate(events, start=1):
        topic, payload = codec.encode(event, stream="s", version=version)
        rows.append((version, topic, payload))
    assert codec.decode_stream("s", rows) == events
    assert rows[2][2][0] != ord("{")  # the compressed row took the general path

    broken = (4, "dog.TrickAdded", b'{"trick": 5}')
    with pytest.raises(fes.errors.DecodeError) as bulk:
        codec.decode_stream("s", [*rows, broken])
    with pytest.raises(fes.errors.DecodeError) as single:
        codec.decode(broken[1], broken[2], stream="s", version=4)
    assert str(bulk.value) == str(single.value)
    assert "'s'" in str(bulk.value) and "4" in str(bulk.value)
    with pytest.raises(fes.errors.UnknownTopic):
        codec.decode_stream("s", [(5, "os:system", b"{}")])


CODEC_MODULES = ["_frame", "_cipher", "_leaves", "_generate", "_large", "_hooks", "_codec"]


def test_the_codec_modules_depend_one_way() -> None:
    """Each private module of the codec imports only those before it in one order."""
    package = Path(fes.edge.codec.__file__).parent
    assert sorted(p.stem for p in package.glob("_*.py") if p.stem != "__init__") == sorted(
        CODEC_MODULES
    )
    for index, name in enumerate(CODEC_MODULES):
        tree = ast.parse((package / f"{name}.py").read_text())
        imported = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        }
        assert imported <= set(CODEC_MODULES[:index]), f"{name} imports {imported}"
