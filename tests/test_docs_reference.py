"""The documentation's reference documents exactly the public names, and its navigation works.

The public modules are derived, not listed: every module under ``fes`` whose
dotted name has no component starting with ``_``.  Each defines ``__all__``;
each name there has a docstring and an entry on its package's reference
page; and the reference documents nothing else.  The pages are generated
from docstrings by mkdocstrings, which is not needed to run these tests: they
read the sources and the Markdown.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import sys
import types
from pathlib import Path
from types import ModuleType

import pytest

import fes
import fes.edge
import fes.testing

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"

# fes.examples holds the example domains (dogs, bank, shop) that the tutorials
# import and `fes demo` runs: shipped so that both work from an installed
# package, but they are material to read, not API, and the reference leaves
# them out.
NOT_API = "fes.examples"

# The edge's public modules once its implementation modules are renamed to
# private ones (design.md section 2).  Until that rename is merged, the edge
# still has other public modules, which neither have a page of their own nor
# will keep their names; the checks on the edge report them as expected
# failures then, and run strictly by themselves once it is merged.
EDGE_PUBLIC = {"fes.edge", "fes.edge.codec", "fes.edge.stores"}


def _is_public(name: str) -> bool:
    """Whether the module ``name`` is API: no private component, not an example."""
    if name == NOT_API or name.startswith(NOT_API + "."):
        return False
    return not any(part.startswith("_") for part in name.split("."))


def _public_modules() -> list[ModuleType]:
    """Every public module of fes, imported, in name order."""
    names = [fes.__name__]
    # walk_packages imports each package to look inside it; a private one is
    # walked too, since nothing public can be found below it anyway
    for info in pkgutil.walk_packages(fes.__path__, fes.__name__ + "."):
        if _is_public(info.name):
            names.append(info.name)
    return [importlib.import_module(name) for name in sorted(names)]


def _page(module_name: str) -> Path:
    """The reference page that documents a public module's names."""
    if module_name == "fes.testing" or module_name.startswith("fes.testing."):
        return REFERENCE / "testing.md"
    if module_name == "fes.edge" or module_name.startswith("fes.edge."):
        return REFERENCE / "edge.md"
    return REFERENCE / "core.md"


PUBLIC = _public_modules()
PUBLIC_NAMES = [(module, name) for module in PUBLIC for name in getattr(module, "__all__", [])]
def _by_module(cases: list[ModuleType]) -> list[object]:
    return [pytest.param(m, id=m.__name__) for m in cases]


def _entries(text: str) -> dict[str, bool]:
    """Each ``::: path`` entry of a page, and whether it shows the members of a module.

    An entry for a module shows the members in its ``__all__`` unless its
    options say ``members: false`` (then it shows the module's docstring).
    """
    entries: dict[str, bool] = {}
    path = None
    for line in text.splitlines():
        found = re.match(r"^::: ([\w.]+)\s*$", line)
        if found:
            path = found.group(1)
            entries[path] = True
        elif path is not None and line.startswith(" "):
            if re.match(r"^\s+members:\s*false\s*$", line):
                entries[path] = False
        else:
            path = None
    return entries


def _page_entries(page: Path) -> dict[str, bool]:
    return _entries(page.read_text(encoding="utf-8"))


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


def _without_all(modules: list[ModuleType]) -> list[str]:
    """The modules among ``modules`` that define no ``__all__``."""
    return [m.__name__ for m in modules if not isinstance(getattr(m, "__all__", None), list)]


def _is_listed(module: ModuleType, name: str, entries: dict[str, bool]) -> bool:
    """Whether ``module.name`` is documented by one of a page's entries.

    An entry under another path that names the same object by the same name
    (a re-export, such as ``fes.edge.Application``) documents it too, and so
    does an entry for a module that shows its members and exports it.
    """
    if f"{module.__name__}.{name}" in entries:
        return True
    value = getattr(module, name)
    for path, members in entries.items():
        target = _resolve(path)
        if path.rsplit(".", 1)[-1] == name and target is value:
            return True
        if (
            members
            and isinstance(target, ModuleType)
            and name in getattr(target, "__all__", ())
            and getattr(target, name) is value
        ):
            return True
    return False


