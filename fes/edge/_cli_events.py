"""How the ``fes`` command shows stored events: JSON records and table cells."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, TextIO

import orjson

from fes.errors import DecodeError, UpcastError
from fes.events import Recorded, micros_datetime
from fes.system import System

from ._application import Application
from .codec._frame import (
    _COMPRESSED,
    _ENCRYPTED,
    _FORMAT_1,
    _FORMAT_MASK,
    _encrypted,
    _header,
    _inflate,
)
from .stores._base import Database, StoredEvent

__all__ = ["data_cell", "fit", "reader", "text_cell", "when"]

# the most a row's payload is inflated to for showing it
_SHOW_LIMIT = 64 * 1024 * 1024


def raw_data(payload: bytes) -> Any:
    """A stored payload as JSON data, inflated if it is only compressed; None if encrypted."""
    body = payload
    if payload[:1] != b"{":
        if not payload or payload[0] & _FORMAT_MASK != _FORMAT_1 or payload[0] & _ENCRYPTED:
            return None
        try:
            _, _, offset = _header(payload)
            body = payload[offset:]
            if payload[0] & _COMPRESSED:
                body = _inflate(body, _SHOW_LIMIT)
        except (ValueError, IndexError):
            return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def schema_of(payload: bytes) -> int | None:
    """The schema version a stored payload names (1 when it names none); None if unreadable."""
    if payload[:1] == b"{":
        return 1
    if not payload or payload[0] & _FORMAT_MASK != _FORMAT_1:
        return None
    try:
        return _header(payload)[0]
    except (ValueError, IndexError):
        return None


def when(micros: int, timespec: str = "milliseconds") -> str:
    """A stored timestamp (microseconds since the epoch) in ISO 8601, UTC.

    To the millisecond for a table; a JSON record, which a program may read
    back, gives every microsecond stored (``timespec="microseconds"``).
    """
    moment = micros_datetime(micros)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", '"': '\\"', "\\": "\\\\"}


def text_cell(text: str) -> str:
    """A stream id or topic for a table: as it is, or quoted with what cannot be seen escaped.

    A newline would split a row and a tab shift its columns; a space at an
    end, or a character that prints as nothing, would make two ids look
    alike.  Such a text shows in double quotes, with `\\n`, `\\t`, `\\r`, `\\"`,
    `\\\\` and `\\u` escapes.
    """
    if text.isprintable() and text.strip() == text:
        return text
    escaped = [
        ch if ch.isprintable() and ch not in '"\\' else _ESCAPES.get(ch)
        or (f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}")
        for ch in text
    ]
    return '"' + "".join(escaped) + '"'


def data_cell(record: Mapping[str, Any]) -> str:
    """A record's data as compact JSON for a table, or why it cannot be shown.

    Data stored under a schema version other than 1, shown as stored
    (without ``--system``, which upcasts it), says its version first.
    """
    if "error" in record:
        return f"(cannot decode: {record['error']})"
    if record.get("data") is None and "encoded_bytes" in record:
        if record.get("encrypted", True):
            return f"({record['encoded_bytes']} encrypted bytes: pass --system to decode)"
        return f"({record['encoded_bytes']} bytes, not JSON fes can show: pass --system)"
    data = orjson.dumps(record.get("data")).decode()
    schema = record.get("schema", 1)
    return data if schema == 1 else f"(schema {schema}) {data}"


def fit(
    headers: Sequence[str],
    rows: list[list[Any]],
    cell: Callable[[Any], str],
    *,
    middle: Sequence[int] = (),
    left: Sequence[int] = (),
) -> list[list[Any]]:
    """Rows cut so that each line fits the terminal's width.

    The last cell (the data) is cut at its end, keeping 20 characters at
    least.  When the other columns alone are too wide (long stream ids on a
    narrow terminal), the columns numbered in ``middle`` are cut in their
    middle first, down to 9 characters, so that an id keeps its start and
    its end; then those in ``left`` lose their start, down to 14 (a time
    keeps its clock and loses its date).
    """
    columns = shutil.get_terminal_size((120, 24)).columns
    count = len(headers) - 1
    texts = [[cell(row[i]) for i in range(count)] for row in rows]
    widths = [max(len(t) for t in [str(headers[i]), *(r[i] for r in texts)])
              for i in range(count)]

    def over() -> bool:  # two spaces of margin and two between columns
        return 2 + sum(w + 2 for w in widths) + 20 > columns

    for group, floor in ((middle, 9), (left, 14)):
        while over():
            widest = max(group, key=lambda i: widths[i], default=None)
            if widest is None or widths[widest] <= max(floor, len(str(headers[widest]))):
                break
            widths[widest] -= 1
    for row, text in zip(rows, texts, strict=True):
        for i in middle:
            if len(text[i]) > widths[i]:
                keep = widths[i] - 1
                row[i] = text[i][: (keep + 1) // 2] + "…" + text[i][len(text[i]) - keep // 2:]
        for i in left:
            if len(text[i]) > widths[i]:
                row[i] = "…" + text[i][len(text[i]) - widths[i] + 1:]
    room = max(columns - 2 - sum(w + 2 for w in widths), 20)
    for row in rows:
        data = str(row[-1])
        if len(data) > room:
            row[-1] = data[: room - 1] + "…"
    return rows


@contextmanager
def reader(
    database: Database, name: str, system: System | None
) -> Iterator[Callable[[StoredEvent], dict[str, Any]]]:
    """A function turning one stored row of ``name`` into a JSON-ready record.

    With a system, events are decoded by the application's codec (upcast,
    decrypted with the keys of the environment); without, a payload in plain
    or compressed JSON is shown as it is stored, and an encrypted one only by
    its size.
    """
    application: Application | None = None
    if system is not None:
        application = Application(system.app(name), store=database)

    def describe(row: StoredEvent) -> dict[str, Any]:
        record: dict[str, Any] = {
            "app": name,
            "position": row.position,
            "stream": row.stream,
            "version": row.version,
            "topic": row.topic,
            "timestamp": when(row.timestamp, "microseconds"),
        }
        if application is not None:
            try:
                recorded: Recorded[Any] = application.recorded(row)
            except (DecodeError, UpcastError) as error:
                # shown in its place, and said after: the rows around it still show
                record["error"] = f"{type(error).__name__}: {error}"
                record["data"] = None
                return record
            record["data"] = application.codec._event_data(recorded.event)
            meta = recorded.metadata
            record["correlation_id"] = meta.correlation_id
            record["causation_id"] = meta.causation_id
        else:
            data = raw_data(row.payload)
            record["data"] = data
            if data is None:
                record["encoded_bytes"] = len(row.payload)
                record["encrypted"] = _encrypted(row.payload)
            else:
                record["schema"] = schema_of(row.payload)
            if row.meta:
                with suppress(orjson.JSONDecodeError):
                    record.update(
                        {k: v for k, v in orjson.loads(row.meta).items() if k != "headers"}
                    )
        return record

    yield describe


#: Exit codes: 0 done, 1 a fes error, 2 bad usage (argparse), 3 a follower stopped,
#: 4 one stalled (``fes apps --watch``: behind, and its position did not move).
EXIT_ERROR = 1
EXIT_STOPPED = 3
EXIT_STALLED = 4


def undecoded(name: str, records: Sequence[Mapping[str, Any]], err: TextIO) -> bool:
    """Say on ``err`` how many of ``records`` could not be decoded, and the first's error.

    Returns whether any could not (the command then exits with EXIT_ERROR).
    """
    failed = [record for record in records if "error" in record]
    if failed:
        first = failed[0]
        print(
            f"fes: error: {len(failed)} event(s) of {name!r} could not be decoded; the "
            f"first, at position {first['position']}: {first['error']}",
            file=err,
        )
    return bool(failed)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO) -> None:
    """Print rows under headers, numbers right-aligned, columns two spaces apart."""
    cells = [[str(h) for h in headers], *[[cell(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    # a column of numbers stays right-aligned where a cell is "-" or "?" (none, unknown)
    numeric = [
        all(isinstance(row[i], int) or row[i] in ("-", "?") for row in rows)
        and any(isinstance(row[i], int) for row in rows)
        for i in range(len(headers))
    ]
    for index, row in enumerate(cells):
        parts = [
            c.rjust(w) if numeric[i] else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  " + "  ".join(parts).rstrip(), file=out)
        if index == 0:
            print("  " + "  ".join("-" * w for w in widths), file=out)


def cell(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
