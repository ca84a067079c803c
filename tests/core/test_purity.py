"""The core is pure: importing it loads no edge, no I/O library and starts no thread."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FES = Path(__file__).resolve().parents[2] / "fes"

#: Modules the core must never load (each also forbids its submodules).
FORBIDDEN_AT_RUNTIME = (
    "fes.edge",
    "sqlite3",
    "psycopg",
    "cattrs",
    "orjson",
    "socket",
    "subprocess",
    "asyncio",
    "random",
    "urllib.request",
    "http",
)
#: The static check is stricter: attrs loads threading and time, the core must not.
FORBIDDEN_IN_SOURCE = (*FORBIDDEN_AT_RUNTIME, "threading", "time", "os", "uuid")


def _core_files() -> list[Path]:
    files = sorted(FES.glob("*.py"))
    files.append(FES / "testing" / "specs.py")
    files.extend(sorted((FES / "examples").glob("*.py")))
    return files


def _module_name(path: Path) -> str:
    parts = path.relative_to(FES.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_forbidden(name: str, forbidden: tuple[str, ...]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


_PROBE = """
import importlib, json, sys, threading
for name in {modules!r}:
    importlib.import_module(name)
print(json.dumps({{
    "modules": sorted(sys.modules),
    "threads": [t.name for t in threading.enumerate() if t is not threading.main_thread()],
}}))
"""


@pytest.fixture(scope="module")
def fresh_import() -> dict[str, list[str]]:
    """What a fresh interpreter has loaded after importing every core module."""
    modules = ["fes", *(_module_name(p) for p in _core_files())]
    # Coverage measures subprocesses by starting itself in them (it loads
    # sqlite3, random and threads): the probe must see only what fes loads.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(modules=modules)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, list[str]] = json.loads(result.stdout)
    return loaded


def test_core_files_are_found() -> None:
    """The purity checks look at the modules they are meant to (a glob that finds nothing fails)."""
    names = {_module_name(p) for p in _core_files()}
    expected = {"fes", "fes.aggregates", "fes._shapes", "fes.testing.specs", "fes.examples.dogs"}
    assert expected <= names
    assert not any(n.startswith("fes.edge") for n in names)


def test_importing_the_core_loads_no_forbidden_module(fresh_import: dict[str, list[str]]) -> None:
    """Importing fes, its specs and its examples loads no edge module and no I/O library."""
    loaded = [m for m in fresh_import["modules"] if _is_forbidden(m, FORBIDDEN_AT_RUNTIME)]
    assert loaded == []
    assert "fes.examples.bank" in fresh_import["modules"]


def test_importing_the_core_starts_no_thread(fresh_import: dict[str, list[str]]) -> None:
    """After importing the core only the main thread runs."""
    assert fresh_import["threads"] == []


def _package_of(path: Path) -> str:
    name = _module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(source: str, package: str) -> list[str]:
    """Every module name an import statement in ``source`` (of ``package``) may load."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(base)
            found.extend(f"{base}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("path", _core_files(), ids=_module_name)
def test_core_source_imports_nothing_forbidden(path: Path) -> None:
    """No core module's source imports the edge, an I/O library, threads, the clock or os."""
    names = _imports(path.read_text(), _package_of(path))
    bad = [name for name in names if _is_forbidden(name, FORBIDDEN_IN_SOURCE)]
    assert bad == [], f"{path} imports {bad}"


def test_static_check_sees_dotted_from_and_relative_imports() -> None:
    """The static check catches `import x.y`, `from x import y` and relative edge imports."""
    source = "import http.client\nfrom random import choice\nfrom ..edge import stores\n"
    names = _imports(source, "fes.testing")
    bad = [name for name in names if _is_forbidden(name, FORBIDDEN_IN_SOURCE)]
    assert bad == ["http.client", "random", "random.choice", "fes.edge", "fes.edge.stores"]
    assert _imports("from . import specs\n", "fes.testing") == ["fes.testing", "fes.testing.specs"]
