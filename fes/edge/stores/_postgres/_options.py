"""A PostgreSQL URL and keyword options, read into libpq's terms and fes's settings."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from attrs import frozen

from fes.edge.stores._urls import (
    check_ports,
    option_bool,
    option_float,
    option_int,
    parse_url,
    take_options,
)

MAX_IDENTIFIER = 63  # bytes: PostgreSQL's NAMEDATALEN - 1

_LIBPQ_OPTIONS = (
    "application_name",
    "connect_timeout",
    "host",
    "keepalives",
    "keepalives_count",
    "keepalives_idle",
    "keepalives_interval",
    "passfile",
    "port",
    "sslcert",
    "sslcrl",
    "sslkey",
    "sslmode",
    "sslrootcert",
    "target_session_attrs",
)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*(ms|s|min|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


@frozen
class Settings:
    """The fes options of a database URL, read and checked."""

    schema: str = "public"
    pool_size: int = 5
    pool_timeout: float = 30.0
    first_connect_timeout: float = 5.0
    lock_timeout_ms: int = 10_000
    idle_timeout_ms: int = 60_000
    poll_interval: float = 1.0
    listen: bool = True
    retries: int = 3


def _duration_ms(name: str, value: object) -> int:
    """Read a PostgreSQL duration: milliseconds, or a number with a unit."""
    match = None if isinstance(value, bool) else _DURATION.match(str(value))
    if match is None:
        raise ValueError("expected milliseconds or a number with unit ms, s, min, h or d")
    return round(float(match[1]) * _UNIT_MS[match[2] or "ms"])


def _schema_name(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ValueError("expected a non-empty schema name")
    if len(value.encode()) > MAX_IDENTIFIER:
        raise ValueError(f"a schema name holds at most {MAX_IDENTIFIER} bytes")
    return value


def _text(name: str, value: object) -> str:
    return str(value)


def _ports(name: str, value: object) -> str:
    """Read libpq's ``port``: a port, or a comma-separated list of them."""
    text = str(value)
    if isinstance(value, bool) or not all(
        part.strip().isdigit() and 1 <= int(part) <= 65535 for part in text.split(",")
    ):
        raise ValueError("expected a port number from 1 to 65535")
    return text


_READERS: dict[str, Callable[[str, object], Any]] = {
    "first_connect_timeout": option_float(0.0),
    "idle_in_transaction_session_timeout": _duration_ms,
    "listen": option_bool,
    "lock_timeout": _duration_ms,
    "poll_interval": option_float(0.0),
    "pool_size": option_int(1),
    "pool_timeout": option_float(0.0),
    "retries": option_int(0),
    "schema": _schema_name,
    **{name: _text for name in _LIBPQ_OPTIONS},
    "port": _ports,
}


def parse(url: str, options: Mapping[str, object]) -> tuple[str, dict[str, Any], Settings]:
    """Split a URL into a libpq URL, connection keywords and fes settings."""
    parsed = parse_url(url)
    if parsed.scheme not in ("postgresql", "postgres"):
        raise parsed.error("not a PostgreSQL URL: it must start with postgresql://")
    check_ports(parsed)
    values = take_options(parsed, options, _READERS)
    defaults = Settings()
    settings = Settings(
        schema=values.get("schema", defaults.schema),
        pool_size=values.get("pool_size", defaults.pool_size),
        pool_timeout=values.get("pool_timeout", defaults.pool_timeout),
        first_connect_timeout=values.get("first_connect_timeout", defaults.first_connect_timeout),
        lock_timeout_ms=values.get("lock_timeout", defaults.lock_timeout_ms),
        idle_timeout_ms=values.get("idle_in_transaction_session_timeout", defaults.idle_timeout_ms),
        poll_interval=values.get("poll_interval", defaults.poll_interval),
        listen=values.get("listen", defaults.listen),
        retries=values.get("retries", defaults.retries),
    )
    keywords: dict[str, Any] = {"application_name": "fes", "connect_timeout": "10"}
    keywords.update({k: v for k, v in values.items() if k in _LIBPQ_OPTIONS})
    keywords["autocommit"] = True
    # Generic plans: the store's statements are index lookups whatever their
    # parameters, and planning the append's statement afresh costs more than
    # running it.
    keywords["options"] = (
        f"-c lock_timeout={settings.lock_timeout_ms}"
        f" -c idle_in_transaction_session_timeout={settings.idle_timeout_ms}"
        " -c plan_cache_mode=force_generic_plan"
    )
    return f"{parsed.scheme}://{parsed.rest}", keywords, settings


def password(url: str) -> str:
    """The URL's password, to scrub from messages that might echo it."""
    try:
        userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
    except ValueError:
        return ""
    return unquote(userinfo.split(":", 1)[1]) if at and ":" in userinfo else ""
