"""The payload header: format bits, the schema varint, and bounded inflating."""

from __future__ import annotations

import zlib

_FORMAT_MASK = 0xF8  # the high nibble and the reserved bit 0x08
_FORMAT_1 = 0x80
_COMPRESSED = 0x01
_ENCRYPTED = 0x02
_SCHEMA = 0x04
_BARE = 0x7B  # "{": a format-0 payload is a bare JSON object
_NONCE = 12
_MIN_COMPRESS = 96  # below this zlib's own overhead makes a win unlikely


def _encrypted(payload: bytes) -> bool:
    """Whether a stored payload is encrypted: a format-1 payload with its encrypted bit."""
    return bool(payload) and payload[0] & _FORMAT_MASK == _FORMAT_1 and bool(
        payload[0] & _ENCRYPTED
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 28:
            raise ValueError("schema version varint is too long")


def _inflate(data: bytes, limit: int) -> bytes:
    """Decompress at most ``limit`` bytes: a small payload may not become a huge one."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, limit)
    if inflater.unconsumed_tail or (not inflater.eof and len(out) >= limit):
        raise ValueError(f"it decompresses to more than max_payload={limit} bytes")
    if not inflater.eof:
        raise ValueError("the compressed data is truncated")
    if inflater.unused_data:
        raise ValueError("there are bytes after the compressed data")
    return out


def _header(payload: bytes) -> tuple[int, bytes | None, int]:
    """A format-1 payload's schema version, key id (None: not encrypted) and body offset."""
    flags = payload[0]
    schema, pos = _read_varint(payload, 1) if flags & _SCHEMA else (1, 1)
    if not flags & _ENCRYPTED:
        return schema, None, pos
    size = payload[pos]
    return schema, bytes(payload[pos + 1 : pos + 1 + size]), pos + 1 + size
