"""The codec itself: an application's topics, and the payloads of its rows."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import orjson
from pyrsistent import pmap

from fes._shapes import state_type
from fes.aggregates import Aggregate
from fes.errors import (
    CipherError,
    ConfigurationError,
    DecodeError,
    DefinitionError,
    EncodeError,
    FesError,
    UnknownTopic,
    UpcastError,
)
from fes.events import NO_METADATA, Metadata, new_metadata, spec_of, upcast

from ._cipher import Cipher
from ._frame import (
    _BARE,
    _COMPRESSED,
    _ENCRYPTED,
    _FORMAT_1,
    _FORMAT_MASK,
    _MIN_COMPRESS,
    _SCHEMA,
    _encrypted,
    _header,
    _inflate,
    _varint,
)
from ._hooks import _Hooks
from ._large import Write, dumps, writer
from ._leaves import StructureHook, UnstructureHook, _bad, _shorten

__all__ = ["Codec"]

_dumps = orjson.dumps
_loads = orjson.loads
#: The headers of stored metadata that has none: those of NO_METADATA, shared.
_NO_HEADERS = NO_METADATA.headers


_ID_CLASSES = (str, type(None))


def _check_metadata(metadata: object, stream: str, version: int) -> None:
    """Refuse metadata that would not read back as it was given."""
    if (
        metadata.__class__ is Metadata
        and metadata.correlation_id.__class__ in _ID_CLASSES
        and metadata.causation_id.__class__ in _ID_CLASSES
        and not metadata.headers
    ):
        return  # what fes makes itself, nearly always: checked without a loop
    problem = None
    if not isinstance(metadata, Metadata):
        problem = "it is not a fes.Metadata"
    elif not isinstance(metadata.correlation_id, (str, type(None))):
        problem = "its correlation_id is not a str"
    elif not isinstance(metadata.causation_id, (str, type(None))):
        problem = "its causation_id is not a str"
    elif not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.headers.items()):
        problem = "its headers are not all str: str"
    if problem is not None:
        raise EncodeError(
            f"cannot store metadata {metadata!r} for stream {stream!r} version {version}: "
            f"{problem}; nothing was stored"
        )


class Codec:
    """Encodes and decodes one application's events, snapshot states and metadata.

    ``aggregates`` (and ``extra_types``, topic to type) are the only types it
    reads and writes.  ``compress`` turns on zlib (``True`` or a level 1-9);
    ``cipher`` turns on AES-GCM; ``max_payload`` bounds how large a
    compressed payload may inflate; ``app``, the application's name, is
    bound into every ciphertext with its row, so that a ciphertext copied
    into another application's tables fails to decrypt.
    """

    def __init__(
        self,
        aggregates: Iterable[Aggregate[Any]],
        *,
        extra_types: Mapping[str, type] = {},  # never mutated
        compress: bool | int = False,
        cipher: Cipher | None = None,
        max_payload: int = 16 * 1024 * 1024,
        app: str = "",
    ) -> None:
        if not isinstance(app, str):
            raise ConfigurationError(f"app must be an application's name, not {app!r}")
        if compress is True:
            level: int | None = zlib.Z_DEFAULT_COMPRESSION
        elif compress is False or compress == 0:
            level = None
        elif isinstance(compress, int) and 1 <= compress <= 9:
            level = compress
        else:
            raise ConfigurationError(
                f"compress must be a bool or a zlib level 1-9, got {compress!r}"
            )
        if not isinstance(max_payload, int) or max_payload < 1:
            raise ConfigurationError(f"max_payload must be a positive int, got {max_payload!r}")
        if cipher is not None and not isinstance(cipher, Cipher):
            raise ConfigurationError(f"cipher must be a fes Cipher, got {type(cipher).__name__}")
        self._level = level
        self._cipher = cipher
        self._app = app
        self._max = max_payload
        self._plain = level is None and cipher is None
        # with a cipher, only authenticated payloads are read: a row written by
        # someone without the key is refused rather than trusted
        self._plain_reads = cipher is None
        self._hooks = _Hooks()
        self._states: dict[str, tuple[Aggregate[Any], UnstructureHook, StructureHook, Any]] = {}
        self._state_writers: dict[str, Write | None] = {}

        read: dict[str, type] = {}
        write: dict[type, str] = {}

        def claim(topic: str, kind: type) -> None:
            other = read.setdefault(topic, kind)
            if other is not kind:
                raise DefinitionError(
                    f"topic {topic!r} is claimed by both {other.__qualname__} and "
                    f"{kind.__qualname__}; give one of them another topic with fes.event()"
                )

        def writes(kind: type, topic: str) -> None:
            other = write.setdefault(kind, topic)
            if other != topic:
                raise DefinitionError(
                    f"{kind.__qualname__} would be written under two topics, {other!r} and "
                    f"{topic!r}; give it one stable topic with fes.event(topic=...)"
                )

        for aggregate in aggregates:
            for topic, kind in aggregate.topics().items():
                claim(topic, kind)
            for kind in aggregate.events:
                writes(kind, aggregate.topic_of(kind))
        for topic, kind in extra_types.items():
            if not isinstance(kind, type):
                raise DefinitionError(f"extra type for topic {topic!r} is not a class: {kind!r}")
            claim(topic, kind)
            for alias in spec_of(kind).aliases:
                claim(alias, kind)
            writes(kind, topic)

        hooks: dict[type, tuple[StructureHook, UnstructureHook]] = {}
        for kind in write:
            try:
                hooks[kind] = (self._hooks.structure(kind), self._hooks.unstructure(kind))
            except FesError:
                raise
            except Exception as exc:
                raise DefinitionError(
                    f"fes cannot store events of type {kind.__qualname__}: {_shorten(exc)}"
                ) from exc
        # per topic: type, hook, schema version, and the first byte of a payload
        # that needs nothing but JSON decoding (-1: none can)
        self._readers: dict[str, tuple[type, StructureHook, int, int]] = {}
        for topic, kind in read.items():
            current = spec_of(kind).version
            bare = _BARE if current == 1 and self._plain_reads else -1
            self._readers[topic] = (kind, hooks[kind][0], current, bare)
        # per type: topic, hook, schema version, and the function that writes an
        # instance's JSON when orjson.dumps of the hook's value will not do (a
        # type with string fields: a long string is written in slices)
        self._writers: dict[type, tuple[str, UnstructureHook, int, Write | None]] = {
            kind: (
                topic, hooks[kind][1], spec_of(kind).version,
                writer(kind, self._hooks, hooks[kind][1]),
            )
            for kind, topic in write.items()
        }
        self.topics: frozenset[str] = frozenset(read)

    def __repr__(self) -> str:
        return (
            f"Codec(topics={len(self.topics)}, compress={self._level is not None}, "
            f"cipher={self._cipher!r})"
        )

    @property
    def cipher(self) -> Cipher | None:
        """The cipher this codec encrypts with, or None."""
        return self._cipher

    def with_aliases(self, topics: Iterable[str]) -> list[str]:
        """``topics`` and every other topic read as the same type as one of them.

        A renamed class's events stay stored under its old topic, an alias of
        the new one: asking for the new topic's events means asking for both.
        """
        wanted = list(topics)
        if not all(isinstance(t, str) for t in wanted):
            return wanted  # for the store to refuse
        wanted = list(dict.fromkeys(wanted))
        kinds = {self._readers[t][0] for t in wanted if t in self._readers}
        wanted.extend(t for t, r in self._readers.items() if r[0] in kinds and t not in wanted)
        return wanted

    def topic_of(self, event: object) -> str:
        """The topic an event is written under."""
        writer = self._writers.get(event.__class__)
        if writer is None:
            raise self._unregistered(event)
        return writer[0]

    def _bare_writer(self, kind: type) -> tuple[str, Callable[[Any], bytes]] | None:
        """The topic of ``kind`` and a function giving the JSON :meth:`encode` stores as it is.

        For the edge's command plans: when the function's JSON starts with
        ``{``, it is the payload :meth:`encode` returns for an event of
        exactly ``kind``, at any stream and version.  None when no payload
        of ``kind`` is stored bare (this codec compresses or encrypts, or the
        type is past schema version 1) or the codec does not write ``kind``.
        Any failure of the function is for :meth:`encode` to report.
        """
        found = self._writers.get(kind)
        if found is None or not self._plain or found[2] != 1:
            return None
        topic, unstructure, _, write = found
        if write is None:
            def write(event: Any) -> bytes:
                return _dumps(unstructure(event))
        return topic, write

    def _unregistered(self, event: object) -> DefinitionError:
        return DefinitionError(
            f"{type(event).__qualname__} is not an event type of this application; "
            "list it in an aggregate's events (or the codec's extra_types)"
        )

    # events

    def encode(self, event: object, *, stream: str, version: int) -> tuple[str, bytes]:
        """The topic and payload of an event about to be stored at ``stream@version``."""
        try:
            topic, unstructure, schema, write = self._writers[event.__class__]
        except KeyError:
            raise self._unregistered(event) from None
        try:
            body = _dumps(unstructure(event)) if write is None else write(event)
        except Exception as exc:
            raise EncodeError(
                f"cannot encode {topic!r} for stream {stream!r} version {version}: "
                f"{self._hooks.field_error(event) or _shorten(exc)}; nothing was stored"
            ) from exc
        if self._plain and schema == 1 and body[0] == _BARE:
            return topic, body
        return topic, self._seal(body, schema, "event", topic, stream, version)

    def _event_data(self, event: object) -> Any:
        """An event as the JSON data its payload holds, before any compression or encryption.

        What ``fes log`` and ``fes stream`` show of a decoded event: bytes in
        base64, decimals and dates as text, as stored.
        """
        try:
            _, unstructure, _, write = self._writers[event.__class__]
        except KeyError:
            raise self._unregistered(event) from None
        return orjson.loads(_dumps(unstructure(event)) if write is None else write(event))

    def decode(self, topic: str, payload: bytes, *, stream: str, version: int) -> object:
        """The event stored at ``stream@version`` under ``topic``."""
        try:
            kind, structure, current, bare = self._readers[topic]
        except KeyError:
            raise UnknownTopic(topic, self.topics) from None
        try:
            if payload[0] == bare:  # a bare JSON object of the current schema
                return structure(_loads(payload), kind)
            if payload[0] == _BARE and self._plain_reads:
                data = upcast(kind, _loads(payload), 1)
            else:
                schema, body = self._open(payload, "event", topic, stream, version)
                data = _loads(body)
                if schema != current:
                    data = upcast(kind, data, schema)
            return structure(data, kind)
        except UpcastError as exc:
            raise UpcastError(
                f"{exc} (topic {topic!r}, stream {stream!r} version {version})"
            ) from exc
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(
                f"cannot decode {_row('event', topic, stream, version)}: {_problem(payload, exc)}"
            ) from exc

    def decode_stream(
        self, stream: str, rows: Iterable[tuple[int, str, bytes]]
    ) -> list[object]:
        """The events of a stream's ``(version, topic, payload)`` rows, in order.

        :meth:`decode` for many rows.  Loading a stream decodes every row, so
        the common case (a bare JSON object of the current schema) runs inline
        here; any other row, and any failure, goes through :meth:`decode` for
        its checks and errors.
        """
        readers = self._readers
        loads = _loads
        events: list[object] = []
        append = events.append
        for version, topic, payload in rows:
            reader = readers.get(topic)
            if reader is not None and payload and payload[0] == reader[3]:
                try:
                    append(reader[1](loads(payload), reader[0]))
                    continue
                except Exception:  # decode() below reports it properly
                    pass
            append(self.decode(topic, payload, stream=stream, version=version))
        return events

    # snapshot states

    def _state_hooks(self, aggregate: Aggregate[Any]) -> tuple[UnstructureHook, StructureHook, Any]:
        known = self._states.get(aggregate.name)
        if known is not None and known[0] is aggregate:
            return known[1], known[2], known[3]
        kind = state_type(aggregate)
        try:
            unstructure = self._hooks.unstructure(kind)
            structure = self._hooks.structure(kind)
        except FesError:
            raise
        except Exception as exc:
            raise DefinitionError(
                f"fes cannot store states of aggregate {aggregate.name!r} ({kind!r}): "
                f"{_shorten(exc)}"
            ) from exc
        self._states[aggregate.name] = (aggregate, unstructure, structure, kind)
        self._state_writers[aggregate.name] = writer(kind, self._hooks, unstructure)
        return unstructure, structure, kind

    def encode_state(
        self, aggregate: Aggregate[Any], state: Any, *, stream: str, version: int
    ) -> bytes:
        """The payload of a snapshot of ``stream`` at ``version``."""
        unstructure = self._state_hooks(aggregate)[0]
        write = self._state_writers[aggregate.name]
        try:
            body = _dumps(unstructure(state)) if write is None else write(state)
        except Exception as exc:
            raise EncodeError(
                f"cannot encode the state of {aggregate.name!r} for stream {stream!r} "
                f"version {version}: {_shorten(exc)}"
            ) from exc
        return self._seal(body, 1, "state", aggregate.name, stream, version)

    def decode_state(
        self, aggregate: Aggregate[Any], payload: bytes, *, stream: str, version: int
    ) -> Any:
        """The state in a snapshot payload of ``stream`` at ``version``."""
        _, structure, kind = self._state_hooks(aggregate)
        try:
            if payload[0] == _BARE and self._plain_reads:
                body = payload
            else:
                _, body = self._open(payload, "state", aggregate.name, stream, version)
            return structure(_loads(body), kind)
        except DecodeError:
            raise
        except Exception as exc:
            where = _row("state", aggregate.name, stream, version)
            raise DecodeError(f"cannot decode {where}: {_problem(payload, exc)}") from exc

    # metadata

    def encode_meta(
        self, metadata: Metadata, *, topic: str, stream: str, version: int
    ) -> bytes | None:
        """The stored form of the metadata of the event at ``stream@version``.

        None when the metadata is empty.  Otherwise JSON, sealed like the
        event's payload: with a cipher it is encrypted and bound to the
        event's topic, stream and version; with compression a large one is
        compressed.
        """
        if metadata is NO_METADATA:
            return None
        _check_metadata(metadata, stream, version)
        data: dict[str, Any] = {}
        if metadata.correlation_id is not None:
            data["correlation_id"] = metadata.correlation_id
        if metadata.causation_id is not None:
            data["causation_id"] = metadata.causation_id
        if metadata.headers:
            data["headers"] = dict(metadata.headers)
        if not data:
            return None
        try:
            # headers are given by users (and tracing): only they may be long
            body = _dumps(data) if not metadata.headers else dumps(data)
        except Exception as exc:
            raise EncodeError(f"cannot encode metadata: {_shorten(exc)}") from exc
        if self._plain:
            return body
        return self._seal(body, 1, "meta", topic, stream, version)

    def _plain_causes(self, correlation_id: str, causation_id: str) -> bytes | None:
        """:meth:`encode_meta` of ``Metadata(correlation_id, causation_id)`` at any row.

        A codec that neither compresses nor encrypts stores such metadata the
        same way at every row: a follower encodes it once per upstream event.
        None when this codec seals metadata with its row (then
        :meth:`encode_meta` is called for each).
        """
        if not self._plain:
            return None
        return _dumps({"correlation_id": correlation_id, "causation_id": causation_id})

    def decode_meta(
        self, data: bytes | None, *, topic: str, stream: str, version: int
    ) -> Metadata:
        """The metadata stored as ``data`` (None or empty for none) with ``stream@version``."""
        if not data:
            return NO_METADATA
        try:
            if data[0] == _BARE and self._plain_reads:
                body = data
            else:
                _, body = self._open(data, "meta", topic, stream, version)
            value = _loads(body)
            if value.__class__ is not dict:
                _bad(value, dict)
            correlation = value.get("correlation_id")
            causation = value.get("causation_id")
            headers = value.get("headers", {})
            for item in (correlation, causation):
                if item is not None and item.__class__ is not str:
                    _bad(item, str)
            if headers.__class__ is not dict or not all(
                k.__class__ is str and v.__class__ is str for k, v in headers.items()
            ):
                _bad(headers, "a mapping of str to str")
            # checked above: Metadata(...)'s converter has nothing left to do
            return new_metadata(
                correlation, causation, pmap(headers) if headers else _NO_HEADERS
            )
        except CipherError:
            raise
        except Exception as exc:
            raise DecodeError(
                f"cannot decode the metadata of {_row('event', topic, stream, version)}: "
                f"{_shorten(exc)}"
            ) from exc

    # resealing

    def reseal(
        self,
        data: bytes,
        *,
        kind: Literal["event", "meta", "state"],
        name: str,
        stream: str,
        version: int,
        plain: bool = False,
    ) -> bytes | None:
        """``data`` encrypted anew under the cipher's current key, or None if it already is.

        ``data`` is a stored payload: an event's (``kind="event"``, ``name``
        its topic), an event's metadata (``"meta"``, ``name`` the event's
        topic) or a snapshot's (``"state"``, ``name`` the aggregate's name).
        It is decrypted under whichever key of the ring it names and sealed
        again, its JSON, schema version and compression unchanged (a
        compressed row stays compressed, at this codec's level or zlib's
        default, and a row stored uncompressed stays so), so nothing is
        decoded into values.  An unencrypted payload is refused with
        :class:`fes.errors.CipherError` unless ``plain`` is true: encrypting a store
        that was written in the clear vouches for every plain row in it.
        """
        cipher = self._cipher
        if cipher is None:
            raise DefinitionError(
                "resealing needs a codec with a cipher: it encrypts under the current key"
            )
        if self._sealed_under(data, cipher._current_id):
            return None
        try:
            if data[0] == _BARE:
                if not plain:
                    raise CipherError(
                        f"cannot reseal {_row(kind, name, stream, version)}: it is not "
                        "encrypted, and plain rows are encrypted only when asked "
                        "(plain=True; fes reseal --plain)"
                    )
                schema, body = 1, data
            else:
                schema, body = self._open(data, kind, name, stream, version, plain_ok=plain)
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(
                f"cannot reseal {_row(kind, name, stream, version)}: {_problem(data, exc)}"
            ) from exc
        # as stored: a key's rotation must not inflate a compressed store (by
        # a codec without compress) nor compress what was written plain
        if data[0] != _BARE and data[0] & _COMPRESSED:
            level: int | None = zlib.Z_DEFAULT_COMPRESSION if self._level is None else self._level
        else:
            level = None
        return self._seal(body, schema, kind, name, stream, version, level=level)

    def opens(self, topic: str, payload: bytes, *, stream: str, version: int) -> bool | None:
        """Whether the current key opens an event's stored ``payload``.

        None when that cannot tell: no cipher, a payload not sealed under
        the current key id, or one too damaged to try.  False when the key
        fails to authenticate it: the key is not the one that sealed it, or
        the row was altered.  A writer asks before its first append (see
        :class:`~fes.edge.Application`), so that a wrong key under a known
        id stores nothing that the right key could not read.
        """
        cipher = self._cipher
        if cipher is None or not self._sealed_under(payload, cipher._current_id):
            return None
        try:
            self._open(payload, "event", topic, stream, version)
        except CipherError:
            return False
        except Exception:  # a damaged header, or a body that does not inflate
            return None
        return True

    @staticmethod
    def _sealed_under(data: bytes, key_id: bytes) -> bool:
        """Whether ``data`` is a format-1 payload encrypted under ``key_id``."""
        if not _encrypted(data):
            return False
        try:
            return _header(data)[1] == key_id
        except (IndexError, ValueError):
            return False

    # the header

    def _seal(
        self, body: bytes, schema: int, kind: str, name: str, stream: str, version: int,
        *, level: int | Literal["codec's"] | None = "codec's",
    ) -> bytes:
        """The payload of JSON ``body``: compressed at ``level`` (this codec's by default;
        None: not) where that makes it smaller, then encrypted if the codec has a cipher."""
        if level == "codec's":
            level = self._level
        flags = _FORMAT_1
        header = b""
        if schema != 1:
            flags |= _SCHEMA
            header = _varint(schema)
        if level is not None and _MIN_COMPRESS <= len(body) <= self._max:
            packed = zlib.compress(body, level)
            if len(packed) + 1 < len(body):  # the flag may cost a byte: a bare body has none
                body = packed
                flags |= _COMPRESSED
        cipher = self._cipher
        if cipher is None:
            if flags == _FORMAT_1 and body[0] == _BARE:
                return body
            return bytes((flags,)) + header + body
        key_id = cipher._current_id
        header = bytes((flags | _ENCRYPTED,)) + header + bytes((len(key_id),)) + key_id
        associated = header + _dumps([self._app, kind, name, stream, version])
        return header + cipher.encrypt(body, associated)

    def _open(
        self,
        payload: bytes,
        kind: str,
        name: str,
        stream: str,
        version: int,
        *,
        plain_ok: bool = False,
    ) -> tuple[int, bytes]:
        """The schema version and JSON body of a format-1 payload."""
        if self._cipher is not None and not plain_ok and not _encrypted(payload):
            raise CipherError(
                f"cannot decrypt {_row(kind, name, stream, version)}: it is not encrypted, "
                "and a codec with a cipher reads only authenticated payloads (stored before "
                f"{self._app!r} had a cipher? `fes reseal SYSTEM --app {self._app} --plain`, "
                "or fes.edge.reseal(application, plain=True), encrypts such rows)"
            )
        flags = payload[0]
        if flags & _FORMAT_MASK != _FORMAT_1:
            raise ValueError(f"unknown payload format byte 0x{flags:02x}")
        schema, key, pos = _header(payload)
        if key is not None:
            key_id = key.decode("ascii")
            if self._cipher is None:
                raise CipherError(
                    f"cannot decrypt {_row(kind, name, stream, version)}: it is encrypted, "
                    "but this codec has no cipher: give the application its keys "
                    "(FES_CIPHER_KEYS, or the application's <APP>_FES_CIPHER_KEYS)"
                )
            associated = bytes(payload[:pos]) + _dumps([self._app, kind, name, stream, version])
            try:
                body = self._cipher.decrypt(key_id, payload[pos:], associated)
            except CipherError as exc:
                raise CipherError(
                    f"cannot decrypt {_row(kind, name, stream, version)}: {exc}"
                ) from None
        else:
            body = payload[pos:]
        if flags & _COMPRESSED:
            body = _inflate(body, self._max)
        return schema, body


def _row(kind: str, name: str, stream: str, version: int) -> str:
    what = {"state": f"the snapshot of {name!r}", "meta": f"the metadata of {name!r}"}.get(
        kind, f"{name!r}"
    )
    return f"{what} at stream {stream!r} version {version}"


def _problem(payload: bytes, exc: BaseException) -> str:
    if not payload:
        return "the payload is empty"
    if isinstance(exc, IndexError):
        return "the payload is truncated"
    return _shorten(exc)
