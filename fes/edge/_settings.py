"""Every ``FES_*`` setting, resolved in one place for every entry point.

``Application``, the runners, ``run`` and the ``fes`` command all ask this
module, so a variable means the same thing wherever it is read:

``FES_STORE_URL``
    the store URL (default ``sqlite:///fes.db``); ``ORDERS_FES_STORE_URL``
    gives the ``orders`` application a store of its own, wherever the
    rest of its system lives (see :func:`placement`);
``FES_COMPRESS``
    a true or false word (``1 true yes on`` / ``0 false no off``);
``FES_SNAPSHOT_EVERY``
    take a snapshot when a stream's version crosses a multiple of this;
``FES_CIPHER_KEYS`` and ``FES_CIPHER_KEY_ID``
    the keys that encrypt payloads (read by :meth:`fes.edge.Cipher.from_env`);
``FES_SERVE_TOKEN``
    the bearer token ``fes serve`` requires of every request;
``FES_HTTP_TOKEN``
    the bearer token sent to an HTTP leader (an ``http(s)://`` store URL).

Each may be given for one application by prefixing it with the
application's name, upper-cased with ``-`` turned into ``_``:
``ORDERS_FES_COMPRESS=1`` compresses the ``orders`` application's payloads
only.  The prefixed variable wins; an empty variable counts as unset, so a
shell's ``FES_STORE_URL=`` does not name a store.

The module reads nothing by itself: each function takes the environment as a
mapping, which the entry points pass (``os.environ`` unless told otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, TypeVar

from fes.errors import ConfigurationError

if TYPE_CHECKING:
    from fes.system import App

__all__ = [
    "ANY_APP",
    "DEFAULT_BATCH_BYTES",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_STORE_URL",
    "VARIABLES",
    "AppEnv",
    "compress",
    "flag",
    "setting",
    "snapshot_every",
    "parse_store_option",
    "placement",
    "store_url",
    "unplaced",
]

#: Where events go when nothing names a store.
DEFAULT_STORE_URL = "sqlite:///fes.db"

#: The key of a store mapping that serves every application the mapping does not name.
ANY_APP = "*"

# ``APP=URL`` on a command line: an application's name (or ``*``), then its URL
_APP_URL = re.compile(r"^([A-Za-z0-9_-]+|\*)=(.*)$", re.DOTALL)

# what a store mapping holds besides URLs (an open database, for the runners)
_Place = TypeVar("_Place")

#: Notifications a follower processes, at most, in one transaction.  Larger
#: batches mean fewer durable commits; the write lock is held only while the
#: batch's rows are inserted (a few milliseconds for 500), not while the
#: policy runs.  500 processed a backlog 20-30 % faster than 100 in W4.
DEFAULT_BATCH_SIZE = 500

#: Payload bytes a follower takes, at most, into one transaction (a batch has at
#: least one notification, whatever its size).  With large events, the count
#: alone would let a batch hold 500 of them: 2 GiB for 4 MiB events.
DEFAULT_BATCH_BYTES = 16 * 2**20

#: Every variable fes reads, each also accepted with an application prefix.
VARIABLES = (
    "FES_STORE_URL",
    "FES_COMPRESS",
    "FES_SNAPSHOT_EVERY",
    "FES_CIPHER_KEYS",
    "FES_CIPHER_KEY_ID",
    "FES_SERVE_TOKEN",
    "FES_HTTP_TOKEN",
)

#: The one table of words a switch may hold, in the environment or in a URL.
_WORDS = {
    "1": True, "true": True, "yes": True, "on": True,
    "0": False, "false": False, "no": False, "off": False,
}


def flag(word: str) -> bool:
    """The truth a switch's word says (any case); ValueError for any other word."""
    try:
        return _WORDS[word.strip().lower()]
    except KeyError:
        raise ValueError(
            f"expected a true or false word (1, true, yes, on; 0, false, no, off), got {word!r}"
        ) from None


def prefixed(app: str, key: str) -> str:
    """The name of ``key`` for the application ``app`` alone."""
    return f"{app.upper().replace('-', '_')}_{key}"


def setting(env: Mapping[str, str], key: str, app: str | None = None) -> str | None:
    """``key``'s value for ``app`` (its prefixed variable first), None when unset or empty."""
    if app is not None:
        value = env.get(prefixed(app, key))
        if value:
            return value
    return env.get(key) or None


