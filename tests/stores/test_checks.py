"""The stream id check every store applies, against its definition written out."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fes.edge.stores import check_stream
from fes.edge.stores._checks import MAX_STREAM_ID, stream_keepable
from fes.errors import StoreError


def _keepable(stream: Any) -> bool:
    """A str of 1 to MAX_STREAM_ID characters, with no NUL and a UTF-8 form."""
    if not isinstance(stream, str) or not 0 < len(stream) <= MAX_STREAM_ID:
        return False
    try:
        stream.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in stream


class Text(str):
    """A str subclass: kept as its text is."""


_IDS = (
    st.text(max_size=12)  # any code point
    | st.text(st.sampled_from("ab\x00é\ud800"), max_size=6)  # NUL and lone surrogates, often
    | st.text(
        st.sampled_from("ab\x00é\ud800"), min_size=MAX_STREAM_ID - 2, max_size=MAX_STREAM_ID + 2
    )
    | st.text(max_size=12).map(Text)
    | st.none() | st.integers() | st.binary(max_size=4)
)


@given(_IDS)
@example("a")
@example("\x00")
@example("a\x00b")
@example("é")
@example("a\ud800")
@example("")
@example("x" * MAX_STREAM_ID)
@example("x" * (MAX_STREAM_ID + 1))
@example(Text("a\x00"))
@example(None)
def test_a_stream_id_is_kept_exactly_when_its_definition_says(stream: Any) -> None:
    assert stream_keepable(stream) is _keepable(stream)
    if _keepable(stream):
        check_stream(stream)
    else:
        with pytest.raises(StoreError, match="a stream id must be a str of 1 to"):
            check_stream(stream)
