"""The documentation's reference is complete and its navigation points at real pages.

The reference pages are generated from docstrings by mkdocstrings, which is
not needed to run these tests: they read the sources and the Markdown.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

import fes
import fes.edge
import fes.edge._application
import fes.edge.codec
import fes.edge.stores
import fes.system
import fes.testing
import fes.testing.stores

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EDGE = DOCS / "reference" / "edge.md"

# (package, the reference page that documents its public names)
PUBLIC = [
    (fes, DOCS / "reference" / "core.md"),
    (fes.system, DOCS / "reference" / "core.md"),
    (fes.testing, DOCS / "reference" / "testing.md"),
    (fes.testing.stores, DOCS / "reference" / "testing.md"),
    # a name fes.edge re-exports is documented once, as fes.edge.<name>
    (fes.edge, EDGE),
    (fes.edge.codec, EDGE),
    (fes.edge.stores, EDGE),
]
PUBLIC_NAMES = [(package, name) for package, _ in PUBLIC for name in package.__all__]


def _module_attribute_docstring(module: ModuleType, name: str) -> str | None:
    """The doc of a module-level assignment: ``#:`` lines above, or a string after.

    These are the two forms the reference shows for a value that is not a
    class or function (the ``#:`` form through docs/griffe_sphinx_markup.py).
    """
    source = inspect.getsource(module)
    lines = source.splitlines()
    body = ast.parse(source).body
    for index, statement in enumerate(body):
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, ast.AnnAssign):
            targets = [statement.target]
        else:
            continue
        if not any(isinstance(t, ast.Name) and t.id == name for t in targets):
            continue
        following = body[index + 1] if index + 1 < len(body) else None
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            return following.value.value
        comment: list[str] = []
        above = statement.lineno - 2
        while above >= 0 and lines[above].lstrip().startswith("#:"):
            comment.insert(0, lines[above].lstrip()[2:].strip())
            above -= 1
        return "\n".join(comment)
    return None


def _defining_module(package: ModuleType, name: str) -> ModuleType:
    """The fes module whose source assigns ``name`` at the top level."""
    value = getattr(package, name)
    for module_name in sorted(sys.modules):
        if module_name != package.__name__ and not module_name.startswith("fes."):
            continue
        module = sys.modules[module_name]
        if vars(module).get(name) is not value:
            continue
        if _module_attribute_docstring(module, name) is not None:
            return module
    raise AssertionError(f"{package.__name__}.{name} is not assigned at the top of any fes module")


def _docstring(package: ModuleType, name: str) -> str:
    value = getattr(package, name)
    if inspect.isclass(value):
        # a class does not inherit __doc__, but an empty one would show nothing
        return vars(value).get("__doc__") or ""
    if inspect.isfunction(value):
        return value.__doc__ or ""
    return _module_attribute_docstring(_defining_module(package, name), name) or ""


@pytest.mark.parametrize(
    ("package", "name"), PUBLIC_NAMES, ids=[f"{p.__name__}.{n}" for p, n in PUBLIC_NAMES]
)
def test_every_public_name_has_a_docstring(package: ModuleType, name: str) -> None:
    """Each name in a public ``__all__`` has its own docstring for the reference to show."""
    assert _docstring(package, name).strip(), (
        f"{package.__name__}.{name} has no docstring: give a class or function a docstring, "
        "and a value a '#:' comment on the line(s) above its assignment"
    )


@pytest.mark.parametrize(("package", "page"), PUBLIC, ids=[p.__name__ for p, _ in PUBLIC])
def test_every_public_name_is_on_its_reference_page(package: ModuleType, page: Path) -> None:
    """Each name in a public ``__all__`` has a ``::: package.name`` entry on its reference page.

    An entry under another path that names the same object by the same name
    (a re-export, such as ``fes.edge.Application``) documents it too.
    """
    listed = set(re.findall(r"^::: ([\w.]+)\s*$", page.read_text(encoding="utf-8"), re.M))
    missing = [n for n in package.__all__ if not _is_listed(package, n, listed)]
    assert not missing, f"{page.relative_to(ROOT)} does not document: " + ", ".join(
        f"::: {package.__name__}.{n}" for n in missing
    )


def _is_listed(package: ModuleType, name: str, listed: set[str]) -> bool:
    if f"{package.__name__}.{name}" in listed:
        return True
    value = getattr(package, name)
    return any(
        path.rsplit(".", 1)[-1] == name and _resolve(path) is value for path in listed
    )


def test_every_reference_entry_names_an_existing_object() -> None:
    """Each ``::: dotted.path`` on a reference page imports, so the build cannot miss it."""
    unknown = []
    for page in sorted((DOCS / "reference").glob("*.md")):
        for path in re.findall(r"^::: ([\w.]+)\s*$", page.read_text(encoding="utf-8"), re.M):
            if not _resolves(path):
                unknown.append(f"{page.name}: {path}")
    assert not unknown, f"reference entries that do not resolve: {unknown}"


_MISSING = object()


def _resolve(path: str) -> object:
    """The object a dotted path names, or ``_MISSING``."""
    parts = path.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            if not hasattr(obj, attribute):
                return _MISSING
            obj = getattr(obj, attribute)
        return obj
    return _MISSING


def _resolves(path: str) -> bool:
    return _resolve(path) is not _MISSING


def _nav_pages(config: str) -> list[str]:
    """The Markdown files the ``nav`` of mkdocs.yml lists (no YAML library needed)."""
    nav = config.split("\nnav:", 1)[1]
    nav = re.split(r"\n(?=\S)", nav, maxsplit=1)[0]  # up to the next top-level key
    return re.findall(r"([\w./-]+\.md)\s*$", nav, re.M)


def test_every_page_in_the_nav_exists() -> None:
    """Each page the mkdocs.yml navigation lists is a file under docs/."""
    pages = _nav_pages((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert "index.md" in pages
    missing = [page for page in pages if not (DOCS / page).is_file()]
    assert not missing, f"mkdocs.yml lists pages that do not exist: {missing}"


def test_every_page_under_docs_is_in_the_nav() -> None:
    """Each Markdown page under docs/ is reachable from the navigation."""
    listed = set(_nav_pages((ROOT / "mkdocs.yml").read_text(encoding="utf-8")))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert not pages - listed, f"pages missing from the nav in mkdocs.yml: {sorted(pages - listed)}"


def test_the_nav_reader_finds_nested_pages() -> None:
    """The nav reader sees pages at every depth and stops at the next top-level key."""
    config = (
        "site_name: x\nnav:\n  - Home: index.md\n  - Tutorial:\n"
        '      - "Part 1: a title": tutorial/part1.md\nplugins:\n  - other.md\n'
    )
    assert _nav_pages(config) == ["index.md", "tutorial/part1.md"]


def test_a_re_export_documents_the_name() -> None:
    """An entry under a re-exporting package counts; another name or a missing path does not."""
    assert _is_listed(fes.edge._application, "Application", {"fes.edge.Application"})
    assert _is_listed(fes.edge.stores, "Store", {"fes.edge.stores._base.Store"})
    assert not _is_listed(fes.edge._application, "Batch", {"fes.edge.Application"})
    assert not _is_listed(fes.edge._application, "Batch", {"fes.edge.nowhere.Batch"})
