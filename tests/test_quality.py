"""The shipped typing marker.

mypy --strict and ruff are steps of their own in .ci/run, not tests: they
are slow to run inside pytest and say nothing about behaviour.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_package_ships_py_typed() -> None:
    """The package carries the PEP 561 marker, so users' type checkers read its hints."""
    assert (ROOT / "fes" / "py.typed").is_file()
