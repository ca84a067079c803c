"""A griffe extension that lets mkdocstrings show fes's Sphinx-flavoured docstrings.

fes documents module attributes (type aliases, constants) with ``#:`` comments
above the assignment, as attrs does, and refers to other objects with roles
such as ``:class:`Recorded```.  griffe reads neither, so this extension

- turns a block of ``#:`` comment lines right above a module or class
  attribute into that attribute's docstring, and
- rewrites each role as inline code, linked to the reference when it names
  an object that the reference documents under ``fes`` or ``fes.testing``, and
- turns each ``::`` literal block into a fenced Python code block.

mkdocs loads it through ``mkdocs.yml``; the test suite does not need it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

__all__ = ["SphinxMarkup"]

_ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):`~?([^`]+)`")
# The namespaces the reference pages render names under, most specific first.
_PUBLIC = ("fes.testing", "fes")


def _comment_above(lines: list[str], lineno: int) -> str | None:
    """The text of the ``#:`` comment lines that end just above line ``lineno``."""
    found: list[str] = []
    index = lineno - 2  # lines are 1-based; the comment ends on the line before
    while index >= 0:
        stripped = lines[index].strip()
        if not stripped.startswith("#:"):
            break
        found.append(stripped[2:].strip())
        index -= 1
    return "\n".join(reversed(found)) or None


class SphinxMarkup(griffe.Extension):
    """Read ``#:`` attribute comments and Sphinx roles in docstrings."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Once the package is loaded: fill attribute docstrings, then rewrite roles."""
        namespaces: dict[str, griffe.Object | griffe.Alias] = {"fes": pkg}
        if "testing" in pkg.members:
            namespaces["fes.testing"] = pkg.members["testing"]
        for obj in _walk(pkg):
            source = obj.filepath
            if obj.is_attribute and obj.docstring is None and isinstance(source, Path):
                text = _comment_above(list(obj.lines_collection[source]), obj.lineno or 1)
                if text:
                    obj.docstring = griffe.Docstring(text, lineno=obj.lineno, parent=obj)
            if obj.docstring is not None:
                text = _fence_literal_blocks(obj.docstring.value)
                obj.docstring.value = _ROLE.sub(
                    lambda match: _reference(namespaces, match.group(1)), text
                )


def _fence_literal_blocks(text: str) -> str:
    """Rewrite reST ``::`` literal blocks (indented, after a blank line) as fences."""
    lines = text.split("\n")
    out: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        starts_block = (
            line.rstrip().endswith("::")
            and index + 2 < len(lines)
            and not lines[index + 1].strip()
            and lines[index + 2].startswith("    ")
        )
        if not starts_block:
            out.append(line)
            index += 1
            continue
        intro = line.rstrip()[:-1]
        if intro.strip() != ":":
            out.append(intro)
        out.extend(["", "```python"])
        index += 2
        block: list[str] = []
        while index < len(lines) and (not lines[index].strip() or lines[index].startswith("    ")):
            block.append(lines[index][4:])
            index += 1
        while block and not block[-1].strip():
            block.pop()
        out.extend([*block, "```", ""])
    return "\n".join(out)


def _walk(obj: griffe.Object) -> list[griffe.Object]:
    """``obj`` and every object defined (not merely imported) inside it."""
    found = [obj]
    for member in obj.members.values():
        if not member.is_alias:
            found.extend(_walk(member))  # type: ignore[arg-type]
    return found


def _reference(namespaces: dict[str, Any], name: str) -> str:
    """Inline code for ``name``, linked when the reference documents it."""
    bare = name.removeprefix("fes.testing.").removeprefix("fes.")
    head = bare.split(".", 1)[0]
    for namespace in _PUBLIC:
        package = namespaces.get(namespace)
        if package is not None and head in (package.exports or ()):
            return f"[`{name}`][{namespace}.{bare}]"
    return f"`{name}`"
