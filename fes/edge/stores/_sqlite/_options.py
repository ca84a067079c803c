"""The options of an ``sqlite:///path`` URL, and the file it names."""

from __future__ import annotations

from urllib.parse import unquote

from fes.edge.stores._urls import (
    StoreURL,
    option_bool,
    option_choice,
    option_float,
    option_int,
)

__all__ = ["OPTIONS", "SYNCHRONOUS", "file_path"]

#: The values of the ``synchronous`` option, as SQLite's pragma takes them.
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: How each URL option is read.
OPTIONS = {
    "busy_timeout": option_int(0),
    "create": option_bool,
    "poll_interval": option_float(0.0),
    "synchronous": option_choice(*SYNCHRONOUS),
}


def file_path(url: StoreURL) -> str:
    """The path of the file an ``sqlite:///path`` URL names; refuse a URL that names none."""
    if url.rest in ("", "/"):
        raise url.error("it names no file: write sqlite:///path/to/file.db")
    if not url.rest.startswith("/"):
        raise url.error(
            "an SQLite URL has no host: write sqlite:///relative/path.db "
            "or sqlite:////absolute/path.db"
        )
    path = unquote(url.rest[1:])
    if not path:
        raise url.error("it names no file: write sqlite:///path/to/file.db")
    if path == ":memory:":
        raise url.error("for a database in memory use memory://")
    return path
