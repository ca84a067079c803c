"""How values read in a simulation's outcomes and report: shortened, one line each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def _command_label(command: object) -> str:
    return command if isinstance(command, str) else str(getattr(command, "__name__", command))


def _shown(events: Sequence[Any], limit: int = 6, *, show: Callable[[Any], str] = repr) -> str:
    if not events:
        return "(none)"
    shown = "; ".join(map(show, events[:limit]))
    return shown + (f"; … ({len(events) - limit} more)" if len(events) > limit else "")


def _label(func: object) -> str:
    return str(getattr(func, "__name__", None) or getattr(func, "__qualname__", None) or func)


def _cut(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
