"""Loading a system by name: ``"package.module:attribute"``, as ``fes run`` and workers do."""

from __future__ import annotations

import importlib
from typing import Any

from fes.errors import ConfigurationError
from fes.system import System

__all__ = ["load_system"]


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
        raise ConfigurationError(f"cannot import module {module_name!r}: {error}") from error
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
