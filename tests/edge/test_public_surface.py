"""The edge's public surface: three modules, everything else private."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import fes.edge
import fes.edge.stores

EDGE = Path(fes.edge.__file__).resolve().parent
PUBLIC_MODULES = {"fes.edge", "fes.edge.codec", "fes.edge.stores"}


def _edge_modules() -> list[str]:
    names = []
    for path in sorted(EDGE.rglob("*.py")):
        parts = ["fes", "edge", *path.relative_to(EDGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


@pytest.mark.parametrize("module", _edge_modules())
def test_every_edge_module_but_three_is_private(module: str) -> None:
    """Only fes.edge, fes.edge.codec and fes.edge.stores have a path without an underscore."""
    if module not in PUBLIC_MODULES:
        assert any(part.startswith("_") for part in module.split(".")[2:]), module


def test_postgres_database_is_public_and_loads_psycopg_only_when_asked_for() -> None:
    """fes.edge.stores.PostgresDatabase is the private class, imported on first access."""
    code = (
        "import sys, fes.edge, fes.edge.stores as s\n"
        "assert 'psycopg' not in sys.modules\n"
        "found = s.PostgresDatabase\n"
        "assert 'psycopg' in sys.modules\n"
        "from fes.edge.stores._postgres import PostgresDatabase\n"
        "assert found is PostgresDatabase\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_an_unknown_name_of_the_stores_module_is_an_attribute_error() -> None:
    """The lazy lookup of fes.edge.stores answers only for PostgresDatabase."""
    with pytest.raises(AttributeError, match="Nothing"):
        fes.edge.stores.Nothing  # noqa: B018