def store_url(
    env: Mapping[str, str], given: str | None = None, app: str | None = None
) -> str:
    """The store URL to open: ``given`` if any, else the environment's, else the default.

    An empty ``given`` is refused rather than read as "unset": it is usually
    a variable that was meant to hold a URL and did not, and opening the
    default file in its place would put events somewhere nobody looks.
    """
    if given is not None:
        if not isinstance(given, str) or not given.strip():
            raise ConfigurationError(
                f"the store URL is empty ({given!r}); name a store such as "
                f"sqlite:///app.db, or pass None to read {_name('FES_STORE_URL', app)}"
            )
        return given
    return setting(env, "FES_STORE_URL", app) or DEFAULT_STORE_URL


def placement(
    env: Mapping[str, str],
    given: str | Mapping[str, str | _Place] | None,
    apps: Iterable[str],
    *,
    strict: bool = True,
) -> dict[str, str | _Place]:
    """Where each of ``apps`` keeps its events: a URL (or whatever ``given`` maps it to).

    ``given`` is one URL for every application, or a mapping from
    application name to URL, where the key :data:`ANY_APP` (``"*"``) serves
    every application the mapping does not name.  An application neither
    names nor ``"*"`` serves, and every application when ``given`` is None,
    reads its own ``<APP>_FES_STORE_URL``, then ``FES_STORE_URL``.

    The default store (``sqlite:///fes.db``) serves only when nothing is
    placed at all.  Once some application is placed explicitly (a mapping,
    or an ``<APP>_FES_STORE_URL``), one that nothing places is left out of
    the result rather than put in a stray ``./fes.db`` (see :func:`unplaced`
    for why): the caller refuses it when it needs its store.  With
    ``strict``, a mapping's key that names none of ``apps`` is refused (a
    typo would otherwise leave that application unplaced); an application
    alone passes ``strict=False`` and takes its entry from a system's mapping.
    """
    names = list(apps)
    if given is None or isinstance(given, str):
        if given is not None:
            store_url(env, given)  # refuses ""
            return {name: given for name in names}
        missing = set(unplaced(env, given, names))
        return {name: store_url(env, None, name) for name in names if name not in missing}
    if not isinstance(given, Mapping):
        raise ConfigurationError(
            f"store must be a URL, an open database or a mapping of application names "
            f"to URLs, not {given!r}"
        )
    unknown = sorted(str(key) for key in given if key != ANY_APP and key not in names)
    if unknown and strict:
        raise ConfigurationError(
            f"the store mapping names {', '.join(map(repr, unknown))}, which is no application "
            f"of the system (it has {', '.join(map(repr, names)) or 'none'}; "
            f"{ANY_APP!r} serves every application not named)"
        )
    missing = set(unplaced(env, given, names))
    placed: dict[str, str | _Place] = {}
    for name in names:
        value = given[name] if name in given else given.get(ANY_APP)
        if value is None:
            if name not in missing:
                placed[name] = store_url(env, None, name)
        elif isinstance(value, str):
            placed[name] = store_url(env, value, name)
        else:
            placed[name] = value
    return placed


def unplaced(
    env: Mapping[str, str], given: str | Mapping[str, object] | None, apps: Iterable[str]
) -> dict[str, str]:
    """The applications nothing places while others are placed, each with what to set.

    A service deployed with ``ORDERS_FES_STORE_URL`` and
    ``PAYMENTS_FES_STORE_URL`` whose ``RESERVATIONS_FES_STORE_URL`` is
    missing (an unset variable, a typo in a manifest) would otherwise put
    reservations in ``./fes.db``, process its leaders' events into it and
    report it caught up.  Nothing is unplaced when ``given`` is a URL, when
    a mapping has ``"*"``, when ``FES_STORE_URL`` is set, or when nothing
    at all is placed (then the default store serves, as in a first try).
    """
    names = list(apps)
    if isinstance(given, str) or setting(env, "FES_STORE_URL"):
        return {}
    mapping: Mapping[str, object] = given if isinstance(given, Mapping) else {}
    if ANY_APP in mapping:
        return {}
    own = {name for name in names if env.get(prefixed(name, "FES_STORE_URL"))}
    explicit = {name for name in mapping if name != ANY_APP} | own
    if not explicit:
        return {}
    return {
        name: (
            f"nothing places application {name!r}: set {prefixed(name, 'FES_STORE_URL')} "
            f"or FES_STORE_URL, or name it in the store mapping (or give {ANY_APP!r} a store "
            "for every application not named); the default ./fes.db serves only when "
            "nothing is placed at all"
        )
        for name in names
        if name not in mapping and name not in own
    }


