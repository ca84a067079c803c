"""The codec: domain values to bytes and back, for one application.

A :class:`Codec` knows exactly the event types of the aggregates it is given
(plus ``extra_types``) and nothing else: a stored topic is looked up in that
allow-list and never imported, so a row naming ``os:system`` is refused with
:class:`fes.errors.UnknownTopic`.  Values are unstructured by one cattrs
``Converter`` per codec (with hooks for pyrsistent collections, datetimes,
UUIDs, decimals, enums, unions and nested attrs classes) and serialised by
orjson.  Structure and unstructure functions are generated once per type, so
encoding and decoding cost little more than orjson itself.

Payload format
--------------

A payload is one of:

``{…}``
    Format 0: a bare JSON object.  Used whenever nothing else is needed
    (schema version 1, not compressed, not encrypted), so most payloads are
    plain JSON that a database's JSON functions can read.

``flags [schema] [key] body``
    Format 1.  ``flags`` is one byte ``0b1000_0CES``: the high nibble ``8``
    names the format (another nibble is refused, so the format can evolve);
    bit ``S`` (0x01) says the value was zlib-compressed; ``E`` (0x02) that it
    is encrypted; ``C`` (0x04) that the event's schema version follows as an
    unsigned LEB128 varint (absent means version 1).  When encrypted, the key
    id follows as one length byte and ASCII, then a 12-byte nonce, then the
    AES-GCM ciphertext and tag.  ``body`` is the JSON, zlib-compressed when
    ``S`` is set; the order is encode → compress → encrypt.

Encryption binds the header and the row (application, kind, topic or
aggregate, stream and version) as associated data, so a ciphertext moved to
another row, also another application's, or a flipped flag, fails to
decrypt; a codec with a cipher reads only encrypted payloads, since anyone
could have written a plain one.  Compression is used only when it makes the
payload smaller, and inflating is bounded by ``max_payload``.

Values
------

Attrs classes are JSON objects keyed by attribute name; pyrsistent vectors,
sets, tuples and lists are arrays; maps are objects when their keys are
strings (or UUIDs, string enums, …) and ``[key, value]`` pairs otherwise.
Datetimes, dates and times are ISO 8601 (with their offset), UUIDs and
decimals strings, bytes base64, enums their values, non-finite floats
``"NaN"``/``"Infinity"``/``"-Infinity"``.  A union whose members JSON cannot
tell apart (two attrs classes, say) is written with a ``"$type"`` tag naming
the member class.  Integers must fit in 64 bits.  Reading is strict: a value
of the wrong JSON type is a :class:`fes.errors.DecodeError`, not a conversion.

Metadata is encoded separately, as a JSON object, or as nothing at all when
it is empty (the common case).

Keys from the environment
-------------------------

:meth:`Cipher.from_env` reads ``FES_CIPHER_KEYS``, a comma-separated list of
``id:base64key`` (keys of 16, 24 or 32 bytes; ids of letters, digits, ``.``,
``_`` and ``-``), and ``FES_CIPHER_KEY_ID``, the id to encrypt with (optional
when there is one key).  To rotate, add a new key, point
``FES_CIPHER_KEY_ID`` at it and keep the old keys listed: rows written under
them still decrypt.  Make a key with::

    python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"
"""

from __future__ import annotations

from ._cipher import Cipher
from ._codec import Codec

__all__ = ["Cipher", "Codec"]
