"""Store URLs: taking them apart, reading their options, hiding their passwords.

A store is chosen by one URL: ``memory://``, ``sqlite:///relative.db``,
``sqlite:////absolute.db``, ``postgresql://user:password@host/db``.  Options
ride in the query string (``?synchronous=NORMAL&busy_timeout=5000``).  Every
error names the URL with its password masked, so messages and logs never
leak a secret.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from attrs import frozen

from fes.errors import StoreURLError

__all__ = [
    "StoreURL",
    "option_bool",
    "option_choice",
    "option_float",
    "option_int",
    "parse_url",
    "redact",
    "take_options",
]

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)
_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*:)[^/?#@]*@")
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def redact(url: str) -> str:
    """``url`` with any password (``user:secret@`` or ``password=secret``) masked."""
    url = _USERINFO_PASSWORD.sub(r"\1***@", url)
    return _QUERY_PASSWORD.sub(r"\1***", url)


@frozen
class StoreURL:
    """A store URL taken apart: scheme, what follows ``scheme://``, and its options.

    ``rest`` is everything between ``scheme://`` and ``?``, undecoded;
    ``options`` are the query parameters, decoded.
    """

    text: str
    scheme: str
    rest: str
    options: Mapping[str, str]

    @property
    def safe(self) -> str:
        """The URL with its password masked, to put in messages."""
        return redact(self.text)

    def error(self, problem: str) -> StoreURLError:
        """A StoreURLError naming this URL (password masked) and ``problem``."""
        return StoreURLError(f"bad store URL {self.safe!r}: {problem}")


def parse_url(url: str) -> StoreURL:
    """Split ``url`` into scheme, the rest and query options, or raise StoreURLError."""
    if not isinstance(url, str):
        raise StoreURLError(f"a store URL must be a string, not {type(url).__name__}")
    match = _SCHEME.fullmatch(url)
    if match is None:
        raise StoreURLError(
            f"bad store URL {redact(url)!r}: it has no scheme; use memory://, "
            "sqlite:///path.db or postgresql://user@host/database"
        )
    scheme, rest = match.group(1).lower(), match.group(2)
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    query = query.partition("#")[0]
    options: dict[str, str] = {}
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError as error:
            raise StoreURLError(
                f"bad store URL {redact(url)!r}: cannot read its options: {error}"
            ) from None
        for key, value in pairs:
            if key in options:
                raise StoreURLError(f"bad store URL {redact(url)!r}: option {key!r} given twice")
            options[key] = value
    return StoreURL(text=url, scheme=scheme, rest=rest, options=options)


def take_options(
    url: StoreURL, given: Mapping[str, object], readers: Mapping[str, Callable[[str, object], Any]]
) -> dict[str, Any]:
    """Read the URL's options and ``given`` keyword options; keywords win.

    ``readers`` maps each known option to a function from (name, raw value)
    to the value, raising ValueError with a reason when it is bad.  Unknown
    options and bad values raise StoreURLError naming the URL.
    """
    raw: dict[str, object] = {**url.options, **given}
    unknown = sorted(set(raw) - set(readers))
    if unknown:
        known = ", ".join(sorted(readers)) or "none"
        raise url.error(f"unknown option {unknown[0]!r} for {url.scheme}; known options: {known}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        try:
            values[name] = readers[name](name, value)
        except ValueError as error:
            raise url.error(f"option {name}={value!r}: {error}") from None
    return values


def option_int(minimum: int) -> Callable[[str, object], int]:
    """A reader of an integer option at least ``minimum``."""

    def read(name: str, value: object) -> int:
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        if isinstance(value, str):
            if not value.strip().lstrip("-").isdigit():
                raise ValueError("expected an integer")
            value = int(value)
        if not isinstance(value, int):
            raise ValueError("expected an integer")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value

    return read


def option_float(minimum: float) -> Callable[[str, object], float]:
    """A reader of a number option above ``minimum``."""

    def read(name: str, value: object) -> float:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError("expected a number") from None
        if not isinstance(value, int | float) or value != value:
            raise ValueError("expected a number")
        if value <= minimum:
            raise ValueError(f"must be above {minimum}")
        return float(value)

    return read


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def option_bool(name: str, value: object) -> bool:
    """Read a boolean option: true/false, yes/no, on/off, 1/0."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise ValueError("expected true or false")


def option_choice(*choices: str) -> Callable[[str, object], str]:
    """A reader of an option that is one of ``choices`` (any case; returned upper-case)."""

    def read(name: str, value: object) -> str:
        if isinstance(value, str) and value.upper() in choices:
            return value.upper()
        raise ValueError(f"expected one of {', '.join(choices)}")

    return read