def parse_store_option(values: Iterable[str]) -> str | dict[str, str] | None:
    """The store a command line names with repeated ``--store URL`` / ``--store APP=URL``.

    One plain URL alone is that URL; ``APP=URL`` places one application
    (``*=URL``, or a plain URL beside them, serves the others).  None when
    nothing was given.  A URL always starts with its scheme (``sqlite:``,
    ``postgresql:``, ``https:``), so ``APP=`` cannot be mistaken for a URL's
    query.
    """
    given = list(values)
    if not given:
        return None
    mapping: dict[str, str] = {}
    for value in given:
        match = _APP_URL.match(value)
        key, url = (match[1], match[2]) if match else (ANY_APP, value)
        if not url.strip():
            raise ConfigurationError(
                f"the store URL is empty (--store {value!r}); name a store such as "
                "--store sqlite:///app.db, or leave --store out to use $FES_STORE_URL"
            )
        if key in mapping and mapping[key] != url:
            what = "every other application" if key == ANY_APP else f"application {key!r}"
            raise ConfigurationError(
                f"--store names two stores for {what} ({mapping[key]!r} and {url!r})"
            )
        mapping[key] = url
    if list(mapping) == [ANY_APP]:
        return mapping[ANY_APP]
    return mapping


def compress(env: Mapping[str, str], app: str | None = None) -> bool:
    """Whether ``FES_COMPRESS`` (or the application's own) asks for compression."""
    word = setting(env, "FES_COMPRESS", app)
    if word is None:
        return False
    try:
        return flag(word)
    except ValueError:
        raise ConfigurationError(
            f"FES_COMPRESS must be a true or false word (1, true, yes, on; 0, false, no, off), "
            f"got {word!r}{_from(env, 'FES_COMPRESS', app)}"
        ) from None


def snapshot_every(env: Mapping[str, str], app: str | None = None) -> int | None:
    """``FES_SNAPSHOT_EVERY`` (or the application's own) as a positive int, or None."""
    raw = setting(env, "FES_SNAPSHOT_EVERY", app)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(
            f"FES_SNAPSHOT_EVERY must be an integer, got {raw!r}"
            f"{_from(env, 'FES_SNAPSHOT_EVERY', app)}"
        ) from None
    if value < 1:
        raise ConfigurationError(
            f"FES_SNAPSHOT_EVERY must be an integer of 1 or more, got {value}"
            f"{_from(env, 'FES_SNAPSHOT_EVERY', app)}"
        )
    return value


def snapshot_interval(env: Mapping[str, str], app: App) -> int | None:
    """How often ``app`` snapshots in a process with ``env``: ``FES_SNAPSHOT_EVERY``
    (or the application's own variable), else the ``App``'s ``snapshot_every``."""
    every = snapshot_every(env, app.name)
    return app.snapshot_every if every is None else every


def _name(key: str, app: str | None) -> str:
    return key if app is None else f"{key} (or {prefixed(app, key)})"


def _from(env: Mapping[str, str], key: str, app: str | None) -> str:
    """Where a bad value came from, when it was an application's own variable."""
    if app is not None and env.get(prefixed(app, key)):
        return f" (from {prefixed(app, key)})"
    return ""


class AppEnv(Mapping[str, str]):
    """An environment as one application sees it: each key's prefixed variable first.

    Readers that take a plain mapping (``Cipher.from_env``) get per-application
    overrides through it without knowing about prefixes.
    """

    def __init__(self, env: Mapping[str, str], app: str) -> None:
        self._env = env
        self._app = app

    def __getitem__(self, key: str) -> str:
        value = setting(self._env, key, self._app)
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (key for key in VARIABLES if setting(self._env, key, self._app) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)
