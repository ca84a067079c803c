"""What a stream id may be: one rule for every store, and for the core's specifications.

A stream id is a ``str`` of 1 to :data:`MAX_STREAM_ID` characters with no
NUL character (PostgreSQL's text cannot hold one) and no lone surrogate (it
has no UTF-8 form).  The stores refuse any other (so that an application
that runs on ``memory://`` does not fail on a database later), and a policy
specification refuses an intent that names one, before any store is near.
"""

from __future__ import annotations

__all__ = ["MAX_STREAM_ID", "STREAM_ID_RULE", "keepable_text", "stream_keepable"]

#: The longest stream id, in characters.  At four UTF-8 bytes a character at
#: most, a stream id fits in an entry of PostgreSQL's (stream, version) index.
MAX_STREAM_ID = 500

#: The rule, as error messages state it.
STREAM_ID_RULE = (
    f"a stream id must be a str of 1 to {MAX_STREAM_ID} characters with no NUL "
    "character or lone surrogate"
)


def stream_keepable(stream: object) -> bool:
    """Whether ``stream`` is a stream id every store keeps.

    Called for every stream id a command, batch or follower names: the
    common case, ASCII text, is decided here with no further call.
    """
    if stream.__class__ is str and 0 < len(stream) <= MAX_STREAM_ID and stream.isascii():
        return "\x00" not in stream
    return isinstance(stream, str) and 0 < len(stream) <= MAX_STREAM_ID and keepable_text(stream)


def keepable_text(text: str) -> bool:
    """Whether every store can keep ``text``: no NUL (PostgreSQL), a UTF-8 form."""
    if "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True
