"""A guard for tests that read hostile input: nothing may be imported or run meanwhile."""

from __future__ import annotations

import builtins
import contextlib
import importlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

__all__ = ["CANARY", "nothing_imported_or_run"]


@contextlib.contextmanager
def nothing_imported_or_run(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Within, in this thread: importing, eval, exec and os.system are recorded and refused.

    Other threads go on as usual.  Yields the list of refused calls, which
    should stay empty.
    """
    calls: list[str] = []
    me = threading.get_ident()

    def forbid(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != me:
                return original(*args, **kwargs)
            calls.append(f"{name}({args[0] if args else ''!r})")
            raise AssertionError(f"{name} was called inside the guard: {calls[-1]}")

        return refuse

    with monkeypatch.context() as patch:
        patch.setattr(
            importlib,
            "import_module",
            forbid("importlib.import_module", importlib.import_module),
        )
        patch.setattr(builtins, "eval", forbid("eval", builtins.eval))
        patch.setattr(builtins, "exec", forbid("exec", builtins.exec))
        patch.setattr(os, "system", forbid("os.system", os.system))
        # Last, as setattr itself imports; undone first.
        patch.setattr(builtins, "__import__", forbid("__import__", builtins.__import__))
        yield calls


#: A module that leaves a mark beside itself if it is imported, or x/X called.
CANARY = """
import pathlib

pathlib.Path(__file__).with_suffix(".imported").touch()


def x(*args, **kwargs):
    pathlib.Path(__file__).with_suffix(".called").touch()


X = x
"""
