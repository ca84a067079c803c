"""``http://`` and ``https://`` stores: a leader's log served by ``fes serve``.

Loaded by :func:`fes.edge.stores.open_database` for those URLs only, since it
imports httpx (the ``http`` extra).  See ``docs/http-leader.md``.
"""

from __future__ import annotations

from typing import Any, Protocol

from fes.edge._settings import prefixed
from fes.errors import ConfigurationError

from ._database import HttpDatabase, HttpStore

__all__ = ["HttpDatabase", "HttpStore", "check_decodable"]


class _Codec(Protocol):
    @property
    def cipher(self) -> Any: ...


class _Reader(Protocol):
    """What :func:`check_decodable` needs of an :class:`fes.edge.Application`."""

    @property
    def name(self) -> str: ...

    @property
    def store(self) -> Any: ...

    @property
    def codec(self) -> _Codec: ...


def check_decodable(application: _Reader) -> None:
    """Refuse up front a reader of an HTTP leader that could not decode its events.

    ``application`` is the :class:`fes.edge.Application` a follower reads a
    leader with (its codec decodes the leader's rows).  When its store is an
    :class:`HttpStore`, the server's info says how the oldest and the newest
    stored payloads are sealed; :class:`fes.errors.ConfigurationError` is
    raised when they are encrypted and the application has no cipher, or
    not the key they name, or when they are plain and it has a cipher (a
    codec with a cipher reads only authenticated payloads).  Any other store
    passes unchecked; an empty log passes, its rows being unknown.  Raises
    :class:`fes.errors.StoreUnavailable` when the server cannot be reached.
    """
    store = application.store
    if not isinstance(store, HttpStore):
        return
    info = store.info(fresh=True)
    cipher = application.codec.cipher
    keys = f"{prefixed(application.name, 'FES_CIPHER_KEYS')} (or FES_CIPHER_KEYS)"
    for which in ("oldest", "newest"):
        sample = info.get(which)
        if not isinstance(sample, dict):
            continue
        where = (
            f"the {which} event of {application.name!r} served at {store.url} "
            f"(position {sample.get('position')})"
        )
        if sample.get("encrypted"):
            key = sample.get("key_id")
            if cipher is None:
                raise ConfigurationError(
                    f"{where} is encrypted under key {key!r}, and the application reading "
                    f"it has no cipher: set {keys} to the leader's keys, or pass cipher="
                )
            if key not in cipher.key_ids:
                raise ConfigurationError(
                    f"{where} is encrypted under key {key!r}, which the reading application's "
                    f"cipher does not hold (it holds {', '.join(sorted(cipher.key_ids))}): "
                    f"add the leader's key to {keys}"
                )
        elif cipher is not None:
            raise ConfigurationError(
                f"{where} is not encrypted, and the application reading it has a cipher, "
                "which reads only encrypted payloads: read this leader without one "
                f"(unset {keys} for it)"
            )