def _undocumented(module: ModuleType, entries: dict[str, bool]) -> list[str]:
    """The names in ``module.__all__`` that none of a page's entries documents."""
    return [name for name in module.__all__ if not _is_listed(module, name, entries)]


def _leaks(module: ModuleType) -> list[str]:
    """The names in ``module.__all__`` that are private or name a module."""
    return [
        name
        for name in module.__all__
        if name.startswith("_") or isinstance(getattr(module, name, None), ModuleType)
    ]


def _private_entries(entries: dict[str, bool]) -> list[str]:
    """The entries whose path goes through a private module or names a private object."""
    return [path for path in entries if any(part.startswith("_") for part in path.split("."))]


def _unpublished_entries(entries: dict[str, bool], modules: list[ModuleType]) -> list[str]:
    """The entries that name neither a public module nor a name in a public ``__all__``."""
    public = {m.__name__: m for m in modules}
    unpublished = []
    for path in entries:
        owner, _, name = path.rpartition(".")
        if path in public or (owner in public and name in getattr(public[owner], "__all__", ())):
            continue
        unpublished.append(path)
    return unpublished


PAGES = [REFERENCE / "core.md", REFERENCE / "testing.md", REFERENCE / "edge.md"]
BY_PAGE = [pytest.param(page, id=page.name) for page in PAGES]


def test_every_public_module_defines_all() -> None:
    """Each public module says what it exports, so the checks below have a list to read."""
    assert not _without_all(PUBLIC), "public modules without __all__: " + ", ".join(
        _without_all(PUBLIC)
    )


@pytest.mark.parametrize(
    ("module", "name"),
    [
        pytest.param(m, n, id=f"{m.__name__}.{n}")
        for m, n in PUBLIC_NAMES
    ],
)
def test_every_public_name_has_a_docstring(module: ModuleType, name: str) -> None:
    """Each name in a public ``__all__`` has its own docstring for the reference to show."""
    assert _docstring(module, name).strip(), (
        f"{module.__name__}.{name} has no docstring: give a class or function a docstring, "
        "and a value a '#:' comment on the line(s) above its assignment"
    )


@pytest.mark.parametrize("module", _by_module(PUBLIC))
def test_every_public_name_is_on_its_reference_page(module: ModuleType) -> None:
    """Each name in a public ``__all__`` has a ``::: `` entry on its package's reference page."""
    page = _page(module.__name__)
    missing = _undocumented(module, _page_entries(page))
    assert not missing, f"{page.relative_to(ROOT)} does not document: " + ", ".join(
        f"::: {module.__name__}.{n}" for n in missing
    )


@pytest.mark.parametrize("module", _by_module(PUBLIC))
def test_no_public_all_leaks_a_private_module(module: ModuleType) -> None:
    """A public ``__all__`` lists neither a private name nor a module object."""
    assert not _leaks(module), f"{module.__name__}.__all__ lists {_leaks(module)}"


@pytest.mark.parametrize("page", BY_PAGE)
def test_every_reference_entry_uses_a_public_path(page: Path) -> None:
    """No ``::: `` entry goes through a private module: users import what they read."""
    private = _private_entries(_page_entries(page))
    assert not private, f"{page.name} documents private paths: {private}"


@pytest.mark.parametrize("page", BY_PAGE)
def test_the_reference_documents_only_public_names(page: Path) -> None:
    """Each ``::: `` entry is a public module or a name in a public module's ``__all__``."""
    unpublished = _unpublished_entries(_page_entries(page), PUBLIC)
    assert not unpublished, f"{page.name} documents names that are not public: {unpublished}"


