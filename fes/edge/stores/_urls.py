"""Store URLs: taking them apart, reading their options, hiding their passwords.

A store is chosen by one URL: ``memory://``, ``sqlite:///relative.db``,
``sqlite:////absolute.db``, ``postgresql://user:password@host/db``.  Options
ride in the query string (``?synchronous=NORMAL&busy_timeout=5000``).  Every
error names the URL with its password masked, so messages and logs never
leak a secret.

Masking does not trust the URL to be well-formed: people paste raw passwords
holding ``@``, ``/``, ``?`` or ``#``.  :func:`redact` hides everything from the
first ``:`` after ``scheme://`` to the *last* ``@`` of the URL, and the value
of every option whose name speaks of a password, secret, key or token.  When
in doubt it hides more.  :func:`parse_url` refuses a URL whose user part
cannot be told apart from its host, path or options, asking for the password
to be percent-encoded, rather than connect somewhere with a wrong password.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from attrs import frozen

from fes.edge._settings import flag
from fes.errors import StoreURLError

__all__ = [
    "StoreURL",
    "check_ports",
    "option_bool",
    "option_choice",
    "option_float",
    "option_int",
    "parse_url",
    "redact",
    "take_options",
]

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", re.DOTALL)
_MASK = "***"
# Option names whose values are secrets (libpq's password and sslpassword, and
# anything of the kind): matched case-insensitively, after percent-decoding.
_SECRET_NAME = re.compile(r"pass|pwd|secret|key|token|credential", re.IGNORECASE)
# ``name=value`` in a URL query: the value runs to the next ``&name=``, so a
# raw ``&`` or ``#`` in a secret does not end it early.
_QUERY_OPTION = re.compile(
    r"(?P<lead>(?:^|[?&])(?P<name>[^=&?]+)=)(?P<value>.*?)(?=&[^=&]*=|\Z)",
    re.DOTALL,
)
# ``name=value`` in a libpq keyword/value string: a value is quoted or runs to
# white space.
_KEYWORD_OPTION = re.compile(
    r"(?P<lead>(?:^|[?&;\s])(?P<name>[^=&?;\s]+)\s*=\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*(?:'|\Z)|[^\s&;]*)",
    re.DOTALL,
)
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HOST = r"(?:\[[^\]/?#@]*\]|[^:,\[\]/?#@]*)(?::\d*)?"
_HOSTS = re.compile(rf"{_HOST}(?:,{_HOST})*")
_ENCODE = (
    "percent-encode the user name and password (@ as %40, / as %2F, ? as %3F, "
    "# as %23, % as %25), and @ or # in the database name or an option"
)


def _is_secret(name: str) -> bool:
    """Whether an option called ``name`` (possibly percent-encoded) holds a secret."""
    return _SECRET_NAME.search(unquote_plus(name)) is not None


def _mask_options(text: str, pattern: re.Pattern[str]) -> str:
    """``text`` with the value of every secret-bearing ``name=value`` masked."""

    def mask(match: re.Match[str]) -> str:
        if _is_secret(match["name"]) and match["value"]:
            return match["lead"] + _MASK
        return match[0]

    return pattern.sub(mask, text)


def _mask_userinfo(text: str) -> str:
    """``text`` (what follows ``scheme://``) with its password masked.

    The password runs from the first ``:`` to the last ``@``: a host never
    holds ``@``, while a raw password may hold ``@``, ``/``, ``?`` or ``#``.
    The values of secret options are masked too, each span found in the
    text as given, and overlapping spans as one: an ``@`` inside an option's
    value makes this hide more than the password, never less.  A user part
    without ``:`` holds no password.
    """
    spans: list[tuple[int, int]] = []
    user_end = text.rfind("@")
    colon = text.find(":", 0, user_end)
    if user_end >= 0 and colon >= 0:
        spans.append((colon + 1, user_end))
    for match in _QUERY_OPTION.finditer(text):
        if _is_secret(match["name"]) and match["value"]:
            spans.append(match.span("value"))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    masked: list[str] = []
    done = 0
    for start, end in merged:
        masked += [text[done:start], _MASK]
        done = end
    masked.append(text[done:])
    return "".join(masked)


def redact(url: str) -> str:
    """``url`` with any password (``user:secret@``, ``password=secret``, ...) masked.

    It works on any text, well-formed or not: see the module's documentation.
    """
    match = _SCHEME.fullmatch(url)
    if match is None:
        # Not a URL: maybe one with a mistyped scheme, maybe a libpq
        # keyword/value string.  Mask both ways.
        return _mask_options(_mask_userinfo(url), _KEYWORD_OPTION)
    scheme, rest = url[: match.start(2)], match.group(2)
    if rest.startswith("/"):  # no host, so no user part: sqlite:///a:b@c.db
        return scheme + _mask_options(rest, _QUERY_OPTION)
    return scheme + _mask_userinfo(rest)


@frozen
class StoreURL:
    """A store URL taken apart: scheme, what follows ``scheme://``, and its options.

    ``rest`` is everything between ``scheme://`` and ``?``, undecoded;
    ``options`` are the query parameters, decoded.  Its repr masks the
    password, as :attr:`safe` does.
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

    def __repr__(self) -> str:
        return f"StoreURL({self.safe!r})"


def _check_authority(url: str, rest: str) -> None:
    """Refuse a URL whose user part, host, path and options cannot be told apart.

    ``rest`` is what follows ``scheme://`` and does not start with ``/``.  A raw
    ``@``, ``/``, ``?``, ``#`` or ``%`` in a password would otherwise send a
    cut-off password to a wrong host, or echo part of it as a host, database
    or option name.
    """
    end = len(rest)
    for mark in "/?#":
        found = rest.find(mark)
        if 0 <= found < end:
            end = found
    authority = rest[:end]
    query = rest.find("?", end)
    fragment = rest.find("#", end)
    path_end = min(i for i in (query, fragment, len(rest)) if i >= 0)
    problem = ""
    if authority.count("@") > 1:
        problem = "more than one '@' before the host"
    elif "@" in rest[end:path_end]:
        problem = "an '@' after the first '/'"
    elif fragment >= 0 and "@" in rest[fragment:]:
        problem = "an '@' after a '#'"
    elif _PERCENT.search(authority.rpartition("@")[0]):
        problem = "a '%' that starts no %XX escape before the host"
    elif "@" not in authority and "@" in rest and _HOSTS.fullmatch(authority) is None:
        problem = "an '@' after a '?' that follows no host"
    elif query >= 0 and any(
        "@" in field.partition("=")[0]
        for field in rest[query + 1 : fragment if fragment > query else None].split("&")
    ):
        problem = "an '@' in an option name"
    if problem:
        raise StoreURLError(
            f"bad store URL {redact(url)!r}: it has {problem}, so its password, host "
            f"and options cannot be told apart; {_ENCODE}"
        )


# What to write instead of a known scheme followed by ``:`` but not ``//``.
_SLASHES = {
    "memory": "write memory:// (two slashes)",
    "sqlite": (
        "write sqlite:///relative/path.db (three slashes) or sqlite:////absolute/path.db (four)"
    ),
    "postgresql": "write postgresql://user@host/database (two slashes)",
    "postgres": "write postgresql://user@host/database (two slashes)",
    "http": "write http://host:port/path (two slashes)",
    "https": "write https://host:port/path (two slashes)",
}


def _refuse_missing_slashes(url: str) -> None:
    """Refuse ``sqlite:/x.db``, ``memory:`` and the like: a known scheme without ``//``."""
    scheme, colon, _ = url.partition(":")
    hint = _SLASHES.get(scheme.lower()) if colon else None
    if hint is not None:
        raise StoreURLError(
            f"bad store URL {redact(url)!r}: {scheme}: must be followed by //; {hint}"
        )


def check_ports(url: StoreURL) -> None:
    """Refuse a host's port that is not a number from 1 to 65535 (``host:abc``)."""
    if url.rest.startswith("/"):
        return
    authority = url.rest.partition("/")[0].rpartition("@")[2]
    for host in authority.split(","):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        _, colon, port = port.rpartition(":")
        if colon and port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise url.error(f"port {port!r} is not a number from 1 to 65535")


def parse_url(url: str) -> StoreURL:
    """Split ``url`` into scheme, the rest and query options, or raise StoreURLError."""
    if not isinstance(url, str):
        raise StoreURLError(f"a store URL must be a string, not {type(url).__name__}")
    if not url.strip():
        raise StoreURLError(
            f"the store URL is empty ({url!r}); name a store such as memory://, "
            "sqlite:///app.db or postgresql://user@host/database"
        )
    match = _SCHEME.fullmatch(url)
    if match is None:
        _refuse_missing_slashes(url)
        hint = (
            "; fes takes a URL, not a libpq keyword/value string"
            if re.match(r"\s*\w+\s*=", url)
            else ""
        )
        raise StoreURLError(
            f"bad store URL {redact(url)!r}: it has no scheme; use memory://, "
            f"sqlite:///path.db or postgresql://user@host/database{hint}"
        )
    scheme, rest = match.group(1).lower(), match.group(2)
    if rest and not rest.startswith("/"):
        _check_authority(url, rest)
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    query = query.partition("#")[0]
    options: dict[str, str] = {}
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            # parse_qsl's message quotes the bad field, which may be a secret.
            raise StoreURLError(
                f"bad store URL {redact(url)!r}: cannot read its options: "
                "write name=value pairs joined by '&'"
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
            shown = _MASK if _is_secret(name) else repr(value)
            raise url.error(f"option {name}={shown}: {error}") from None
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


def option_bool(name: str, value: object) -> bool:
    """Read a boolean option: true/false, yes/no, on/off, 1/0 (the settings' one table)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return flag(value)
        except ValueError:
            pass
    raise ValueError("expected true or false")


def option_choice(*choices: str) -> Callable[[str, object], str]:
    """A reader of an option that is one of ``choices`` (any case; returned upper-case)."""

    def read(name: str, value: object) -> str:
        if isinstance(value, str) and value.upper() in choices:
            return value.upper()
        raise ValueError(f"expected one of {', '.join(choices)}")

    return read
