"""Every ``FES_*`` setting, resolved in one place for every entry point.

``Application``, the runners, ``run`` and the ``fes`` command all ask this
module, so a variable means the same thing wherever it is read:

``FES_STORE_URL``
    the store URL (default ``sqlite:///fes.db``);
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

from collections.abc import Iterable, Iterator, Mapping

from fes.errors import ConfigurationError

__all__ = [
    "DEFAULT_STORE_URL",
    "VARIABLES",
    "AppEnv",
    "compress",
    "flag",
    "setting",
    "snapshot_every",
    "store_url",
    "system_store_url",
]

#: Where events go when nothing names a store.
DEFAULT_STORE_URL = "sqlite:///fes.db"

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


def system_store_url(
    env: Mapping[str, str], given: str | None, apps: Iterable[str]
) -> str:
    """The one store URL of a whole system run by ``run`` or ``fes run``.

    A runner keeps every application of a system in one database, so an
    application's own ``<APP>_FES_STORE_URL`` that names another store is
    refused rather than ignored (its events would not be where it says).
    """
    url = store_url(env, given)
    if given is None:
        for app in apps:
            own = env.get(prefixed(app, "FES_STORE_URL"))
            if own and own != url:
                raise ConfigurationError(
                    f"{prefixed(app, 'FES_STORE_URL')} names a store of its own, but a runner "
                    f"keeps a whole system in one store ({_name('FES_STORE_URL', None)} or "
                    "the default): unset it, or give it the system's URL"
                )
    return url


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