def test_the_edge_keeps_its_public_modules() -> None:
    """The edge's three public modules stay public, whatever moves behind them."""
    assert {m.__name__ for m in PUBLIC} >= EDGE_PUBLIC


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


def _planted(name: str, **attributes: object) -> ModuleType:
    module = types.ModuleType(name)
    vars(module).update(attributes)
    return module


def test_a_module_is_public_by_its_name() -> None:
    """A private component or the examples make a module non-public; fes.errors is public."""
    assert _is_public("fes.edge.codec")
    assert not _is_public("fes.edge.stores._postgres")
    assert not _is_public("fes.edge.stores._postgres._store")
    assert not _is_public("fes._shapes")
    assert not _is_public("fes.examples")
    assert not _is_public("fes.examples.dogs")
    assert _is_public("fes.examplesque")
    names = {m.__name__ for m in PUBLIC}
    assert {"fes", "fes.errors", "fes.testing.stores", "fes.edge.stores"} <= names
    assert not any(n.startswith(("fes.examples", "fes._", "fes.edge._")) for n in names)


def test_a_module_without_all_is_reported() -> None:
    """The __all__ check fails for a module that defines none."""
    assert _without_all([_planted("fes.planted"), fes]) == ["fes.planted"]


def test_an_undocumented_or_docless_name_is_reported() -> None:
    """A name with no entry, or no docstring, fails its check; a re-export's entry counts."""

    def helper() -> None:
        pass

    planted = _planted("fes.planted", __all__=["helper"], helper=helper)
    assert _undocumented(planted, {}) == ["helper"]
    assert _undocumented(planted, {"fes.planted.helper": True}) == []
    assert not _docstring(planted, "helper")
    assert _is_listed(fes.edge, "Application", {"fes.edge.Application": True})
    assert not _is_listed(fes.edge, "Batch", {"fes.edge.Application": True})
    assert not _is_listed(fes.edge, "Batch", {"fes.edge.nowhere.Batch": True})
    assert _is_listed(fes, "FesError", {"fes.errors.FesError": True})


def test_a_module_entry_documents_its_members_unless_told_not_to() -> None:
    """``::: module`` counts for the names it exports; with ``members: false`` it does not."""
    text = (
        "::: fes.testing.laws\n    options:\n      members: false\n"
        "      heading_level: 3\n\n::: fes.testing.strategies\n"
    )
    assert _entries(text) == {"fes.testing.laws": False, "fes.testing.strategies": True}
    assert _is_listed(fes.testing, "histories", {"fes.testing.strategies": True})
    assert not _is_listed(fes.testing, "histories", {"fes.testing.strategies": False})


def test_a_private_module_in_all_is_reported() -> None:
    """An ``__all__`` naming a private submodule or a module object fails the leak check."""
    planted = _planted(
        "fes.planted", __all__=["_postgres", "stores", "View"], stores=fes.edge, View=fes.View
    )
    assert _leaks(planted) == ["_postgres", "stores"]


def test_a_private_path_on_a_page_is_reported() -> None:
    """An entry through a private module fails the public-path check."""
    entries = {
        "fes.edge.stores._postgres.PostgresDatabase": True,
        "fes.edge._runners.SyncRunner": True,
        "fes.edge.SyncRunner": True,
    }
    assert _private_entries(entries) == [
        "fes.edge.stores._postgres.PostgresDatabase",
        "fes.edge._runners.SyncRunner",
    ]


def test_an_entry_for_a_name_that_is_not_public_is_reported() -> None:
    """An entry for a name outside every public ``__all__`` fails; a public module's may stay."""
    entries = {
        "fes.errors": False,
        "fes.system.partition_of": True,
        "fes.aggregates.enum": True,
        "fes.examples.dogs": True,
        "fes.examples.dogs.dogs": True,
    }
    assert _unpublished_entries(entries, PUBLIC) == [
        "fes.aggregates.enum",
        "fes.examples.dogs",
        "fes.examples.dogs.dogs",
    ]
