"""Importing fes and fes.edge loads only what they use; heavy names load on first use.

Each check runs in a fresh interpreter, whose ``sys.modules`` shows what an
import loaded.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import fes.edge

HEAVY = (
    "cattrs", "orjson", "psycopg", "hypothesis", "sqlite3", "multiprocessing", "httpx", "uvicorn",
)


def _run(code: str) -> None:
    # coverage follows subprocesses by starting itself there (loading sqlite3
    # and multiprocessing): the fresh interpreter must hold only what fes loads
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.mark.parametrize("module", ["fes", "fes.edge"])
def test_importing_the_package_loads_no_codec_store_or_testing_library(module: str) -> None:
    """``import fes`` and ``import fes.edge`` load none of cattrs, orjson, psycopg, Hypothesis."""
    _run(
        f"import sys, {module}\n"
        f"loaded = sorted(set({HEAVY!r}) & set(sys.modules))\n"
        "assert not loaded, loaded\n"
    )


def test_the_first_use_of_a_name_imports_its_module() -> None:
    """``fes.edge.Application`` loads the codec then, and is the class defined in private."""
    _run(
        "import sys, fes.edge\n"
        "assert 'cattrs' not in sys.modules\n"
        "found = fes.edge.Application\n"
        "assert 'cattrs' in sys.modules\n"
        "from fes.edge._application import Application\n"
        "assert found is Application\n"
    )


def test_the_public_subpackages_are_attributes_after_import_fes_edge() -> None:
    """``fes.edge.codec`` and ``fes.edge.stores`` resolve as the eager import gave them."""
    _run(
        "import fes.edge\n"
        "assert fes.edge.codec.Codec is fes.edge.Codec\n"
        "assert fes.edge.stores.open_database is fes.edge.open_database\n"
    )


def test_every_public_name_of_fes_edge_resolves_and_is_listed() -> None:
    """Each name in ``__all__`` resolves, and ``dir`` lists it."""
    for name in fes.edge.__all__:
        assert getattr(fes.edge, name) is not None
        assert name in dir(fes.edge)


def test_an_unknown_name_of_fes_edge_is_an_attribute_error() -> None:
    """The lazy lookup answers only for the public names."""
    with pytest.raises(AttributeError, match="Nothing"):
        fes.edge.Nothing  # noqa: B018


def test_fes_help_loads_no_codec_store_or_runner() -> None:
    """``fes --help`` in a fresh interpreter loads neither the codec nor a store nor a runner."""
    _run(
        "import sys\n"
        "from fes.edge._cli import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "unwanted = ('cattrs', 'orjson', 'sqlite3', 'psycopg', 'multiprocessing',\n"
        "            'fes.edge.codec', 'fes.edge.stores', 'fes.edge._application',\n"
        "            'fes.edge._runners', 'fes.aggregates')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in unwanted\n"
        "                or any(m == u or m.startswith(u + '.') for u in unwanted))\n"
        "assert not loaded, loaded\n"
    )


def test_import_fes_defines_the_core_on_first_use() -> None:
    """``import fes`` creates no core class; ``fes.Aggregate`` loads its module, once."""
    _run(
        "import sys, fes\n"
        "assert 'fes.aggregates' not in sys.modules and 'attrs' not in sys.modules\n"
        "found = fes.Aggregate\n"
        "from fes.aggregates import Aggregate\n"
        "assert found is Aggregate and fes.__dict__['Aggregate'] is Aggregate\n"
        "assert fes.system.System is fes.System\n"
        "from fes import *\n"
        "assert Recorded is fes.events.Recorded\n"
        "assert set(fes.__all__) <= set(dir(fes))\n"
    )


def test_an_unknown_name_of_fes_is_an_attribute_error() -> None:
    """The lazy lookup of ``fes`` answers only for its public names and submodules."""
    with pytest.raises(AttributeError, match="Nothing"):
        fes.Nothing  # noqa: B018
