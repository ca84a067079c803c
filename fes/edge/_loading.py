"""Loading a system by name: ``"package.module:attribute"``, as ``fes run`` and workers do."""

from __future__ import annotations

import importlib
import os
from typing import Any

from fes.errors import ConfigurationError
from fes.system import System

__all__ = ["load_system"]


def _where(module_name: str, error: ImportError) -> str:
    """Advice when the package of ``module_name`` is nowhere on the path.

    Not for a module missing from a package that was found, nor for an
    import inside the user's module that failed: their message says it all.
    """
    top = module_name.partition(".")[0]
    if not isinstance(error, ModuleNotFoundError) or error.name != top:
        return ""
    return (
        f" (the current directory is {os.getcwd()}: run from the directory that holds "
        f"{top!r}, or add that directory to PYTHONPATH)"
    )


def load_system(spec: str) -> System:
    """The :class:`fes.System` named by ``"package.module:attribute"``."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(
            f"{spec!r} does not name a system: write MODULE:ATTRIBUTE, "
            "e.g. fes.examples.shop:system"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(
            f"cannot import module {module_name!r}: {error}{_where(module_name, error)}"
        ) from error
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ConfigurationError(
                f"module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not isinstance(value, System):
        kind = type(value).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise ConfigurationError(f"{spec!r} is {article} {kind} object, not a fes.System")
    return value
