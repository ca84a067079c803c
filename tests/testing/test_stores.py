"""fes.testing.stores: the store conformance suite, as a user of a third-party store sees it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, settings

from fes.edge.stores import MemoryDatabase, StoredEvent
from fes.testing.stores import check_store

_PROBE = "import json, sys, fes.testing; print(json.dumps(sorted(sys.modules)))"


def test_importing_fes_testing_loads_neither_the_suite_nor_the_edge() -> None:
    """``import fes.testing`` leaves fes.testing.stores, the edge and pytest unloaded."""
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert not loaded & {"fes.testing.stores", "fes.edge", "fes.edge.stores", "pytest"}


class _LimitlessStore:
    """A memory store whose read_log ignores ``limit``: a bug the suite must catch."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def read_log(
        self,
        after: int = 0,
        *,
        limit: int | None = None,
        topics: Collection[str] | None = None,
        to: int | None = None,
    ) -> list[StoredEvent]:
        return list(self._inner.read_log(after, topics=topics, to=to))


class _LimitlessDatabase(MemoryDatabase):
    """A memory database handing out :class:`_LimitlessStore` stores."""

    def store(self, app: str) -> Any:
        return _LimitlessStore(super().store(app))


def test_the_state_machine_catches_a_store_that_ignores_a_limit() -> None:
    """check_store fails on a store that returns more of the log than asked for."""
    with _LimitlessDatabase() as database, pytest.raises(AssertionError):
        # no shrinking: the test asks whether the bug is found, not for the smallest example
        check_store(
            database,
            settings=settings(
                max_examples=200,
                deadline=None,
                derandomize=True,
                phases=[Phase.generate],
            ),
        )


def test_check_store_passes_the_memory_store() -> None:
    """check_store finds nothing wrong with the memory store, the model itself."""
    with MemoryDatabase() as database:
        check_store(database, settings=settings(max_examples=10, deadline=None))


def test_the_suite_refuses_to_run_without_a_database_fixture(tmp_path: Path) -> None:
    """A subclass that forgets to override ``database`` errors, rather than passing vacuously."""
    (tmp_path / "test_forgetful.py").write_text(
        "from fes.testing.stores import StoreConformance\n\n"
        "class TestForgetful(StoreConformance):\n"
        "    pass\n"
    )
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "empty_store"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert "1 error" in result.stdout, result.stdout
    assert "override the database fixture" in result.stdout
