"""The conformance suite for event stores: prove that your store keeps fes's promises.

fes's own stores (memory, SQLite, PostgreSQL) pass this suite; a store of
your own — a class that satisfies :class:`fes.edge.stores.Database` and
:class:`fes.edge.stores.Store` — can run the very same tests.  Subclass
:class:`StoreConformance` in a pytest test module and override its
``database`` fixture to yield a fresh, empty database::

    import pytest
    from fes.testing.stores import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        def database(self):
            database = MyDatabase(...)
            yield database
            database.close()

pytest then runs well over a hundred cases: appends and optimistic
concurrency, the notification log's order under concurrent writers,
tracking, snapshots, views, waiting, resealing, refusals of bad input and
closing, plus a Hypothesis state machine (:class:`StoresAgree`) that checks
the store agrees with the memory store under random operations.

This module needs pytest and Hypothesis (``fes-events[testing]``); it is
not imported by :mod:`fes.testing`, import it explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator

import hypothesis
import pytest

from fes.edge.stores._base import Database, Store
from fes.testing._stores._events import new_event, new_snapshot
from fes.testing._stores._machine import DEFAULT_SETTINGS, StoresAgree, check_store
from fes.testing._stores._reading import ReadingCases
from fes.testing._stores._writing import WritingCases

__all__ = ["StoreConformance", "StoresAgree", "check_store", "new_event", "new_snapshot"]


class StoreConformance(WritingCases, ReadingCases):
    """Every operation and promise of the store protocol, as pytest tests of one store.

    Abstract: a subclass overrides the :meth:`database` fixture.  Every case
    uses only the ``Database`` and ``Store`` protocols.  Some cases close the
    database themselves, so ``close()`` must be harmless the second time.
    Set :attr:`machine_settings` to make the state machine try harder (or
    less hard, for a slow store).
    """

    #: The Hypothesis settings of :meth:`test_agrees_with_the_memory_model`.
    machine_settings: hypothesis.settings = DEFAULT_SETTINGS

    @pytest.fixture
    def database(self) -> Iterator[Database]:
        """A fresh, empty database, closed afterwards: override this in a subclass."""
        raise NotImplementedError("override the database fixture of StoreConformance")
        yield  # pragma: no cover

    @pytest.fixture
    def store(self, database: Database) -> Store:
        """The store of an application called ``shop``."""
        return database.store("shop")

    def test_agrees_with_the_memory_model(self, database: Database) -> None:
        """Random appends, tracking, snapshots, views and reads give the memory store's answers."""
        check_store(database, settings=self.machine_settings)
