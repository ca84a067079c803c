"""Static checks that are part of the test run: typing, lint, and the shipped marker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_mypy_strict_is_clean() -> None:
    """`mypy --strict fes` reports no error."""
    result = _run("mypy", "--strict", "fes")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_is_clean() -> None:
    """`ruff check` reports nothing on the package, tests and benchmarks."""
    result = _run("ruff", "check", "fes", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_package_ships_py_typed() -> None:
    """The package carries the PEP 561 marker, so users' type checkers read its hints."""
    assert (ROOT / "fes" / "py.typed").is_file()
