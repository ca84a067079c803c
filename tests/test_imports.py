"""The layering of fes's modules: no import cycle between them, lazy imports included.

Every ``import`` and ``from ... import`` anywhere in a module (at the top,
in a function, under ``TYPE_CHECKING``) is an edge to the fes module it
names.  A cycle, even one closed only by a function-level import, means two
modules cannot be read, tested or moved one without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "fes"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The fes modules ``name`` imports, wherever in its source the import is."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # ``from package import module`` imports the module; otherwise the origin
            found.update(
                f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known else origin
                for alias in node.names
            )
    return {module for module in found if module in known and module != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycle_between_fes_modules() -> None:
    """No fes module imports, directly or through others, a module that imports it."""
    cycles = _cycles(_graph())
    assert not cycles, "modules importing each other (lazy imports count): " + "; ".join(
        " <-> ".join(group) for group in cycles
    )


def test_the_cycle_finder_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """A function-level relative import closing a loop is found; a one-way chain is not."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    module = tmp_path / "fes" / "edge" / "_x.py"
    module.parent.mkdir(parents=True)
    module.write_text("def f():\n    from ._y import g\n    from . import _z\n    import fes.w\n")
    found = _imports(
        "fes.edge._x", module, {"fes.edge._y", "fes.edge._z", "fes.edge", "fes.w", "fes"}
    )
    assert found == {"fes.edge._y", "fes.edge._z", "fes.w"}


def test_the_edge_runs_one_way() -> None:
    """_cli -> _serve -> _processes -> _runners -> _follower -> _application -> _batch."""
    graph = _graph()
    chain = [
        "fes.edge._cli", "fes.edge._serve", "fes.edge._processes", "fes.edge._runners",
        "fes.edge._follower", "fes.edge._application", "fes.edge._batch",
    ]
    for lower, higher in [(chain[j], chain[i]) for i in range(len(chain))
                          for j in range(i + 1, len(chain))]:
        assert higher not in graph[lower], f"{lower} imports {higher}"
