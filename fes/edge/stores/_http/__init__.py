"""``http://`` and ``https://`` stores: a leader's log served by ``fes serve``.

Loaded by :func:`fes.edge.stores.open_database` for those URLs only, since it
imports httpx (the ``http`` extra).  See ``docs/http-leader.md``.
"""

from __future__ import annotations

from typing import Any, Protocol

from ._database import HttpDatabase, HttpStore, Reader

__all__ = ["HttpDatabase", "HttpStore", "check_decodable"]


class _Reader(Reader, Protocol):
    @property
    def store(self) -> Any: ...


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

    The same check is the store's own ``check_decodable`` method, which a
    caller can look up without importing this module (and httpx)::

        check = getattr(reader.store, "check_decodable", None)
        if check is not None:
            check(reader)
    """
    store = application.store
    if isinstance(store, HttpStore):
        store.check_decodable(application)
